//! Direct messages (`/treecast/tree/1`): sending, the DHT lookup fallback, receiving.

use libp2p::request_response::{self, OutboundFailure};
use libp2p::{PeerId, kad};
use tracing::debug;
use treecast_tree::NodeId;

use super::EventLoop;
use crate::gossip::Event;
use crate::gossip::client::ClientError;
use crate::gossip::id::node_id;
use crate::gossip::protocol::{Ack, Body, Request};

type Reply = tokio::sync::oneshot::Sender<Result<Ack, ClientError>>;

/// Most direct messages awaiting an acknowledgement or a DHT lookup at once; beyond, `send`
/// fails with [`ClientError::Busy`].
const MAX_IN_FLIGHT: usize = 1024;

/// A direct message on its way.
pub(super) struct Outbound {
    peer: PeerId,
    request: Request,
    reply: Reply,
    /// Whether a DHT lookup was already tried after a dial failure.
    looked_up: bool,
}

impl Outbound {
    /// The receiver.
    pub(super) fn peer(&self) -> PeerId {
        self.peer
    }
}

impl EventLoop {
    pub(super) fn send(&mut self, to: NodeId, request: Request, reply: Reply) {
        if self.in_flight.len() + self.lookups.len() >= MAX_IN_FLIGHT {
            let _ = reply.send(Err(ClientError::Busy));
            return;
        }
        let Some(&peer) = self.routes.get(&to) else {
            let _ = reply.send(Err(ClientError::UnknownNode(to)));
            return;
        };
        self.send_request(Outbound {
            peer,
            request,
            reply,
            looked_up: false,
        });
    }

    pub(super) fn send_request(&mut self, out: Outbound) {
        self.note_direct(out.peer);
        let id = self.swarm.behaviour_mut().tree.send_request_with_addresses(
            &out.peer,
            out.request.clone(),
            self.addrs.get(&out.peer).cloned().unwrap_or_default(),
        );
        self.in_flight.insert(id, out);
    }

    pub(super) fn on_tree(&mut self, event: request_response::Event<Request, Ack>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.note_direct(peer);
                let ack = if !self.streams.values().any(|s| *s == request.stream) {
                    Ack::UnknownStream
                } else if request.body == Body::Probe {
                    Ack::Alive {
                        receiving: self.receiving.load(std::sync::atomic::Ordering::Relaxed),
                    }
                } else if request.body == Body::Sync {
                    self.sync_answer(&request.stream)
                } else if let Some(from) = self.sender(peer, request.from) {
                    let event = Event::Message {
                        from,
                        to: request.to.unwrap_or_else(|| node_id(&self.local)),
                        peer,
                        stream: request.stream,
                        body: request.body,
                    };
                    match self.events.try_send(event) {
                        Ok(()) => {
                            self.stats.messages += 1;
                            Ack::Delivered
                        }
                        Err(_) => {
                            self.stats.messages_busy += 1;
                            Ack::Busy
                        }
                    }
                } else {
                    debug!(%peer, from = ?request.from, "refused: speaks for a node another peer publishes");
                    self.stats.messages_forged += 1;
                    Ack::NotYours
                };
                // Fails only when the connection closed meanwhile; the sender sees that.
                let _ = self.swarm.behaviour_mut().tree.send_response(channel, ack);
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(stream) = self.syncs.remove(&request_id) {
                    if let Ack::Records { records } = response {
                        self.on_sync(stream, records);
                    }
                    return;
                }
                if let Some(out) = self.in_flight.remove(&request_id) {
                    let result = match response {
                        ack @ (Ack::Delivered | Ack::Alive { .. } | Ack::Records { .. }) => Ok(ack),
                        Ack::Busy => Err(ClientError::Busy),
                        Ack::NotYours => Err(ClientError::Failed(
                            "the receiver knows another peer for that node".into(),
                        )),
                        Ack::UnknownStream => Err(ClientError::UnknownStream),
                    };
                    let _ = out.reply.send(result);
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if self.syncs.remove(&request_id).is_some() {
                    debug!(%error, "sync request failed");
                    return;
                }
                let Some(out) = self.in_flight.remove(&request_id) else {
                    return;
                };
                // No usable address known: ask the DHT, then try once more. A dial to the
                // addresses the peer's own records gave failed: it is gone or unreachable,
                // and a DHT walk would dial a score of peers (each dial a handshake, an
                // identify exchange and a connection pruned again) to learn the same addresses.
                let known = self.addrs.get(&out.peer).is_some_and(|a| !a.is_empty());
                if matches!(error, OutboundFailure::DialFailure) && !out.looked_up && !known {
                    let peer = out.peer;
                    debug!(%peer, "no address for a direct message; looking it up");
                    self.stats.lookups += 1;
                    let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.lookups.insert(query, (peer, vec![out]));
                } else {
                    let _ = out.reply.send(Err(ClientError::Failed(error.to_string())));
                }
            }
            _ => {}
        }
    }

    /// Who a direct message from `peer` is from: the peer's own node, or the browser it
    /// claims to speak for if no other peer publishes that node's records. The first peer to
    /// speak for an unknown node becomes its route, so a second claimant is refused.
    fn sender(&mut self, peer: PeerId, claimed: Option<NodeId>) -> Option<NodeId> {
        let own = node_id(&peer);
        let Some(claimed) = claimed.filter(|&c| c != own) else {
            return Some(own);
        };
        match self.routes.get(&claimed) {
            Some(&p) if p == peer => Some(claimed),
            Some(_) => None,
            None => {
                self.routes.insert(claimed, peer);
                Some(claimed)
            }
        }
    }

    pub(super) fn on_lookup(&mut self, query: kad::QueryId, peers: Vec<kad::PeerInfo>, last: bool) {
        let Some((target, _)) = self.lookups.get(&query) else {
            return;
        };
        let found = peers.into_iter().find(|p| p.peer_id == *target);
        if found.is_none() && !last {
            return;
        }
        let Some((peer, waiting)) = self.lookups.remove(&query) else {
            return;
        };
        let addrs = found.map(|p| p.addrs).unwrap_or_default();
        for mut out in waiting {
            out.looked_up = true;
            if addrs.is_empty() && !self.swarm.is_connected(&peer) {
                let _ = out.reply.send(Err(ClientError::Failed(format!(
                    "no address found for peer {peer}"
                ))));
                continue;
            }
            let id = self.swarm.behaviour_mut().tree.send_request_with_addresses(
                &peer,
                out.request.clone(),
                addrs.clone(),
            );
            self.in_flight.insert(id, out);
        }
    }
}
