//! One stream as this server sees it: the browsers it speaks for, each with the core's
//! [`Agent`], and the merged [`View`] of every record it knows (its own browsers' and, through
//! gossip, everyone else's).
//!
//! Synchronous and IO-free, like the core: inputs are method calls carrying the time, outputs
//! are [`Effect`] values drained with [`Broadcast::poll_effect`]. The hub applies them (a
//! WebSocket frame, a gossip publish, a libp2p request). Messages between two of this server's
//! own browsers never leave the process: they go from one agent to the other through a queue
//! here, never by recursion.
//!
//! A browser is placed by its agent over the agent's own view (the core's `place()`), so a
//! browser parent is chosen exactly as a native one would be; native parents rank first.
//! Before an agent of a browser accepts a child, the browser itself is asked
//! ([`ServerMessage::ChildRequest`]): only the tab knows whether it can afford one more relay.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use treecast_tree::{
    Agent, AgentConfig, Event, Input, LinkStats, Message, Node, NodeId, NodeRecord, Output,
    Platform, Reachability, RejectReason, Role, StreamId, Time, View,
};

use crate::protocol::{
    Capabilities, ClientMessage, ErrorCode, IceCandidate, PeerPlatform, ServerMessage, Stats,
    UnplacedReason,
};

/// How long a browser has to answer a [`ServerMessage::ChildRequest`].
pub const CHILD_REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// Silence after which a remote record (a native node's, from gossip) is forgotten; the core's
/// default ttl.
pub const RECORD_TTL: Duration = Duration::from_secs(90);

/// The bitrate a browser relay is sized for when the stream's own is not known yet, kbit/s.
pub const ASSUMED_STREAM_KBPS: u32 = 2_500;

/// Something the hub must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this message to one of this server's browsers.
    ToBrowser(NodeId, ServerMessage),
    /// Publish this record (of one of this server's browsers) on the stream's gossip topic.
    Publish(NodeRecord),
    /// Deliver a tree message from one of this server's browsers to a node elsewhere (libp2p
    /// request-response; for a browser of another server, to the server in its `via`).
    ToNative {
        /// The browser (whose agent speaks).
        from: NodeId,
        /// The native node.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Deliver WebRTC signalling from one of this server's browsers to a node elsewhere: a
    /// native node, or a browser of another signal server (its record's `via`).
    SignalNative {
        /// The browser.
        from: NodeId,
        /// The native node.
        to: NodeId,
        /// The offer, answer or candidate.
        signal: Signal,
    },
}

/// WebRTC signalling between two peers, whoever carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// An SDP offer (from a child).
    Offer(String),
    /// An SDP answer (from a parent).
    Answer(String),
    /// A trickled candidate.
    Candidate(IceCandidate),
}

/// Counters a broadcast keeps for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Browsers that joined.
    pub joins: u64,
    /// Browsers that lost their parent and were re-attached.
    pub repairs: u64,
}

/// One browser connection on this stream.
#[derive(Debug)]
struct Browser {
    /// `None` until the browser sends `join`.
    agent: Option<Agent>,
    /// Attach requests held until the browser answers its `child_request`.
    asked: BTreeMap<NodeId, (Message, Time)>,
    /// The last `unplaced` reason sent, so a back-off loop does not repeat it.
    unplaced: Option<UnplacedReason>,
    /// Sent `leave`: one join per connection, so a node id is never reused.
    left: bool,
}

/// One stream on this server.
#[derive(Debug)]
pub struct Broadcast {
    stream: StreamId,
    server: NodeId,
    seq_start: u64,
    view: View,
    browsers: BTreeMap<NodeId, Browser>,
    /// Work between this server's own agents: (from, to, message).
    local: VecDeque<(NodeId, NodeId, Message)>,
    /// Records this server's agents published, not yet spread to the others.
    records: VecDeque<NodeRecord>,
    out: VecDeque<Effect>,
    live: bool,
    now: Time,
    counters: Counters,
}

