//! Overlay addresses: bootstrap nodes, listen addresses, the printed form with a peer id.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The default listen addresses: a free TCP and a free QUIC port on every interface.
pub fn default_listen() -> Vec<Multiaddr> {
    vec![
        Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
            .with(Protocol::Tcp(0)),
        Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
            .with(Protocol::Udp(0))
            .with(Protocol::QuicV1),
    ]
}

/// A node to join the overlay through: its address and, if given, its peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The address without the `/p2p/<peer id>` suffix.
    pub addr: Multiaddr,
    /// The peer id from the `/p2p/` suffix; without it the node is dialled by address alone
    /// and learnt from the connection.
    pub peer: Option<PeerId>,
}

impl FromStr for Bootstrap {
    type Err = AddrError;

    /// Parses `/ip4/1.2.3.4/tcp/4001[/p2p/<peer id>]` (ip6, dns, dns4, dns6 and
    /// `/udp/PORT/quic-v1` work too).
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let full: Multiaddr =
            s.trim()
                .parse()
                .map_err(|e: libp2p::multiaddr::Error| AddrError::Syntax {
                    input: s.to_owned(),
                    reason: e.to_string(),
                })?;
        let mut addr = full.clone();
        let peer = match addr.pop() {
            Some(Protocol::P2p(peer)) => Some(peer),
            Some(other) => {
                addr.push(other);
                None
            }
            None => None,
        };
        // A relayed address (`…/p2p/<relay>/p2p-circuit`) names the relay in the middle.
        if !is_relayed(&addr) {
            if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                return Err(AddrError::P2pNotLast(s.to_owned()));
            }
            if transport_of(&addr).is_none() {
                return Err(AddrError::NoTransport(s.to_owned()));
            }
        }
        Ok(Bootstrap { addr, peer })
    }
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{}", with_peer_id(self.addr.clone(), peer)),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A bootstrap address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not a multiaddr at all.
    #[error(
        "invalid bootstrap address {input:?}: {reason}; expected a multiaddr like \
         /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
    )]
    Syntax {
        /// What was given.
        input: String,
        /// What the multiaddr parser said.
        reason: String,
    },
    /// No IP/DNS host with a TCP or QUIC port.
    #[error(
        "invalid bootstrap address {0:?}: it needs a host and a port, like /ip4/ADDR/tcp/PORT, \
         /dns4/HOST/tcp/PORT or /ip4/ADDR/udp/PORT/quic-v1"
    )]
    NoTransport(String),
    /// A `/p2p/` component in the middle.
    #[error("invalid bootstrap address {0:?}: /p2p/<peer id> may only come last")]
    P2pNotLast(String),
}

/// `addr` ending in `/p2p/<peer>`: the form other nodes pass to `--bootstrap`.
pub fn with_peer_id(mut addr: Multiaddr, peer: PeerId) -> Multiaddr {
    if !matches!(addr.iter().last(), Some(Protocol::P2p(p)) if p == peer) {
        addr.push(Protocol::P2p(peer));
    }
    addr
}

/// The transports treecast speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Quic,
}

/// Which transport `addr` (host then port, nothing else) uses, if one we speak.
pub(crate) fn transport_of(addr: &Multiaddr) -> Option<Transport> {
    let mut it = addr.iter();
    match it.next()? {
        Protocol::Ip4(_)
        | Protocol::Ip6(_)
        | Protocol::Dns(_)
        | Protocol::Dns4(_)
        | Protocol::Dns6(_) => {}
        _ => return None,
    }
    let t = match (it.next()?, it.next()) {
        (Protocol::Tcp(_), None) => return Some(Transport::Tcp),
        (Protocol::Udp(_), Some(Protocol::QuicV1)) => Transport::Quic,
        _ => return None,
    };
    it.next().is_none().then_some(t)
}

/// `…/p2p/<relay>/p2p-circuit`: reached through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn bootstrap_with_and_without_peer_id() {
        let b: Bootstrap = format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}")
            .parse()
            .expect("valid");
        assert_eq!(b.addr.to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(b.peer.map(|p| p.to_string()), Some(PEER.to_owned()));
        assert_eq!(b.to_string(), format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"));
        let b: Bootstrap = "/dns4/example.org/udp/4001/quic-v1".parse().expect("valid");
        assert_eq!(b.peer, None);
    }

    #[test]
    fn malformed_bootstrap_addresses_say_why() {
        let e = "127.0.0.1:4001"
            .parse::<Bootstrap>()
            .expect_err("not a multiaddr");
        assert!(matches!(e, AddrError::Syntax { .. }));
        assert!(e.to_string().contains("/ip4/203.0.113.7/tcp/4001"), "{e}");
        let e = "/ip4/127.0.0.1".parse::<Bootstrap>().expect_err("no port");
        assert_eq!(e, AddrError::NoTransport("/ip4/127.0.0.1".into()));
        let e = format!("/p2p/{PEER}/ip4/1.2.3.4/tcp/1")
            .parse::<Bootstrap>()
            .expect_err("p2p first");
        assert!(matches!(e, AddrError::P2pNotLast(_)));
        let e = "/ip4/1.2.3.4/tcp/1/p2p/notapeer"
            .parse::<Bootstrap>()
            .expect_err("bad peer id");
        assert!(matches!(e, AddrError::Syntax { .. }));
    }
}
