//! Keeping the overlay sparse but connected.
//!
//! Sparse: gossipsub keeps a connection open for as long as its streams
//! are (it does not mark them `ignore_for_keep_alive`), so every peer a DHT walk, a sync or a
//! bootstrap ever reached would stay connected, and a swarm of N nodes would hold N^2/2
//! connections. Every [`PRUNE_EVERY`], beyond `max_peers` connected peers, the ones nothing
//! needs are closed: not in a gossipsub mesh of ours, not a protected node (the driver names
//! its tree neighbours), not a relay we listen through, not carrying a direct message, not
//! used for one within [`KEEP_DIRECT`], and not younger than [`MIN_AGE`]; at most a few per
//! round.
//!
//! Connected: nodes other than the DHT servers are DHT clients, so no DHT walk spreads their
//! connections; a node that joined through one bootstrap node would hang off it alone, and a
//! bootstrap node whose gossipsub mesh is full only gossips to it lazily. So every
//! [`PRUNE_EVERY`] (and after a sync) a node with fewer than [`MIN_PEERS`] connections dials
//! a few peers it knows the addresses of from their records' envelopes, picked at random: the
//! overlay becomes a random graph of degree about [`MIN_PEERS`], on which gossipsub builds its
//! meshes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::debug;

use super::EventLoop;
use crate::gossip::id::node_id;

/// How often the connections are counted.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(2);
/// A peer used for a direct message is kept this long after.
pub(super) const KEEP_DIRECT: Duration = Duration::from_secs(30);
/// A connection younger than this is never closed: a peer that dials again at once (a DHT
/// walk, a bootstrap) is not handshaken and dropped in a loop.
pub(super) const MIN_AGE: Duration = Duration::from_secs(10);
/// At most this many connections are closed per round, so the meshes adjust gradually.
const MAX_PER_ROUND: usize = 8;
/// Fewer connected peers than this: dial known ones. Above gossipsub's mesh target (3), so
/// a mesh can form from our own dials, and well below the peer bound.
pub(super) const MIN_PEERS: usize = 6;
/// At most this many such dials per round.
const DIALS_PER_ROUND: usize = 3;
/// A protected node is dialled ahead of need at most this often. The node we protect need
/// not protect us, and may close our connection as one it does not need: dialling it again
/// at every `Protect` (every 2 s) made an open-and-close cycle, about 3 connections a second
/// in a quiet 120-relay swarm, each a handshake and an identify exchange.
const PROTECT_REDIAL: Duration = Duration::from_secs(60);

impl EventLoop {
    /// Notes that `peer` carried a direct message now.
    pub(super) fn note_direct(&mut self, peer: PeerId) {
        self.direct_at.insert(peer, Instant::now());
    }

    /// Dials peers known from their records while we have fewer than [`MIN_PEERS`].
    pub(super) fn tend(&mut self) {
        let connected = self.swarm.connected_peers().count();
        if connected >= MIN_PEERS {
            return;
        }
        let candidates: Vec<(&PeerId, &Vec<Multiaddr>)> = self
            .addrs
            .iter()
            .filter(|(p, _)| **p != self.local && !self.swarm.is_connected(p))
            .collect();
        if candidates.is_empty() {
            return;
        }
        // The map's order is its own random hash order; a rotating start spreads the picks.
        self.tend_round = self.tend_round.wrapping_add(1);
        let start = (self.tend_round as usize).wrapping_mul(7919) % candidates.len();
        let picks: Vec<(PeerId, Vec<Multiaddr>)> = candidates
            .iter()
            .cycle()
            .skip(start)
            .take(
                (MIN_PEERS - connected)
                    .min(DIALS_PER_ROUND)
                    .min(candidates.len()),
            )
            .map(|(p, a)| (**p, (*a).clone()))
            .collect();
        for (peer, addrs) in picks {
            debug!(%peer, "dialling a known peer to stay connected");
            if self.dial_known(peer, addrs) {
                self.stats.tended += 1;
            }
        }
    }

    /// Dials `peer` at `addrs` unless connected or dialling already; whether a dial started.
    fn dial_known(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .build();
        self.swarm.dial(opts).is_ok()
    }

    /// Dials the protected nodes (tree neighbours and the repair plan's first target) we are
    /// not connected to, where their records gave addresses: when the parent dies, the attach
    /// request to the backup parent then travels over a connection that is already up,
    /// instead of waiting for a TCP and noise handshake on a machine busy with the repair.
    pub(super) fn connect_protected(&mut self) {
        let picks: Vec<(PeerId, Vec<Multiaddr>)> = self
            .protected
            .iter()
            .filter_map(|n| self.routes.get(n).copied())
            .filter(|p| *p != self.local && !self.swarm.is_connected(p))
            .filter(|p| {
                self.protect_dialled
                    .get(p)
                    .is_none_or(|t| t.elapsed() >= PROTECT_REDIAL)
            })
            .filter_map(|p| self.addrs.get(&p).map(|a| (p, a.clone())))
            .collect();
        for (peer, addrs) in picks {
            debug!(%peer, "dialling a tree neighbour ahead of need");
            self.protect_dialled.insert(peer, Instant::now());
            self.dial_known(peer, addrs);
        }
    }

    /// Closes the connections nothing needs, beyond `max_peers`.
    pub(super) fn prune(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        if connected.len() <= self.max_peers {
            return;
        }
        let mut keep: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        keep.extend(self.in_flight.values().map(|o| o.peer()));
        keep.extend(self.lookups.values().map(|(p, _)| *p));
        keep.extend(self.reserved.keys().copied());
        let now = Instant::now();
        let spare: Vec<PeerId> = connected
            .iter()
            .copied()
            .filter(|p| {
                !keep.contains(p)
                    && !self.protected.contains(&node_id(p))
                    && self
                        .direct_at
                        .get(p)
                        .is_none_or(|t| now.duration_since(*t) > KEEP_DIRECT)
                    && self
                        .connected_since
                        .get(p)
                        .is_none_or(|t| now.duration_since(*t) > MIN_AGE)
            })
            .collect();
        let excess = (connected.len() - self.max_peers).min(MAX_PER_ROUND);
        for peer in spare.into_iter().take(excess) {
            debug!(%peer, "closing a connection nothing needs");
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                self.stats.pruned += 1;
            }
        }
    }
}