impl Broadcast {
    /// A stream with no browsers yet. `server` is this server's node id (the `via` of every
    /// record it publishes); `seq_start` seeds record versions (wall-clock milliseconds, so a
    /// restarted server's records are newer).
    pub fn new(stream: StreamId, server: NodeId, seq_start: u64) -> Self {
        Broadcast {
            view: View::new(stream.clone()),
            stream,
            server,
            seq_start,
            browsers: BTreeMap::new(),
            local: VecDeque::new(),
            records: VecDeque::new(),
            out: VecDeque::new(),
            live: false,
            now: Time::ZERO,
            counters: Counters::default(),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// Every record known, this server's browsers included.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Whether a broadcaster is known.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// How many browsers are connected.
    pub fn browsers(&self) -> usize {
        self.browsers.len()
    }

    /// Whether `id` is one of this server's browsers.
    pub fn has_browser(&self, id: NodeId) -> bool {
        self.browsers.contains_key(&id)
    }

    /// Joins and repairs so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether nothing is left to keep: no browser and no remote record.
    pub fn is_idle(&self) -> bool {
        self.browsers.is_empty() && self.view.is_empty()
    }

    /// A browser connected (it has not joined yet).
    pub fn connect(&mut self, id: NodeId) {
        self.browsers.insert(
            id,
            Browser {
                agent: None,
                asked: BTreeMap::new(),
                unplaced: None,
                left: false,
            },
        );
    }

    /// A browser's connection closed: its agent leaves (telling parent and children) and its
    /// record is forgotten.
    pub fn disconnect(&mut self, now: Time, id: NodeId) {
        self.advance(now);
        self.leave(id);
        // Deliver the goodbyes (detach to parent and children, the final record) while the
        // browser still counts as one of ours, then forget it.
        self.settle();
        self.browsers.remove(&id);
        self.view.remove(id);
    }

    /// A record from gossip (a native node's, or another signal server's browser's).
    pub fn record(&mut self, now: Time, record: &NodeRecord) {
        self.advance(now);
        let id = record.node.id;
        if self.browsers.contains_key(&id) || record.node.via == Some(self.server) {
            return; // nobody else speaks for this server's browsers
        }
        if self.view.merge(record, now).is_err() {
            return;
        }
        for b in self.browsers.values_mut() {
            if let Some(a) = b.agent.as_mut() {
                a.handle(now, Input::Record(record.clone()));
            }
        }
        let ids: Vec<NodeId> = self.browsers.keys().copied().collect();
        for id in ids {
            self.drain(id);
        }
        self.settle();
        self.update_live();
    }

    /// A tree message from a native node to one of this server's browsers.
    pub fn native_message(&mut self, now: Time, from: NodeId, to: NodeId, msg: Message) {
        self.advance(now);
        self.deliver(from, to, msg);
        self.settle();
    }

    /// Signalling from a native node to one of this server's browsers; dropped unless the
    /// sender is the browser's parent or child.
    pub fn native_signal(&mut self, now: Time, from: NodeId, to: NodeId, signal: Signal) {
        self.advance(now);
        // Only from the browser's parent or one of its children, as between browsers here.
        let neighbour = self
            .agent(to)
            .is_some_and(|a| a.node().parent == Some(from) || a.node().children.contains(from));
        if neighbour {
            self.out
                .push_back(Effect::ToBrowser(to, to_browser(from, signal)));
        }
    }

    /// A message from one of this server's browsers (already decoded and size-checked).
    pub fn client(&mut self, now: Time, id: NodeId, msg: ClientMessage) {
        self.advance(now);
        if !self.browsers.contains_key(&id) {
            return;
        }
        match msg {
            ClientMessage::Join {
                stream,
                capabilities,
            } => self.join(id, &stream, capabilities),
            ClientMessage::Leave {} => {
                self.leave(id);
                self.settle();
                self.view.remove(id);
            }
            ClientMessage::ChildAccepted { child } => self.answer_child(id, child, true),
            ClientMessage::ChildRefused { child } => self.answer_child(id, child, false),
            ClientMessage::Offer { to, sdp } => self.signal(id, to, Signal::Offer(sdp)),
            ClientMessage::Answer { to, sdp } => self.signal(id, to, Signal::Answer(sdp)),
            ClientMessage::Candidate { to, candidate } => {
                self.signal(id, to, Signal::Candidate(candidate));
            }
            ClientMessage::Stats(stats) => self.input(id, stats_input(stats)),
            ClientMessage::ParentLost {} => self.input(id, Input::ParentLost),
            ClientMessage::ChildLost { child } => self.input(id, Input::ChildLost(child)),
            // Answered by the connection task; nothing for the tree.
            ClientMessage::Ping { .. } | ClientMessage::Pong { .. } => {}
        }
        self.settle();
    }

    /// Housekeeping at `now`: agents' timers, unanswered child requests, expiry of silent
    /// remote records.
    pub fn tick(&mut self, now: Time) {
        self.advance(now);
        let due: Vec<(NodeId, NodeId)> = self
            .browsers
            .iter()
            .flat_map(|(p, b)| {
                b.asked
                    .iter()
                    .filter(|(_, (_, t))| *t <= now)
                    .map(move |(c, _)| (*p, *c))
            })
            .collect();
        for (parent, child) in due {
            self.answer_child(parent, child, false);
        }
        let ids: Vec<NodeId> = self.browsers.keys().copied().collect();
        for id in ids {
            let due = self
                .agent(id)
                .and_then(Agent::poll_timeout)
                .is_some_and(|t| t <= now);
            if due {
                self.input(id, Input::Tick);
            }
        }
        // The server's own browsers republish through their agents; only remote records lapse.
        let _gone = self.view.expire(now, RECORD_TTL, self.server);
        self.settle();
        self.update_live();
    }

    /// When [`Broadcast::tick`] should run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let agents = self
            .browsers
            .values()
            .filter_map(|b| b.agent.as_ref().and_then(Agent::poll_timeout));
        let asked = self
            .browsers
            .values()
            .flat_map(|b| b.asked.values().map(|(_, t)| *t));
        let expiry = self.view.next_expiry();
        agents.chain(asked).chain(expiry).min()
    }

    /// The next effect to apply.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.out.pop_front()
    }

