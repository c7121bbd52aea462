//! The tree driver: runs this node's [`Agent`] over the gossip overlay and makes the media
//! links follow the tree.
//!
//! One task owns the agent. It feeds the agent what the overlay delivers (records, messages),
//! what the media path observes (silence, failed connections, link figures, capacity) and the
//! agent's timers; and it carries out what the agent outputs: records are published, messages
//! sent, and media links opened or closed.
//!
//! Media follows the tree, make-before-break:
//! - **Child side.** When the agent takes a parent ([`Event::Attached`]: a join, a repair, a
//!   move or a swap), the driver negotiates a receive-only connection with it: an
//!   [`Body::Offer`] as a direct message, answered by [`Body::Answer`]. The old upstream
//!   keeps feeding the children until the new parent's tracks start; then the feeds switch
//!   source (the children's mungers keep sequence numbers and timestamps continuous) and the
//!   old connection closes.
//! - **Parent side.** An offer is answered only from a node the agent counts as its child.
//!   When the agent drops a child, its leg stays open for [`LEG_GRACE`] so that a child
//!   moving elsewhere keeps media until its new parent's tracks start.
//! - **Parent loss.** Media silence of [`SILENCE`] makes the driver probe the parent
//!   ([`Body::Probe`], answered by the parent's event loop). No answer: the parent is lost.
//!   An answer that it does not receive either: it is repairing above us, so we wait (our
//!   subtree stays put) up to [`STARVED_PATIENCE`]. A failed connection, a closed overlay
//!   connection or an expired record count as loss too.
//!
//! Queues: overlay events arrive on the bounded channel the overlay owns; results of the
//! driver's own tasks come back on a bounded channel of [`INTERNAL_CAPACITY`] (the tasks wait
//! when it is full: there are at most a few per child). Outgoing direct messages are sent by
//! tasks limited to [`MAX_SENDS_IN_FLIGHT`]; beyond that a message is dropped and counted
//! (the agent's own timeouts retry what matters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;
use treecast_tree::snapshot::TreeSnapshot;
use treecast_tree::{
    Agent, AgentConfig, Event, Input, LinkStats, Node, NodeId, Output, Role, StreamId, Time,
};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::child::{self, ChildLink};
use crate::gossip::{self, Body, Client};
use crate::node::{NodeState, TreeInfo, lock};
use crate::peer::Peer;
use crate::publish_pace::{PUBLISH_EVERY, PublishPace, first_pace, refresh_pace};
use crate::upstream::{self, UpstreamError};

/// Media silence after which the parent is probed.
pub const SILENCE: Duration = Duration::from_millis(250);
/// Silence that, with the parent unreachable over the overlay, means it is gone.
pub const GONE_SILENCE: Duration = Duration::from_millis(60);
/// How long a probe may take before the parent counts as gone.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Silence tolerated from a parent that says it receives (our link to it is broken).
pub const LINK_PATIENCE: Duration = Duration::from_millis(1500);
/// Silence tolerated from a parent that says it is starved too (it is repairing above us).
pub const STARVED_PATIENCE: Duration = Duration::from_secs(8);
/// How long a dropped child's leg stays open (make-before-break for moves).
pub const LEG_GRACE: Duration = Duration::from_secs(2);
/// How long a parent may take to answer an offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a parent holds an offer from a node it has not (yet) taken as a child: the offer
/// comes right behind the attach request, and the agent may not have decided yet.
const OFFER_HOLD: Duration = Duration::from_secs(1);
/// Offers held at once; beyond, an early offer is refused at once.
const MAX_HELD_OFFERS: usize = 16;
/// Least time between two requests for the stream's records when no place is found.
const RESYNC_EVERY: Duration = Duration::from_secs(3);
/// Offers re-sent while the parent does not count us as its child yet (a move in flight).
const OFFER_ATTEMPTS: u32 = 8;
const OFFER_RETRY: Duration = Duration::from_millis(250);
/// Bound of the channel carrying the driver's own tasks' results.
pub const INTERNAL_CAPACITY: usize = 256;
/// Direct messages being sent at once.
pub const MAX_SENDS_IN_FLIGHT: usize = 64;
/// How long a newcomer waits for the root's record (normally there within one sync) before
/// asking to join anyway.
const JOIN_WAIT: Duration = Duration::from_secs(2);
/// A record is republished at least this often when nothing changed (the core's default is
/// 30 s). Every node receives every record, so a swarm of N nodes costs each node N records
/// per refresh: at 200 nodes and 30 s that was more gossip than a low-bitrate stream's 1%, and
/// a larger swarm stretches it further ([`REFRESH_SHARE`]). What changes is published at once
/// anyway, a lost parent is noticed from media silence, not from its record expiring, and a
/// departed node's record is harmless meanwhile: nobody counts a relation its parent no longer
/// confirms, so placement and repair never pick it.
const RECORD_REFRESH: Duration = Duration::from_secs(120);
/// Silence after which a node is forgotten: three refreshes, or three of the refresh
/// intervals its record declares if longer (`Node::lifetime`; see [`REFRESH_SHARE`]).
const RECORD_TTL: Duration = Duration::from_secs(360);
/// The share of the stream's bitrate that refreshes of unchanged records may cost each node
/// as gossipsub messages, every copy in and out (see [`Driver::pace_refresh`]): half of the
/// 1% the overlay's records may take, the other half left for changes. In a
/// large swarm or on a low-bitrate stream the refresh interval grows past
/// [`RECORD_REFRESH`] to keep it (capped at `treecast_tree::MAX_REFRESH`).
const REFRESH_SHARE: f64 = 0.005;
/// The most gossipsub bytes per record byte the refresh pace believes (see
/// `Stats::copies`): about 3.9 are measured in 200-relay swarms; a figure far above is a
/// node that received few records over many copies, not a property of the mesh.
const MAX_COPIES: f64 = 16.0;
/// The gossipsub bytes per record byte assumed until our overlay has measured them: about
/// what 200-relay swarms measure (3.9 in three runs with the mesh of 3, at most 4; session 10).
const START_COPIES: f64 = 4.0;
/// How often media health, link figures and the tree snapshot are looked at.
const HEALTH_TICK: Duration = Duration::from_millis(50);
/// How long the old parent's connection stays open after the new one is up, at most, while
/// the video feed waits for a keyframe to switch at (a GOP or so; the old parent keeps the
/// leg for [`LEG_GRACE`] anyway).
const OLD_PARENT_GRACE: Duration = Duration::from_secs(3);
/// Loss reported by children (RTCP, in 1/256) from which this node counts as over capacity.
const POOR_FRACTION: u64 = 20;
/// How long a capacity cut by measurement holds before one slot is tried again.
const CAPACITY_HOLD: Duration = Duration::from_secs(30);

