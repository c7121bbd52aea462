//! The signal server as a gossip peer: the bridge between the hub and the libp2p overlay the
//! native nodes share (`treecast_node::gossip`).
//!
//! ```text
//!  gossip events --Record--------------------> Hub::record
//!                --Message{tree}-------------> Hub::native_message   (to: one of our browsers)
//!                --Message{offer, answer}----> Hub::native_signal
//!  Hub outbound  --Follow(stream)------------> Client::subscribe
//!                --Publish(record)-----------> Client::publish        (sealed by this server)
//!                --Message / Signal----------> one lane per (browser, native) pair
//!                                              --> Client::send_as (in order, bounded)
//! ```
//!
//! Browsers trickle ICE candidates; native nodes put theirs in the SDP and ignore trickled ones
//! (the watch page sends a complete offer to a native parent). Candidates still cross the
//! overlay, because the "native" side of a message may be a browser of another signal server:
//! several servers share one stream's tree. Native nodes probe their parent when its media stops: the event loop
//! answers for our browsers that they receive, so a native child of a vanished browser gives up
//! on it after the driver's silence limit.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use treecast_node::gossip::{Body, Client, Event};
use treecast_tree::{NodeId, StreamId};

use crate::broadcast::Signal;
use crate::hub::{Hub, Outbound};
use crate::protocol::IceCandidate;

/// Messages queued for one (browser, native node) pair; beyond, new ones are dropped.
const LANE_QUEUE: usize = 32;
/// Pairs with a live lane at most; beyond, messages for a new pair are dropped.
const MAX_LANES: usize = 4096;
/// A lane with nothing to send for this long ends (a new message starts a new one).
const LANE_IDLE: Duration = Duration::from_secs(30);
/// Offer sessions remembered (native child -> browser parent), to answer with the right one.
const MAX_SESSIONS: usize = 4096;

type Lane = mpsc::Sender<(StreamId, Body)>;

/// Runs the bridge until the overlay's events or the hub's outbound queue end.
pub async fn bridge(
    client: Client,
    mut events: mpsc::Receiver<Event>,
    hub: Hub,
    mut outbound: mpsc::Receiver<Outbound>,
) {
    // Browsers receive on their own; this server answers probes for them accordingly.
    client.set_receiving(true);
    let mut bridge = Bridge {
        client,
        hub,
        lanes: HashMap::new(),
        sessions: HashMap::new(),
        next_session: 1,
    };
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => bridge.event(ev).await,
                None => break,
            },
            out = outbound.recv() => match out {
                Some(o) => bridge.outbound(o).await,
                None => break,
            },
        }
    }
    tracing::debug!("overlay bridge stopped");
}

struct Bridge {
    client: Client,
    hub: Hub,
    lanes: HashMap<(NodeId, NodeId), Lane>,
    /// The session of the last offer a native child made to one of our browsers.
    sessions: HashMap<(NodeId, NodeId), u64>,
    next_session: u64,
}

impl Bridge {
    async fn event(&mut self, ev: Event) {
        match ev {
            Event::Record { record, .. } => self.hub.record(record).await,
            Event::Message {
                from,
                to,
                stream,
                body,
                ..
            } => match body {
                Body::Tree { msg } => self.hub.native_message(stream, from, to, msg).await,
                Body::Offer { session, sdp, .. } => {
                    if self.sessions.len() >= MAX_SESSIONS {
                        self.sessions.clear();
                    }
                    self.sessions.insert((from, to), session);
                    self.hub
                        .native_signal(stream, from, to, Signal::Offer(sdp))
                        .await;
                }
                Body::Answer { sdp, .. } => {
                    self.hub
                        .native_signal(stream, from, to, Signal::Answer(sdp))
                        .await;
                }
                Body::Refused { reason, .. } => {
                    // The browser's connect timeout then takes it elsewhere.
                    tracing::info!(native = %from, browser = %to, %reason, "a native parent refused a browser's offer");
                }
                Body::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                } => {
                    let c = IceCandidate {
                        candidate,
                        sdp_mid,
                        sdp_m_line_index,
                    };
                    self.hub
                        .native_signal(stream, from, to, Signal::Candidate(c))
                        .await;
                }
                Body::Probe | Body::Sync => {}
            },
            Event::PeerConnected { .. }
            | Event::PeerDisconnected { .. }
            | Event::Listening { .. } => {}
        }
    }

    async fn outbound(&mut self, o: Outbound) {
        match o {
            Outbound::Follow(stream) => {
                if let Err(e) = self.client.subscribe(stream.clone()).await {
                    tracing::warn!(%stream, error = %e, "cannot follow the stream's gossip");
                }
            }
            Outbound::Publish(record) => {
                if let Err(e) = self.client.publish(record).await {
                    tracing::debug!(error = %e, "browser record not published");
                }
            }
            Outbound::Message {
                stream,
                from,
                to,
                msg,
            } => self.send(from, to, stream, Body::Tree { msg }),
            Outbound::Signal {
                stream,
                from,
                to,
                signal,
            } => {
                let body = match signal {
                    Signal::Offer(sdp) => {
                        let session = self.next_session;
                        self.next_session += 1;
                        Body::Offer {
                            session,
                            sdp,
                            live: false,
                        }
                    }
                    Signal::Answer(sdp) => Body::Answer {
                        session: self.sessions.get(&(to, from)).copied().unwrap_or(0),
                        sdp,
                    },
                    // Native nodes ignore these; browsers of other signal servers need them.
                    Signal::Candidate(c) => Body::Candidate {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_m_line_index: c.sdp_m_line_index,
                    },
                };
                self.send(from, to, stream, body);
            }
        }
    }

    /// Queues `body` on the (from, to) lane, starting the lane if needed. Never waits: a full
    /// lane or too many lanes drop the message (the agents' timeouts recover).
    fn send(&mut self, from: NodeId, to: NodeId, stream: StreamId, body: Body) {
        let key = (from, to);
        if self.lanes.get(&key).is_none_or(mpsc::Sender::is_closed) {
            self.lanes.retain(|_, l| !l.is_closed());
            if self.lanes.len() >= MAX_LANES {
                tracing::warn!(browser = %from, native = %to, "too many lanes; message dropped");
                return;
            }
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            tokio::spawn(lane(self.client.clone(), from, to, rx));
            self.lanes.insert(key, tx);
        }
        if let Some(lane) = self.lanes.get(&key)
            && lane.try_send((stream, body)).is_err()
        {
            tracing::warn!(browser = %from, native = %to, "lane full; message dropped");
        }
    }
}

/// Sends one pair's messages in order, each after the previous was acknowledged or failed.
async fn lane(client: Client, from: NodeId, to: NodeId, mut rx: mpsc::Receiver<(StreamId, Body)>) {
    while let Ok(Some((stream, body))) = tokio::time::timeout(LANE_IDLE, rx.recv()).await {
        if let Err(e) = client.send_as(from, to, stream, body).await {
            tracing::debug!(browser = %from, native = %to, error = %e, "message to a native node failed");
        }
    }
}

/// The streams the server follows from the start (`--stream`), before any browser asks.
pub async fn follow(client: &Client, streams: &[StreamId]) {
    for s in streams {
        if let Err(e) = client.subscribe(s.clone()).await {
            tracing::warn!(stream = %s, error = %e, "cannot follow the stream's gossip");
        }
    }
}