    // ---- browser messages ------------------------------------------------------------------

    fn join(&mut self, id: NodeId, stream: &StreamId, caps: Capabilities) {
        if stream != &self.stream {
            self.error(
                id,
                ErrorCode::WrongStream,
                "join names another stream than the URL",
            );
            return;
        }
        if self.agent(id).is_some() || self.browsers.get(&id).is_some_and(|b| b.left) {
            self.error(id, ErrorCode::AlreadyJoined, "one join per connection");
            return;
        }
        let mut node = Node::new(id, Role::Viewer, capacity(caps));
        node.platform = Platform::Browser;
        // Browsers get through NATs with STUN; a browser that cannot is reported as lost by
        // its peers and ends up a leaf through repair.
        node.reach = Reachability::Nat;
        node.via = Some(self.server);
        let mut cfg = AgentConfig::new(node, self.stream.clone());
        cfg.seq_start = self.seq_start;
        let mut agent = Agent::new(cfg, self.now);
        // The newcomer learns the tree as this server knows it.
        for n in self.view.nodes() {
            agent.handle(
                self.now,
                Input::Record(NodeRecord {
                    stream: self.stream.clone(),
                    node: *n,
                }),
            );
        }
        agent.handle(self.now, Input::Join);
        if let Some(b) = self.browsers.get_mut(&id) {
            b.agent = Some(agent);
        }
        self.counters.joins += 1;
        if !self.live {
            self.unplaced(id, UnplacedReason::NotLive);
        }
        self.drain(id);
    }

    fn leave(&mut self, id: NodeId) {
        if self.agent(id).is_some() {
            self.input(id, Input::Leave);
        }
        // Children that were waiting for this browser's answer are refused.
        let asked: Vec<NodeId> = self
            .browsers
            .get_mut(&id)
            .map(|b| std::mem::take(&mut b.asked).into_keys().collect())
            .unwrap_or_default();
        for child in asked {
            self.local.push_back((
                id,
                child,
                Message::Reject {
                    reason: RejectReason::Leaving,
                },
            ));
        }
        if let Some(b) = self.browsers.get_mut(&id) {
            b.left |= b.agent.is_some();
            b.agent = None;
        }
    }