/// How the tree driver is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broadcaster, relay or viewer.
    pub role: Role,
    /// Child slots declared: `--max-children`, or what `--upload-mbps` allows (recomputed
    /// once the stream's bitrate is known).
    pub max_children: u8,
    /// Declared upload, kbit/s.
    pub upload_kbps: Option<u32>,
    /// Tests only: ignore the children's loss reports (a node lying about its capacity).
    pub overstate_capacity: bool,
}

/// What the driver's tasks report back.
#[derive(Debug)]
enum Internal {
    /// A connection to a parent is up (or failed for good).
    Upstream {
        session: u64,
        result: Result<Peer, String>,
    },
    /// The current upstream connection failed or closed.
    UpstreamDown { session: u64 },
    /// A probe of the parent came back.
    Probe { session: u64, outcome: Probed },
    /// A child's leg is up.
    LegUp { child: NodeId, link: Arc<ChildLink> },
    /// A child's leg closed.
    LegDown { child: NodeId, id: String },
    /// A child whose overlay connection closed cannot be reached either.
    ChildGone { child: NodeId },
    /// An attach request could not be delivered: the candidate is gone.
    Unreachable { node: NodeId },
}

/// What a probe of the parent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probed {
    /// It answered: alive, and whether it receives.
    Alive(bool),
    /// It cannot be reached (connection refused or closed): gone.
    Gone,
    /// No answer in time: gone, or just slow; probed again before concluding.
    Silent,
}

/// An offer waiting for its sender to become our child.
#[derive(Debug)]
struct HeldOffer {
    session: u64,
    sdp: String,
    live: bool,
    since: Instant,
}

/// Answers awaited by offer tasks, by session.
type Answers = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<String, String>>>>>;

/// The child side: the media link from the parent.
#[derive(Default)]
struct Up {
    /// The parent the agent wants media from, and the session negotiating or carrying it.
    parent: Option<NodeId>,
    session: u64,
    negotiating: Option<tokio::task::JoinHandle<()>>,
    /// The live connection (to the current parent once switched).
    peer: Option<Peer>,
    /// When the current session's connection came up.
    connected_at: Option<Instant>,
    probing: bool,
    next_probe: Option<Instant>,
    /// Probes in a row that got no answer in time.
    unanswered: u32,
    /// The loss of this session was reported to the agent already.
    reported: bool,
    /// The parent was lost (silence, unreachable, or the agent orphaned us) since the last
    /// parent was chosen: the next one is a repair, not a planned switch.
    lost: bool,
    /// The video feed's source number when this session started negotiating: it changes
    /// once the feed switched to the new parent (at a keyframe).
    video_source: Option<u32>,
    /// This session's offer went out right behind an attach request, before the answer
    /// (see [`Driver::drain`]); the agent has not said it is attached to `parent` yet.
    speculative: bool,
}

/// Runs the driver until `stop` turns true; then leaves the tree (telling parent and
/// children) and closes the media links it opened.
pub async fn run(
    node: Arc<NodeState>,
    client: Client,
    events: mpsc::Receiver<gossip::Event>,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("tree", node = %client.node_id());
    drive(node, client, events, settings, stop)
        .instrument(span)
        .await;
}

async fn drive(
    node: Arc<NodeState>,
    client: Client,
    mut events: mpsc::Receiver<gossip::Event>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(stream) = StreamId::new(node.stream.as_str()) else {
        tracing::error!("stream name not usable in the tree");
        return;
    };
    if let Err(e) = client.subscribe(stream.clone()).await {
        tracing::error!(error = %e, "cannot follow the stream's topic");
        return;
    }
    let (internal_tx, mut internal_rx) = mpsc::channel(INTERNAL_CAPACITY);
    let mut d = Driver::new(node, client, stream, settings, internal_tx);
    let mut health = tokio::time::interval(HEALTH_TICK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = d.agent.poll_timeout().map(|t| d.instant(t));
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => d.on_overlay(ev),
                None => break,
            },
            Some(int) = internal_rx.recv() => d.on_internal(int),
            _ = sleep_until(wake) => d.handle(Input::Tick),
            _ = health.tick() => d.on_health(),
            _ = stop.wait_for(|s| *s) => break,
        }
        d.drain();
    }
    d.leave().await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Driver {
    node: Arc<NodeState>,
    client: Client,
    stream: StreamId,
    agent: Agent,
    epoch: Instant,
    settings: Settings,
    internal: mpsc::Sender<Internal>,
    sends: Arc<Semaphore>,
    dropped_sends: u64,
    answers: Answers,
    sessions: Arc<AtomicU64>,
    up: Up,
    legs: HashMap<NodeId, Arc<ChildLink>>,
    /// Health ticks, to do slower work every so many.
    ticks: u64,
    /// Whether the agent was told to join (once the root's record is known, or after
    /// [`JOIN_WAIT`]).
    joined: bool,
    capacity: u8,
    capacity_cut_at: Option<Instant>,
    measured_cap: u8,
    /// Our newest record, until its time to go out comes.
    publish: PublishPace,
    /// Offers from nodes not (yet) our children, held for [`OFFER_HOLD`]: by sender, the
    /// session, the SDP, whether live, and when it arrived.
    held_offers: HashMap<NodeId, HeldOffer>,
    /// When we last asked the overlay for the stream's records again (no place found).
    last_resync: Option<Instant>,
    /// When the stream's bytes were first seen, and how many there were: the bitrate the
    /// refresh pace follows is the mean since then (a video's bitrate swings with its GOP).
    pace_from: Option<(Instant, u64)>,
    /// The refresh pace last handed to the agent.
    refresh_per_node: Duration,
}

