//! Listening through relays: configured circuits and automatic reservations when private.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info, warn};

use super::EventLoop;
use crate::gossip::addr::with_peer_id;

/// Relays reserved on when not publicly reachable, and relay candidates remembered.
pub(super) const RELAYS: usize = 2;
pub(super) const MAX_RELAY_CANDIDATES: usize = 16;

impl EventLoop {
    /// Starts the configured circuit listeners through `relay`, now that we are connected.
    pub(super) fn listen_through(&mut self, relay: PeerId) {
        let (ready, waiting) = std::mem::take(&mut self.circuits)
            .into_iter()
            .partition(|(r, _)| *r == relay);
        self.circuits = waiting;
        for (_, circuit) in ready {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    info!(%circuit, "listening through relay");
                    self.reserved.insert(relay, listener);
                }
                Err(e) => warn!(%circuit, error = %e, "cannot listen through relay"),
            }
        }
    }

    /// When not publicly reachable, listens through up to [`RELAYS`] relays.
    pub(super) fn reserve_relays(&mut self) {
        if !self.auto_relay || !self.private {
            return;
        }
        let candidates: Vec<(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(peer, _)| !self.reserved.contains_key(peer))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (relay, addr) in candidates {
            if self.reserved.len() >= RELAYS {
                break;
            }
            let circuit = with_peer_id(addr, relay).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    info!(%circuit, "listening through relay");
                    self.reserved.insert(relay, listener);
                }
                Err(e) => debug!(%circuit, error = %e, "cannot listen through relay"),
            }
        }
    }
}

/// The relay of a relayed address and the address to reach it: the part before
/// `/p2p/<relay>/p2p-circuit`.
pub(super) fn relay_of(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut relay_addr = Multiaddr::empty();
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return relay.map(|r| (r, relay_addr)),
            Protocol::P2p(peer) => relay = Some(peer),
            other => {
                if relay.is_some() {
                    return None;
                }
                relay_addr.push(other);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::addr::is_relayed;
    use crate::gossip::event_loop::usable;

    #[test]
    fn relay_of_splits_circuit_addresses() {
        let relay = PeerId::random();
        let addr: Multiaddr = format!("/ip4/192.0.2.1/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .expect("multiaddr");
        let (peer, at) = relay_of(&addr).expect("a relayed address");
        assert_eq!(peer, relay);
        assert_eq!(at.to_string(), "/ip4/192.0.2.1/tcp/4001");
        assert!(is_relayed(&addr));
        let nameless: Multiaddr = "/ip4/192.0.2.1/tcp/4001/p2p-circuit".parse().expect("ok");
        assert_eq!(relay_of(&nameless), None);
        let direct: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().expect("multiaddr");
        assert!(!is_relayed(&direct) && relay_of(&direct).is_none());
        assert!(!usable(&"/ip4/0.0.0.0/tcp/1".parse().expect("multiaddr")));
    }
}