    fn answer_child(&mut self, parent: NodeId, child: NodeId, yes: bool) {
        let Some((msg, _)) = self
            .browsers
            .get_mut(&parent)
            .and_then(|b| b.asked.remove(&child))
        else {
            return; // late or unsolicited: the request already timed out
        };
        if yes {
            self.input(parent, Input::Message { from: child, msg });
        } else {
            self.deliver(
                parent,
                child,
                Message::Reject {
                    reason: RejectReason::Full,
                },
            );
        }
    }

    /// Relays signalling between neighbours only: a browser cannot use the server to reach
    /// arbitrary peers.
    fn signal(&mut self, from: NodeId, to: NodeId, signal: Signal) {
        let Some(me) = self.agent(from).map(|a| *a.node()) else {
            self.error(from, ErrorCode::NotJoined, "join first");
            return;
        };
        if me.parent != Some(to) && !me.children.contains(to) {
            self.error(
                from,
                ErrorCode::NotYourPeer,
                format!("{to} is neither your parent nor your child"),
            );
            return;
        }
        if self.browsers.contains_key(&to) {
            self.out
                .push_back(Effect::ToBrowser(to, to_browser(from, signal)));
        } else if self.view.get(to).is_some() {
            // A native node, or a browser of another signal server (reached through the
            // server its record names in `via`): either way over libp2p.
            self.out
                .push_back(Effect::SignalNative { from, to, signal });
        } else {
            self.error(
                from,
                ErrorCode::Unreachable,
                format!("{to} is not reachable"),
            );
        }
    }

    // ---- agents ----------------------------------------------------------------------------

    fn agent(&self, id: NodeId) -> Option<&Agent> {
        self.browsers.get(&id)?.agent.as_ref()
    }

    /// Feeds one input to a browser's agent and collects its outputs.
    fn input(&mut self, id: NodeId, input: Input) {
        let now = self.now;
        let Some(agent) = self.browsers.get_mut(&id).and_then(|b| b.agent.as_mut()) else {
            if !matches!(input, Input::Tick | Input::Message { .. }) {
                self.error(id, ErrorCode::NotJoined, "join first");
            }
            return;
        };
        agent.handle(now, input);
        self.drain(id);
    }