impl Driver {
    fn new(
        node: Arc<NodeState>,
        client: Client,
        stream: StreamId,
        settings: Settings,
        internal: mpsc::Sender<Internal>,
    ) -> Self {
        let me = client.node_id();
        let epoch = Instant::now();
        let wall_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let capacity = if settings.role == Role::Viewer && settings.upload_kbps.is_none() {
            0
        } else {
            settings.max_children
        };
        let mut cfg = AgentConfig::new(Node::new(me, settings.role, capacity), stream.clone());
        // Restarts publish newer records; the seed differs per run.
        cfg.seq_start = wall_ms;
        cfg.seed = me.0 ^ wall_ms;
        cfg.refresh = RECORD_REFRESH;
        cfg.ttl = RECORD_TTL;
        let agent = Agent::new(cfg, Time(0));
        let joined = settings.role == Role::Broadcaster;
        tracing::info!(%me, role = ?settings.role, capacity, "joining the tree");
        let d = Driver {
            node,
            client,
            stream,
            agent,
            epoch,
            settings,
            internal,
            sends: Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT)),
            dropped_sends: 0,
            answers: Arc::default(),
            sessions: Arc::new(AtomicU64::new(1)),
            up: Up::default(),
            legs: HashMap::new(),
            ticks: 0,
            joined,
            capacity,
            capacity_cut_at: None,
            measured_cap: treecast_tree::MAX_CHILDREN as u8,
            held_offers: HashMap::new(),
            last_resync: None,
            pace_from: None,
            refresh_per_node: Duration::ZERO,
            // The root's first record at once (newcomers wait for it); a newcomer's after one
            // interval, by when it is usually attached and has nothing detached to say.
            publish: PublishPace::new(if joined { epoch } else { epoch + PUBLISH_EVERY }),
        };
        d.publish_info();
        d
    }

    fn now(&self) -> Time {
        Time(self.epoch.elapsed().as_micros() as u64)
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.0)
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        self.agent.handle(now, input);
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Carries out everything the agent output.
    fn drain(&mut self) {
        while let Some(out) = self.agent.poll_output() {
            match out {
                Output::Publish(record) => {
                    self.publish.offer(record);
                    self.publish_due();
                }
                Output::Send { to, msg } => {
                    tracing::debug!(%to, ?msg, "sending");
                    // A joining or repairing node offers media right behind its attach
                    // request: the parent holds the offer until its agent has decided (see
                    // `on_offer`), so the answer comes a round trip sooner.
                    let offer_too = matches!(msg, treecast_tree::Message::Attach { .. })
                        && self.settings.role != Role::Broadcaster
                        && !self.agent.is_attached();
                    self.send(to, Body::Tree { msg });
                    if offer_too {
                        self.want_parent(to, true);
                    }
                }
                Output::Event(e) => self.on_agent_event(e),
            }
        }
    }

    /// Sends a direct message from a task of its own, within [`MAX_SENDS_IN_FLIGHT`].
    fn send(&mut self, to: NodeId, body: Body) {
        let Ok(permit) = self.sends.clone().try_acquire_owned() else {
            self.dropped_sends += 1;
            tracing::warn!(%to, dropped = self.dropped_sends, "too many messages in flight; dropped one");
            return;
        };
        let client = self.client.clone();
        let stream = self.stream.clone();
        let internal = self.internal.clone();
        let attach = matches!(
            body,
            Body::Tree {
                msg: treecast_tree::Message::Attach { .. }
            }
        );
        tokio::spawn(
            async move {
                let _permit = permit;
                if let Err(e) = client.send_body(to, stream, body).await {
                    tracing::debug!(%to, error = %e, "direct message not delivered");
                    // A candidate that cannot be reached will not answer: say so at once
                    // rather than let the agent wait for its attach timeout.
                    if attach && !matches!(e, gossip::ClientError::Busy) {
                        let _ = internal.send(Internal::Unreachable { node: to }).await;
                    }
                }
            }
            .in_current_span(),
        );
    }

    fn on_agent_event(&mut self, e: Event) {
        tracing::debug!(event = ?e, "agent");
        match e {
            Event::Attached {
                parent,
                previous,
                depth,
            } => {
                tracing::info!(%parent, ?previous, depth, "attached");
                self.want_parent(parent, false);
            }
            Event::Orphaned { lost } => {
                tracing::info!(%lost, "parent lost; repairing");
                self.up.lost = true;
            }
            Event::ChildAdded(c) => {
                tracing::info!(child = %c, "child added");
                if let Some(o) = self.held_offers.remove(&c) {
                    self.on_offer(c, o.session, o.sdp, o.live);
                }
            }
            Event::ChildRemoved(c) => {
                tracing::info!(child = %c, "child removed");
                if let Some(link) = self.legs.remove(&c) {
                    self.node.close_child_later(link.id.clone(), LEG_GRACE);
                }
            }
            Event::NoPlace => {
                tracing::debug!("no place in the tree yet; retrying");
                // Perhaps we know too little of the tree: our first sync may have come before
                // anyone had records to give. Ask again, at most every few seconds.
                if self.last_resync.is_none_or(|t| t.elapsed() >= RESYNC_EVERY) {
                    self.last_resync = Some(Instant::now());
                    if let Err(e) = self.client.resync(self.stream.clone()) {
                        tracing::debug!(error = %e, "cannot ask for the records again");
                    }
                }
                // Nobody took us: an offer sent along with the last request is moot.
                if self.up.speculative
                    && let Some(task) = self.up.negotiating.take()
                {
                    task.abort();
                }
            }
            Event::Swapped { up, down } => tracing::info!(%up, %down, "swapped"),
        }
        self.publish_info();
    }

    // ---- child side ---------------------------------------------------------------------

    /// Starts negotiating media with `parent`; the current upstream keeps feeding meanwhile.
    /// `speculative`: along with an attach request, before the agent knows the answer.
    fn want_parent(&mut self, parent: NodeId, speculative: bool) {
        if speculative
            && self.up.speculative
            && self.up.parent == Some(parent)
            && self.up.negotiating.is_some()
        {
            // Asking the same candidate again (a successor not ready yet): the offer sent with
            // the first request is still held there; a second one would only race it.
            return;
        }
        if !speculative && self.up.speculative && self.up.parent == Some(parent) {
            // The agent confirms the parent we already offered to: keep that negotiation (or
            // the connection it brought up), unless it failed meanwhile.
            self.up.speculative = false;
            self.up.lost = false;
            if self.up.negotiating.is_some() || self.up.connected_at.is_some() {
                return;
            }
        }
        if let Some(task) = self.up.negotiating.take() {
            task.abort();
        }
        self.up.parent = Some(parent);
        self.up.speculative = speculative;
        self.up.session = self.sessions.fetch_add(1, Ordering::Relaxed);
        // A repair starts with the new parent's fast-start GOP, however short the silence so
        // far: the old parent is gone, nothing would arrive until the next natural keyframe.
        // (Kept while offers go out along with requests, until a parent is confirmed.)
        let repair = if speculative {
            self.up.lost
        } else {
            std::mem::take(&mut self.up.lost)
        };
        self.up.reported = false;
        self.up.probing = false;
        self.up.next_probe = None;
        self.up.unanswered = 0;
        // Silence is counted from the new connection, once it is up: the old parent's
        // silence (a repair) must not count against a parent that has not had a chance yet.
        self.up.connected_at = None;
        self.up.video_source = self.video_feed().map(|f| f.source_id());
        let session = self.up.session;
        let (node, client, stream) = (self.node.clone(), self.client.clone(), self.stream.clone());
        let (answers, sessions, internal) = (
            self.answers.clone(),
            self.sessions.clone(),
            self.internal.clone(),
        );
        let task = tokio::spawn(
            async move {
                let result =
                    offer_to_parent(&node, &client, &stream, parent, repair, &answers, &sessions)
                        .await
                        .map_err(|e| e.to_string());
                let _ = internal.send(Internal::Upstream { session, result }).await;
            }
            .in_current_span(),
        );
        self.up.negotiating = Some(task);
    }

    fn on_upstream(&mut self, session: u64, result: Result<Peer, String>) {
        if session != self.up.session {
            if let Ok(peer) = result {
                tokio::spawn(async move {
                    let _ = peer.pc.close().await;
                });
            }
            return;
        }
        self.up.negotiating = None;
        match result {
            Ok(peer) => {
                tracing::info!(parent = ?self.up.parent, "media from the parent");
                let mut state = peer.state.clone();
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let _ = state
                        .wait_for(|s| {
                            matches!(
                                s,
                                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                            )
                        })
                        .await;
                    let _ = internal.send(Internal::UpstreamDown { session }).await;
                });
                if let Some(old) = self.up.peer.replace(peer) {
                    // Make-before-break: the old parent feeds until the video feed switched
                    // to the new one at a keyframe (upstream::switch_to_track), within reason.
                    let (video, before) = (self.video_feed(), self.up.video_source);
                    tokio::spawn(async move {
                        let deadline = Instant::now() + OLD_PARENT_GRACE;
                        while let Some(v) = &video
                            && Some(v.source_id()) == before
                            && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        let _ = old.pc.close().await;
                    });
                }
                self.up.connected_at = Some(Instant::now());
                self.publish_info();
            }
            Err(e) if self.up.speculative => {
                // The candidate refused or did not answer: the agent hears that as a reject
                // (or a timeout) and asks the next one, with an offer of its own.
                tracing::debug!(parent = ?self.up.parent, error = e, "offer along with a request failed");
            }
            Err(e) => {
                tracing::warn!(parent = ?self.up.parent, error = e, "no media from the parent");
                self.parent_lost();
            }
        }
    }

    fn video_feed(&self) -> Option<Arc<crate::fanout::Feed>> {
        self.node.tracks().and_then(|t| t.video)
    }

    /// Tells the agent the parent is gone (once per session).
    fn parent_lost(&mut self) {
        if self.up.reported {
            return;
        }
        self.up.reported = true;
        self.up.lost = true;
        self.handle(Input::ParentLost);
    }

    /// How long media has been missing from the current upstream session.
    fn silence(&self) -> Option<Duration> {
        let since_connect = self.up.connected_at?.elapsed();
        let silent = self.node.silent_for().unwrap_or(since_connect);
        Some(silent.min(since_connect))
    }

    fn probe_parent(&mut self) {
        let Some(parent) = self.up.parent else { return };
        if self.up.probing || self.up.reported {
            return;
        }
        self.up.probing = true;
        let session = self.up.session;
        let (client, stream, internal) = (
            self.client.clone(),
            self.stream.clone(),
            self.internal.clone(),
        );
        tokio::spawn(
            async move {
                let outcome =
                    match tokio::time::timeout(PROBE_TIMEOUT, client.probe(parent, stream)).await {
                        Ok(Ok(receiving)) => Probed::Alive(receiving),
                        Ok(Err(e)) => {
                            tracing::info!(%parent, error = %e, "probe failed");
                            Probed::Gone
                        }
                        Err(_) => {
                            tracing::info!(%parent, "probe timed out");
                            Probed::Silent
                        }
                    };
                let _ = internal.send(Internal::Probe { session, outcome }).await;
            }
            .in_current_span(),
        );
    }

    fn on_probe(&mut self, session: u64, outcome: Probed) {
        if session != self.up.session {
            return;
        }
        self.up.probing = false;
        if outcome == Probed::Silent {
            self.up.unanswered += 1;
        } else {
            self.up.unanswered = 0;
        }
        let silence = self.silence().unwrap_or_default();
        if outcome == Probed::Gone && silence >= GONE_SILENCE {
            // Unreachable and silent: the parent's process is gone (its sockets reset).
            tracing::info!(parent = ?self.up.parent, ?silence, "parent unreachable");
            self.parent_lost();
            return;
        }
        if outcome == Probed::Gone {
            // Unreachable but media still arrived a moment ago: look again shortly.
            self.up.next_probe = Some(Instant::now() + GONE_SILENCE);
            return;
        }
        if silence < SILENCE {
            return; // media came back meanwhile
        }
        let (patience, recheck) = match outcome {
            Probed::Gone => {
                tracing::info!(parent = ?self.up.parent, ?silence, "parent unreachable");
                self.parent_lost();
                return;
            }
            // A loaded machine can be slow to answer: only repeated misses over a long
            // silence count (a crashed process is `Gone` at once: its connections reset).
            Probed::Silent if self.up.unanswered >= 3 => (LINK_PATIENCE, Duration::ZERO),
            Probed::Silent => (STARVED_PATIENCE, Duration::ZERO),
            Probed::Alive(true) => (LINK_PATIENCE, Duration::from_millis(250)),
            Probed::Alive(false) => (STARVED_PATIENCE, Duration::from_millis(500)),
        };
        if silence >= patience {
            tracing::info!(parent = ?self.up.parent, ?silence, ?outcome, "no media from the parent; leaving it");
            self.parent_lost();
        } else {
            self.up.next_probe = Some(Instant::now() + recheck);
        }
    }

    // ---- parent side --------------------------------------------------------------------

    /// A child's overlay connection closed: if it cannot be reached, it is gone (a crash);
    /// telling the agent at once lets a repairing successor take its slot without waiting.
    fn probe_child(&mut self, child: NodeId) {
        let (client, stream, internal) = (
            self.client.clone(),
            self.stream.clone(),
            self.internal.clone(),
        );
        tokio::spawn(async move {
            let reached = tokio::time::timeout(PROBE_TIMEOUT, client.probe(child, stream)).await;
            if matches!(reached, Ok(Err(_))) {
                let _ = internal.send(Internal::ChildGone { child }).await;
            }
        });
    }

    fn on_offer(&mut self, from: NodeId, session: u64, sdp: String, live: bool) {
        if !self.agent.node().children.contains(from)
            && (self.held_offers.len() < MAX_HELD_OFFERS || self.held_offers.contains_key(&from))
        {
            // Likely right behind its attach request: wait for the agent's decision. A newer
            // offer from the same node replaces the older, which is refused.
            let held = HeldOffer {
                session,
                sdp,
                live,
                since: Instant::now(),
            };
            if let Some(old) = self.held_offers.insert(from, held) {
                self.refuse_offer(from, old.session);
            }
            return;
        }
        if !self.agent.node().children.contains(from) {
            self.refuse_offer(from, session);
            return;
        }
        let Some(tracks) = self.node.tracks() else {
            self.send(
                from,
                Body::Refused {
                    session,
                    reason: "not receiving the stream yet".into(),
                },
            );
            return;
        };
        let feeds: Vec<_> = tracks.iter().cloned().collect();
        let slot = self.node.reserve_child_unchecked();
        let (node, client, stream, internal) = (
            self.node.clone(),
            self.client.clone(),
            self.stream.clone(),
            self.internal.clone(),
        );
        tokio::spawn(
            async move {
                let fast_start = node.fast_start && !live;
                let child = Some(from.to_string());
                let body = match child::attach(&node, slot, feeds, sdp, child, fast_start).await {
                    Ok((link, answer)) => {
                        let _ = internal
                            .send(Internal::LegUp {
                                child: from,
                                link: link.clone(),
                            })
                            .await;
                        Body::Answer {
                            session,
                            sdp: answer,
                        }
                    }
                    Err(e) => {
                        tracing::info!(child = %from, error = %e, "cannot answer a child's offer");
                        Body::Refused {
                            session,
                            reason: e.to_string(),
                        }
                    }
                };
                if let Err(e) = client.send_body(from, stream, body).await {
                    tracing::debug!(child = %from, error = %e, "answer not delivered");
                }
            }
            .in_current_span(),
        );
    }

    fn on_leg_up(&mut self, child: NodeId, link: Arc<ChildLink>) {
        if !self.agent.node().children.contains(child) {
            self.node.close_child_later(link.id.clone(), Duration::ZERO);
            return;
        }
        let internal = self.internal.clone();
        let watched = link.clone();
        tokio::spawn(async move {
            watched.wait_closed().await;
            let id = watched.id.clone();
            let _ = internal.send(Internal::LegDown { child, id }).await;
        });
        if let Some(old) = self.legs.insert(child, link) {
            self.node.close_child_later(old.id.clone(), Duration::ZERO);
        }
    }

    fn on_leg_down(&mut self, child: NodeId, id: &str) {
        if self.legs.get(&child).is_some_and(|l| l.id == id) {
            self.legs.remove(&child);
            tracing::info!(%child, "child's media link closed");
            self.handle(Input::ChildLost(child));
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    fn on_overlay(&mut self, ev: gossip::Event) {
        match ev {
            gossip::Event::Record { record, .. } => {
                if record.stream == self.stream {
                    self.handle(Input::Record(record));
                    self.maybe_join();
                }
            }
            gossip::Event::Message {
                from,
                to,
                stream,
                body,
                ..
            } if stream == self.stream && to == self.agent.node().id => match body {
                Body::Tree { msg } => {
                    tracing::debug!(%from, ?msg, "tree message");
                    self.handle(Input::Message { from, msg })
                }
                Body::Offer { session, sdp, live } => self.on_offer(from, session, sdp, live),
                Body::Answer { session, sdp } => self.answer(session, Ok(sdp)),
                Body::Refused { session, reason } => self.answer(session, Err(reason)),
                Body::Probe | Body::Sync | Body::Candidate { .. } => {}
            },
            gossip::Event::Message { .. } => {}
            gossip::Event::PeerDisconnected { node, .. } => {
                if self.up.parent == Some(node) && self.up.connected_at.is_some() {
                    tracing::info!(parent = %node, "overlay connection to the parent closed");
                    self.up.next_probe = Some(Instant::now());
                }
                if self.agent.node().children.contains(node) {
                    self.probe_child(node);
                }
            }
            gossip::Event::PeerConnected { .. } | gossip::Event::Listening { .. } => {}
        }
    }

    fn answer(&mut self, session: u64, result: Result<String, String>) {
        let waiting = lock(&self.answers).remove(&session);
        if let Some(tx) = waiting {
            let _ = tx.send(result);
        }
    }

    fn on_internal(&mut self, int: Internal) {
        match int {
            Internal::Upstream { session, result } => self.on_upstream(session, result),
            Internal::UpstreamDown { session } => {
                if session == self.up.session {
                    tracing::info!("connection to the parent failed");
                    self.up.connected_at = None;
                    if !self.up.speculative {
                        self.parent_lost();
                    }
                }
            }
            Internal::Probe { session, outcome } => self.on_probe(session, outcome),
            Internal::LegUp { child, link } => self.on_leg_up(child, link),
            Internal::LegDown { child, id } => self.on_leg_down(child, &id),
            Internal::Unreachable { node } => {
                let msg = treecast_tree::Message::Reject {
                    reason: treecast_tree::RejectReason::Leaving,
                };
                self.handle(Input::Message { from: node, msg });
            }
            Internal::ChildGone { child } => {
                if self.agent.node().children.contains(child) {
                    tracing::info!(%child, "child unreachable");
                    self.legs.remove(&child);
                    self.handle(Input::ChildLost(child));
                }
            }
        }
    }

    /// Joins once the root is known (a placement on an empty view finds nothing and backs
    /// off for up to a second), or after [`JOIN_WAIT`] regardless.
    fn maybe_join(&mut self) {
        if self.joined {
            return;
        }
        let root_known = self.agent.view().root().is_some();
        if root_known || self.epoch.elapsed() >= JOIN_WAIT {
            self.joined = true;
            self.estimate_pace();
            self.handle(Input::Join);
        }
    }

    /// Sets a first refresh pace from what the view says, before our own figures exist (see
    /// [`Self::pace_refresh`]): the stream's bitrate is the median of what the receiving relays
    /// report, and our sealed record is estimated from its encoded size. The records of our
    /// join then declare the interval we will keep, instead of the floor until our first
    /// refresh, which cost every node one record per newcomer about two minutes after it came.
    /// Our own measurement replaces the estimate once media flows.
    fn estimate_pace(&mut self) {
        let kbps = self
            .agent
            .view()
            .nodes()
            .filter(|n| n.receiving)
            .map(|n| n.link.kbps);
        let record = treecast_tree::NodeRecord {
            stream: self.stream.clone(),
            node: *self.agent.node(),
        };
        let copies = self
            .node
            .overlay_stats
            .lock()
            .ok()
            .map_or(START_COPIES, |s| copies(&s));
        if let Some(per_node) = first_pace(kbps, record.encode().len(), copies, REFRESH_SHARE) {
            tracing::debug!(
                per_node_ms = per_node.as_millis() as u64,
                "refresh pace estimated from the view"
            );
            self.refresh_per_node = per_node;
            self.handle(Input::SetRefreshPerNode(per_node));
        }
    }

    /// Publishes our pending record if its time has come (see [`PublishPace`]).
    fn publish_due(&mut self) {
        let Some(record) = self.publish.due(Instant::now()) else {
            return;
        };
        let n = &record.node;
        tracing::debug!(
            seq = n.seq,
            parent = ?n.parent,
            children = n.children.len(),
            depth = n.depth,
            receiving = n.receiving,
            capacity = n.capacity,
            "publishing"
        );
        let client = self.client.clone();
        // Local (our own event loop): quick; spawned so the loop never waits.
        tokio::spawn(async move {
            if let Err(e) = client.publish(record).await {
                tracing::debug!(error = %e, "publish failed");
            }
        });
    }

    /// Refuses an offer: its sender is not our child.
    fn refuse_offer(&mut self, to: NodeId, session: u64) {
        self.send(
            to,
            Body::Refused {
                session,
                reason: "not a child of this node".into(),
            },
        );
    }

    fn on_health(&mut self) {
        self.ticks += 1;
        self.publish_due();
        // Held offers whose senders did not become children in time.
        let now = Instant::now();
        let expired: Vec<(NodeId, u64)> = self
            .held_offers
            .iter()
            .filter(|(_, o)| now.duration_since(o.since) >= OFFER_HOLD)
            .map(|(n, o)| (*n, o.session))
            .collect();
        for (n, session) in expired {
            self.held_offers.remove(&n);
            self.refuse_offer(n, session);
        }
        self.maybe_join();
        let receiving = self.node.receiving();
        self.client.set_receiving(receiving);
        // Parent loss from silence (probe first: it may be starved itself).
        if self.settings.role != Role::Broadcaster
            && self.agent.is_attached()
            && let Some(silence) = self.silence()
        {
            let due = self.up.next_probe.is_some_and(|t| Instant::now() >= t);
            if due || silence >= SILENCE && self.up.next_probe.is_none() {
                self.up.next_probe = None;
                self.probe_parent();
            }
        }
        // Once a second: link figures and capacity; twice a second: the tree snapshot.
        if self.ticks.is_multiple_of(20) {
            self.report_link(receiving);
            self.measure_capacity();
            let (client, node) = (self.client.clone(), self.node.clone());
            tokio::spawn(async move {
                if let Ok(stats) = client.stats().await {
                    node.gossip_bytes
                        .store(stats.bytes_in + stats.bytes_out, Ordering::Relaxed);
                    node.overlay_bytes
                        .store(stats.overlay_in + stats.overlay_out, Ordering::Relaxed);
                    if let Ok(mut s) = node.overlay_stats.lock() {
                        *s = stats;
                    }
                }
            });
        }
        if self.ticks.is_multiple_of(10) {
            self.publish_info();
        }
        if self.ticks.is_multiple_of(100) {
            self.pace_refresh();
        }
        if self.ticks.is_multiple_of(40) {
            self.protect_neighbours();
        }
    }

    /// Tells the overlay which connections to keep whatever its peer bound: the parent, the
    /// children and the first target of the repair plan. Not the fallbacks after it: they are
    /// the shallowest open slots, the same for every node, and every node dialling them ahead
    /// of need was a herd of handshakes on whoever held an open slot near the top.
    ///
    /// And the nodes whose plans name us first, so that their connection to us is kept at our
    /// end too: the successor of each child (it replaces the child under us), and our siblings
    /// if we are our parent's successor (they attach to us). Without them a quiet 200-relay
    /// swarm opened about one connection every 2 s: the planner dialled, we pruned it as one
    /// we did not need, and it dialled again a minute later.
    fn protect_neighbours(&self) {
        let me = self.agent.node();
        let view = self.agent.view();
        let mut nodes: Vec<NodeId> = me.parent.into_iter().collect();
        nodes.extend(me.children.iter());
        if let Some(plan) = self.agent.repair_plan() {
            nodes.extend(plan.targets.iter().take(1).map(|t| match *t {
                treecast_tree::RepairTarget::Replace { grandparent } => grandparent,
                treecast_tree::RepairTarget::Attach(p) => p,
            }));
        }
        nodes.extend(
            me.children
                .iter()
                .filter_map(|c| treecast_tree::successor(view, c)),
        );
        if let Some(parent) = me.parent
            && treecast_tree::successor(view, parent) == Some(me.id)
        {
            nodes.extend(view.children_of(parent).filter(|&s| s != me.id));
        }
        nodes.sort_unstable();
        nodes.dedup();
        if let Err(e) = self.client.protect(nodes) {
            tracing::debug!(error = %e, "cannot tell the overlay which peers to keep");
        }
    }

    /// Sets the agent's refresh pace so that the refreshes of every node's unchanged record
    /// cost each node [`REFRESH_SHARE`] of the stream on the wire (see
    /// `AgentConfig::refresh_per_node`): from the mean size of the records we sealed, the
    /// gossipsub copies each record byte takes in and out of a node, and the stream's mean
    /// bitrate. All three are measured, so the pace follows the real stream, the real records
    /// and the real mesh. The bitrate counts RTP payload only, a little under what the stream
    /// costs on the wire, so the refreshes stay within their share. Until session 10 the pace
    /// counted the sealed bytes once: on the wire the refreshes cost about five times their
    /// share.
    fn pace_refresh(&mut self) {
        let bytes = self.node.upstream.bytes.load(Ordering::Relaxed);
        let Some((since, base)) = self.pace_from else {
            if bytes > 0 {
                self.pace_from = Some((Instant::now(), bytes));
            }
            return;
        };
        let secs = since.elapsed().as_secs_f64();
        let stream_bytes_s = bytes.saturating_sub(base) as f64 / secs.max(1.0);
        let Some(stats) = self.node.overlay_stats.lock().ok().map(|s| *s) else {
            return;
        };
        // What one of our records costs each node on the wire: its sealed size times the
        // gossipsub bytes, in and out and every copy, per record byte received.
        let record_bytes = (stats.published > 0)
            .then(|| stats.bytes_out as f64 / stats.published as f64 * copies(&stats));
        let (Some(record_bytes), true) = (record_bytes, stream_bytes_s >= 1.0) else {
            return;
        };
        let Some(per_node) = refresh_pace(record_bytes, stream_bytes_s, REFRESH_SHARE) else {
            return;
        };
        let old = self.refresh_per_node.as_secs_f64();
        if (per_node.as_secs_f64() - old).abs() > old * 0.1 {
            tracing::debug!(
                per_node_ms = per_node.as_millis() as u64,
                stream_bytes_s,
                record_bytes,
                "refresh pace"
            );
            self.refresh_per_node = per_node;
            self.handle(Input::SetRefreshPerNode(per_node));
        }
    }

    fn report_link(&mut self, receiving: bool) {
        let c = &self.node.upstream;
        let link = LinkStats {
            kbps: (c.bitrate_bps.load(Ordering::Relaxed) / 1000) as u32,
            loss_permille: (c.fraction_lost.load(Ordering::Relaxed) * 1000 / 256) as u16,
            rtt_ms: (c.rtt_us.load(Ordering::Relaxed) / 1000).min(u64::from(u16::MAX)) as u16,
        };
        self.handle(Input::SetLink { link, receiving });
    }

    /// Capacity = what is declared (slots, or upload over the stream's bitrate), cut to what
    /// the children's loss reports show this node can really deliver.
    fn measure_capacity(&mut self) {
        let stream_kbps = (self.node.upstream.bitrate_bps.load(Ordering::Relaxed) / 1000) as u32;
        let mut declared = self.settings.max_children;
        if let Some(upload) = self.settings.upload_kbps
            && stream_kbps > 0
        {
            declared = declared.min(treecast_tree::capacity_for(upload, stream_kbps));
        }
        if self.settings.role == Role::Viewer && self.settings.upload_kbps.is_none() {
            declared = 0;
        }
        let upstream_lost = if self.settings.role == Role::Broadcaster {
            0
        } else {
            self.node.upstream.fraction_lost.load(Ordering::Relaxed)
        };
        let legs: Vec<_> = self.legs.values().collect();
        let lossy = legs
            .iter()
            .filter(|l| {
                // The loss this node receives with reaches its children too: only what its
                // own upload adds says it is over capacity (as View::is_struggling judges).
                l.counters
                    .fraction_lost
                    .load(Ordering::Relaxed)
                    .saturating_sub(upstream_lost)
                    >= POOR_FRACTION
            })
            .count();
        // Most children lose packets: the upload is short, not one child's link.
        if self.settings.overstate_capacity {
            // A liar keeps its claim; its children's records give it away (View::is_struggling).
        } else if !legs.is_empty() && lossy * 2 > legs.len() {
            let cut = (legs.len() as u8).saturating_sub(1);
            if cut < self.measured_cap {
                tracing::warn!(
                    children = legs.len(),
                    lossy,
                    capacity = cut,
                    "children report loss: lowering capacity"
                );
                self.measured_cap = cut;
                self.capacity_cut_at = Some(Instant::now());
            }
        } else if self
            .capacity_cut_at
            .is_some_and(|t| t.elapsed() >= CAPACITY_HOLD)
        {
            self.measured_cap = self.measured_cap.saturating_add(1);
            self.capacity_cut_at =
                (self.measured_cap < treecast_tree::MAX_CHILDREN as u8).then(Instant::now);
        }
        let capacity = declared.min(self.measured_cap);
        if capacity != self.capacity {
            self.capacity = capacity;
            self.handle(Input::SetCapacity(capacity));
        }
    }

    /// Shares the agent's view and place with the HTTP API.
    fn publish_info(&self) {
        let view = self.agent.view();
        let live = view
            .root()
            .and_then(|r| view.get(r))
            .is_some_and(|r| r.receiving);
        self.node.set_tree(TreeInfo {
            id: Some(self.agent.id().to_string()),
            parent: self.agent.node().parent.map(|p| p.to_string()),
            snapshot: Some(Arc::new(TreeSnapshot::of(view, live))),
        });
    }

    /// Leaves the tree: the agent tells parent and children (awaited, bounded), then the
    /// media links close.
    async fn leave(&mut self) {
        self.handle(Input::Leave);
        let mut sends = Vec::new();
        while let Some(out) = self.agent.poll_output() {
            match out {
                Output::Send { to, msg } => {
                    let (client, stream) = (self.client.clone(), self.stream.clone());
                    sends.push(async move { client.send(to, stream, msg).await });
                }
                Output::Publish(record) => {
                    let _ = self.client.publish(record).await;
                }
                Output::Event(_) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), futures_join_all(sends)).await;
        if let Some(task) = self.up.negotiating.take() {
            task.abort();
        }
        if let Some(peer) = self.up.peer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), peer.pc.close()).await;
        }
    }
}

async fn futures_join_all<F>(futures: Vec<F>)
where
    F: std::future::Future + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        // Spawned onto the set so they run concurrently; results are not needed.
        set.spawn(async move {
            let _ = f.await;
        });
    }
    while set.join_next().await.is_some() {}
}

/// Offers to `parent` (re-offering while it does not count us as its child yet, as after a
/// move whose other half has not reached it) and returns the connection once its tracks
/// started.
async fn offer_to_parent(
    node: &Arc<NodeState>,
    client: &Client,
    stream: &StreamId,
    parent: NodeId,
    repair: bool,
    answers: &Answers,
    sessions: &AtomicU64,
) -> Result<Peer, UpstreamError> {
    let label = parent.to_string();
    // Feeds exist and the old parent still feeds them: a planned switch, so the new path must
    // be live (see `Body::Offer::live`). A repair (the old parent lost, or silent) takes the
    // fast-start GOP instead: it starts at once, and mostly with frames the children have not
    // seen. (A repair used to count as live when the loss was noticed within 250 ms of
    // silence, a closed overlay connection say, and then waited up to a GOP for a keyframe.)
    let live = !repair
        && node.tracks().is_some()
        && node
            .silent_for()
            .is_some_and(|s| s < upstream::SWITCH_SILENCE);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let session = sessions.fetch_add(1, Ordering::Relaxed);
        let result = upstream::connect_via(node, &label, |offer| async move {
            let (tx, rx) = oneshot::channel();
            lock(answers).insert(session, tx);
            let sent = client
                .send_body(
                    parent,
                    stream.clone(),
                    Body::Offer {
                        session,
                        sdp: offer,
                        live,
                    },
                )
                .await;
            let answer = match sent {
                Ok(_) => tokio::time::timeout(ANSWER_TIMEOUT, rx).await,
                Err(e) => {
                    lock(answers).remove(&session);
                    return Err(UpstreamError::BadAnswer(format!(
                        "offer not delivered: {e}"
                    )));
                }
            };
            lock(answers).remove(&session);
            match answer {
                Ok(Ok(Ok(sdp))) => Ok(sdp),
                Ok(Ok(Err(reason))) => Err(UpstreamError::BadAnswer(format!("refused: {reason}"))),
                Ok(Err(_)) | Err(_) => Err(UpstreamError::BadAnswer("no answer".into())),
            }
        })
        .await;
        match result {
            Ok(peer) => return Ok(peer),
            Err(e) if attempt < OFFER_ATTEMPTS => {
                tracing::debug!(%parent, attempt, error = %e, "offer failed; trying again");
                tokio::time::sleep(OFFER_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The gossipsub bytes per record byte the refresh pace counts with: as our overlay measured
/// them (`Stats::copies`, within 1 to [`MAX_COPIES`]), or [`START_COPIES`] until it has.
fn copies(stats: &crate::gossip::Stats) -> f64 {
    stats
        .copies()
        .map_or(START_COPIES, |c| c.clamp(1.0, MAX_COPIES))
}