    /// A tree message for `to`: to one of this server's agents (asking the browser first if it
    /// is an attach request), or out to a native node.
    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Message) {
        if !self.browsers.contains_key(&to) {
            if self.browsers.contains_key(&from) {
                self.out.push_back(Effect::ToNative { from, to, msg });
            }
            return;
        }
        if self.agent(to).is_none() {
            // Connected but not joined (or left): it has no place to offer.
            if matches!(msg, Message::Attach { .. }) {
                self.local.push_back((
                    to,
                    from,
                    Message::Reject {
                        reason: RejectReason::NotAttached,
                    },
                ));
            }
            return;
        }
        let full = self
            .agent(to)
            .is_none_or(|a| a.node().children.len() >= usize::from(a.node().capacity));
        if matches!(msg, Message::Attach { .. }) && !full {
            let deadline = self.now + CHILD_REQUEST_TIMEOUT;
            if let Some(b) = self.browsers.get_mut(&to) {
                b.asked.insert(from, (msg, deadline));
            }
            self.out.push_back(Effect::ToBrowser(
                to,
                ServerMessage::ChildRequest { child: from },
            ));
            return;
        }
        // A full agent refuses by itself; no need to bother the browser.
        self.input(to, Input::Message { from, msg });
    }

    /// Moves everything one agent produced to where it goes.
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(out) = self
                .browsers
                .get_mut(&id)
                .and_then(|b| b.agent.as_mut())
                .and_then(Agent::poll_output)
            else {
                return;
            };
            match out {
                Output::Publish(rec) => self.records.push_back(rec),
                Output::Send { to, msg } => self.local.push_back((id, to, msg)),
                Output::Event(e) => self.event(id, e),
            }
        }
    }

    /// Delivers queued records and messages between this server's agents until none is left.
    /// A loop over queues, never recursion: each step may queue more, but agents emit a
    /// bounded number of outputs per input and the exchanges settle (attach, accept; detach).
    fn settle(&mut self) {
        let mut budget = 100_000usize;
        loop {
            if let Some(rec) = self.records.pop_front() {
                self.spread(rec);
            } else if let Some((from, to, msg)) = self.local.pop_front() {
                self.deliver(from, to, msg);
            } else {
                return;
            }
            budget -= 1;
            if budget == 0 {
                tracing::warn!(stream = %self.stream, "agents did not settle; dropping queued work");
                self.records.clear();
                self.local.clear();
                return;
            }
        }
    }

    /// A record one of this server's agents published: into the view, to every other agent
    /// here, and out to gossip.
    fn spread(&mut self, rec: NodeRecord) {
        let now = self.now;
        if self.view.merge(&rec, now).is_err() {
            return;
        }
        let author = rec.node.id;
        let ids: Vec<NodeId> = self
            .browsers
            .keys()
            .copied()
            .filter(|i| *i != author)
            .collect();
        for id in &ids {
            if let Some(a) = self.browsers.get_mut(id).and_then(|b| b.agent.as_mut()) {
                a.handle(now, Input::Record(rec.clone()));
            }
        }
        self.out.push_back(Effect::Publish(rec));
        for id in ids {
            self.drain(id);
        }
    }

    fn event(&mut self, id: NodeId, e: Event) {
        match e {
            Event::Attached { parent, depth, .. } => {
                let parent_platform = match self.view.get(parent).map(|n| n.platform) {
                    Some(Platform::Native) => PeerPlatform::Native,
                    _ => PeerPlatform::Browser,
                };
                if let Some(b) = self.browsers.get_mut(&id) {
                    b.unplaced = None;
                }
                self.out.push_back(Effect::ToBrowser(
                    id,
                    ServerMessage::Placed {
                        node_id: id,
                        parent,
                        parent_platform,
                        depth,
                    },
                ));
            }
            Event::Orphaned { lost } => {
                self.counters.repairs += 1;
                self.out.push_back(Effect::ToBrowser(
                    id,
                    ServerMessage::ParentLost { parent: lost },
                ));
            }
            Event::ChildAdded(child) => self
                .out
                .push_back(Effect::ToBrowser(id, ServerMessage::ChildAdded { child })),
            Event::ChildRemoved(child) => self
                .out
                .push_back(Effect::ToBrowser(id, ServerMessage::ChildRemoved { child })),
            Event::NoPlace => {
                let reason = if self.live {
                    UnplacedReason::NoSlot
                } else {
                    UnplacedReason::NotLive
                };
                self.unplaced(id, reason);
            }
            Event::Swapped { .. } => {}
        }
    }

    fn unplaced(&mut self, id: NodeId, reason: UnplacedReason) {
        let Some(b) = self.browsers.get_mut(&id) else {
            return;
        };
        if b.unplaced != Some(reason) {
            b.unplaced = Some(reason);
            self.out
                .push_back(Effect::ToBrowser(id, ServerMessage::Unplaced { reason }));
        }
    }

    fn update_live(&mut self) {
        let live = self.view.root().is_some();
        if live != self.live {
            self.live = live;
            for id in self.browsers.keys() {
                self.out
                    .push_back(Effect::ToBrowser(*id, ServerMessage::Status { live }));
            }
        }
    }

    fn error(&mut self, id: NodeId, code: ErrorCode, message: impl Into<String>) {
        self.out
            .push_back(Effect::ToBrowser(id, ServerMessage::error(code, message)));
    }

    fn advance(&mut self, now: Time) {
        self.now = self.now.max(now);
    }
}

/// Child slots for a browser: none unless it offers to relay; then what its upload carries at
/// the assumed stream bitrate (the core caps it at four).
fn capacity(caps: Capabilities) -> u8 {
    if !caps.relay {
        return 0;
    }
    treecast_tree::capacity_for(caps.uplink_kbps, ASSUMED_STREAM_KBPS)
}

fn stats_input(s: Stats) -> Input {
    Input::SetLink {
        link: LinkStats {
            kbps: s.kbps,
            loss_permille: s.loss_permille,
            rtt_ms: s.rtt_ms,
        },
        receiving: s.receiving,
    }
}

fn to_browser(from: NodeId, signal: Signal) -> ServerMessage {
    match signal {
        Signal::Offer(sdp) => ServerMessage::Offer { from, sdp },
        Signal::Answer(sdp) => ServerMessage::Answer { from, sdp },
        Signal::Candidate(candidate) => ServerMessage::Candidate { from, candidate },
    }
}
