//! The `Agent`: the state machine one node runs, in the shape of str0m and quinn-proto.
//!
//! # Driving contract
//!
//! ```text
//! agent.handle(now, input);            // a record, a message, a loss, a command, or Tick
//! while let Some(out) = agent.poll_output() { /* publish, send, react to events */ }
//! let wake = agent.poll_timeout();     // call handle(wake, Input::Tick) at that time
//! ```
//!
//! Time comes in with every call and never goes backwards; randomness (timer jitter) comes from
//! the seed in [`AgentConfig`]. The agent never blocks and never does IO: the shell (or the
//! simulator) publishes [`Output::Publish`] records to the stream's gossip topic, delivers
//! [`Output::Send`] messages to one peer, and sets up or tears down media links on
//! [`Output::Event`]s. Outputs are bounded: each input produces at most a handful (a swap
//! coordinator sends one message per node involved, at most 12).
//!
//! # What it does
//!
//! - **Join**: asks the best placement candidate for a slot, falls back down the ranked list
//!   on a refusal or a timeout, backs off with jitter when there is no candidate.
//! - **Parent side**: the parent is the authority on its own slots; it accepts while it has room
//!   (two racers for one slot cannot both win), refuses nodes of its own ancestry, and gives a
//!   successor its lost child's slot as soon as it learns that child is gone.
//! - **Repair**: keeps a [`Repair`] plan computed ahead of time; when told the parent is lost
//!   ([`Input::ParentLost`], from media silence or a failed connection, or when the parent's
//!   record expires) it walks that plan, keeping its own children throughout.
//! - **Promotion**: now and then moves to a free slot much higher up ([`crate::plan_move`]),
//!   or else checks [`crate::plan_promotion`] and asks the weaker node, which coordinates the
//!   swap by sending every node involved its new place ([`Message::Move`]).
//! - **Gossip**: republishes its own record on change and, when nothing changed, every
//!   [`Agent::refresh_interval`] (jittered; the record declares it); forgets nodes silent
//!   for `ttl` or three of their declared intervals, and follows its parent's depth.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::id::{NodeId, StreamId, Time};
use crate::message::{Message, RejectReason};
use crate::placement::plan_move;
use crate::placement::{Avoid, place};
use crate::promotion::{plan_promotion_avoiding, swap};
use crate::record::{Children, DETACHED, LinkStats, MAX_DEPTH, Node, NodeRecord, Role};
use crate::repair::{Repair, RepairTarget, plan_repair, plan_shed};
use crate::view::{Merge, POOR_LOSS_PERMILLE, View, adds_poor_loss};

/// Settings of one agent. Defaults are documented on [`AgentConfig::new`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's record at start (id, role, capacity, platform, reachability).
    pub node: Node,
    /// The stream.
    pub stream: StreamId,
    /// The stream's root, if known: broadcaster records from others are rejected.
    pub root: Option<NodeId>,
    /// First record seq; the shell passes wall-clock milliseconds so restarts publish newer records.
    pub seq_start: u64,
    /// Seed for timer jitter.
    pub seed: u64,
    /// How often the own record is republished without a change, at least (see
    /// `refresh_per_node`; at most [`MAX_REFRESH`]).
    pub refresh: Duration,
    /// Silence after which a node is forgotten, at least (a node that declares a longer
    /// refresh interval is kept for three of them: `Node::lifetime`).
    pub ttl: Duration,
    /// Refresh interval per node in the view (zero: a fixed `refresh`). Every node receives
    /// every refresh, so a swarm of N nodes refreshing every T costs each node N records per
    /// T: with T = N x this, that cost stays the same share of the stream however large the
    /// swarm grows. The shell sets it from the stream's bitrate and its record size
    /// ([`Input::SetRefreshPerNode`]). Capped at [`MAX_REFRESH`].
    pub refresh_per_node: Duration,
    /// How long to wait for an answer to an attach request.
    pub attach_timeout: Duration,
    /// How long a parent holds a successor's request for the slot of a child not yet known lost.
    pub replace_wait: Duration,
    /// How long the slot of a lost child that fed children stays reserved for its successor
    /// (the orphan that asks with `Attach { replaces }`) when the parent noticed the loss first.
    pub slot_hold: Duration,
    /// How much more capacity a node needs to displace another.
    pub promotion_margin: u8,
    /// How many levels higher a free slot must be for a node to move there with its subtree.
    pub move_margin: u16,
    /// Least time between two swaps that raise this node (being displaced by a stronger node
    /// is limited only by a short settling time after each swap).
    pub promotion_interval: Duration,
    /// Least uptime before a node proposes a promotion (its capacity measurement settles).
    pub promotion_min_uptime: Duration,
    /// Housekeeping period: expiry, repair plan refresh.
    pub tick: Duration,
    /// How long the link from the parent may stay poor (loss at or above
    /// [`POOR_LOSS_PERMILLE`]) before the node leaves that parent.
    pub poor_parent_after: Duration,
}

impl AgentConfig {
    /// Defaults: refresh 30 s, ttl 90 s, attach timeout 2 s, replace wait 1 s, slot hold 3 s,
    /// promotion margin 1 slot, move to a free slot at least 2 levels higher, rise by a swap at
    /// most once per 30 s and only after 5 s of uptime, tick 1 s, leave a parent after 10 s of
    /// poor delivery.
    pub fn new(node: Node, stream: StreamId) -> Self {
        AgentConfig {
            node,
            stream,
            root: None,
            seq_start: 1,
            seed: node.id.0,
            refresh: Duration::from_secs(30),
            ttl: Duration::from_secs(90),
            refresh_per_node: Duration::ZERO,
            attach_timeout: Duration::from_secs(2),
            replace_wait: Duration::from_secs(1),
            slot_hold: Duration::from_secs(3),
            promotion_margin: 1,
            move_margin: crate::MOVE_MARGIN,
            promotion_interval: Duration::from_secs(30),
            promotion_min_uptime: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            poor_parent_after: Duration::from_secs(10),
        }
    }
}

/// Something that happened to the agent.
#[derive(Debug, Clone)]
pub enum Input {
    /// Housekeeping time (see [`Agent::poll_timeout`]).
    Tick,
    /// A gossiped record, already checked by the shell to come from its author (or its proxy).
    Record(NodeRecord),
    /// A direct message from another agent.
    Message {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// Start looking for a parent (ignored at the root and while attached).
    Join,
    /// Leave the stream: tell parent and children.
    Leave,
    /// Media from the parent went silent, or the connection to it failed.
    ParentLost,
    /// The link to this child failed.
    ChildLost(NodeId),
    /// A new capacity measurement or declaration.
    SetCapacity(u8),
    /// A new [`AgentConfig::refresh_per_node`] (the stream's bitrate became known or changed).
    SetRefreshPerNode(Duration),
    /// Statistics of the link from the parent, and whether media arrives.
    SetLink {
        /// The statistics.
        link: LinkStats,
        /// Whether media is arriving.
        receiving: bool,
    },
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Publish this record to the stream's gossip topic.
    Publish(NodeRecord),
    /// Deliver this message to one node.
    Send {
        /// The receiver.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Something happened.
    Event(Event),
}

/// What the shell reacts to (media links) and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Attached (or moved) under `parent`: receive media from it.
    Attached {
        /// The new parent.
        parent: NodeId,
        /// The previous parent, if this was a move or repair.
        previous: Option<NodeId>,
        /// The depth now.
        depth: u16,
    },
    /// The parent is lost; repairing (children stay attached and keep being fed what arrives).
    Orphaned {
        /// The lost parent.
        lost: NodeId,
    },
    /// Feed this new child.
    ChildAdded(NodeId),
    /// Stop feeding this child.
    ChildRemoved(NodeId),
    /// No place in the tree right now; retrying.
    NoPlace,
    /// This node coordinated a swap with `up`.
    Swapped {
        /// The stronger node.
        up: NodeId,
        /// The weaker node (this one).
        down: NodeId,
    },
}

#[derive(Debug, Clone)]
enum State {
    /// The root, or not joined yet.
    Idle,
    /// Asking `asking` for a slot; `queue` holds the next candidates.
    Joining {
        asking: NodeId,
        deadline: Time,
        queue: VecDeque<(NodeId, Option<NodeId>)>,
        tried: Vec<NodeId>,
        lost: Option<NodeId>,
    },
    /// No candidate; try again at `until`.
    Backoff { until: Time, lost: Option<NodeId> },
    /// Receiving from a parent.
    Attached,
    /// Gone.
    Left,
}

#[derive(Debug, Clone, Copy)]
struct PendingReplace {
    from: NodeId,
    lost: NodeId,
    deadline: Time,
}

/// One node's tree logic. See the module docs for the driving contract.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    me: Node,
    view: View,
    state: State,
    out: VecDeque<Output>,
    rng: SmallRng,
    started: Time,
    now: Time,
    next_refresh: Time,
    next_tick: Time,
    plan: Option<Repair>,
    plan_stale: bool,
    plan_made: Option<Time>,
    next_promotion_check: Time,
    lost_children: Vec<NodeId>,
    replacing: Vec<PendingReplace>,
    /// Slots of lost children held for their successors, until the deadline.
    held: Vec<(NodeId, Time)>,
    /// While repairing: the lost parent's successor (a sibling), and how often it was asked
    /// again after saying it was not attached yet.
    successor: Option<(NodeId, u8)>,
    /// While repairing as the successor of this lost parent: its other children may attach
    /// to us before we are attached again.
    succeeding: Option<NodeId>,
    /// When this node last rose by a swap it proposed (the rate limit of proposals).
    last_promotion: Option<Time>,
    /// When this node last took part in a swap, either side.
    last_swap: Option<Time>,
    /// The node asked to swap with us, and when to stop waiting for its answer.
    swap_target: Option<(NodeId, Time)>,
    /// Nodes that refused (or did not answer) a swap, and until when not to ask them again.
    refused: Vec<(NodeId, Time)>,
    dirty: bool,
    poor_since: Option<Time>,
    /// The band of loss on the parent's link our last records carried (see [`loss_band`]),
    /// and since when the measurements say another, if they do.
    band_published: u16,
    band_change: Option<Time>,
    /// Whether our last record said media arrives, and since when it has not, if it has not.
    receiving_published: bool,
    silent_since: Option<Time>,
    shunned: Vec<(NodeId, Time)>,
    /// A move to a higher free slot under way: the target and when to give up.
    moving: Option<(NodeId, Time)>,
    /// Neighbours whose records disagree with ours, and since when (see `reconcile`).
    suspects: Vec<(NodeId, Time)>,
    /// The view is the shell's, lent for each call (see [`Agent::new_shared`]): records,
    /// expiry and our own record are the shell's business.
    shared: bool,
    /// Nodes the shared view forgot since our last housekeeping tick.
    forgotten: Vec<NodeId>,
}

/// How many candidates a join or repair ranks at once.
const CANDIDATES: usize = 8;
/// The longest refresh interval [`AgentConfig::refresh_per_node`] leads to: past it a larger
/// swarm costs more gossip rather than keep records of the departed for hours.
pub const MAX_REFRESH: Duration = Duration::from_secs(30 * 60);
/// How many times an orphan asks its lost parent's successor again when the successor is not
/// attached yet (it is taking the lost parent's slot at that moment; each ask is a round trip).
const SUCCESSOR_RETRIES: u8 = 3;
/// A repair plan is recomputed when the neighbourhood changes, and at least this often.
const PLAN_MAX_AGE: Duration = Duration::from_secs(10);
/// How long a relation may stay one-sided before it is undone (see `Agent::reconcile`).
const RECONCILE_GRACE: Duration = Duration::from_secs(3);
/// How long after taking part in a swap a node refuses to take part in another, so that the
/// records of the first reach the others before a second is planned.
const SWAP_SETTLE: Duration = Duration::from_secs(5);
/// How long a node stays away from a parent it left for poor delivery.
const SHUN_FOR: Duration = Duration::from_secs(300);
/// How long a new band of loss on the parent's link must hold before our record says so: a
/// loss burst (a CPU stall, a switch of parents) must not make every node republish, and
/// every node merge, a record per burst.
const BAND_SETTLE: Duration = Duration::from_secs(3);
/// How long media must stay away before our record says so. A repair ends most silences
/// within a second; one that takes longer than the shell's one-second sample of "receiving"
/// would otherwise make every node below the lost relay publish twice (silent, then
/// receiving again). Nothing places or repairs by this flag: it tells the tree API, and the
/// loss rule (`adds_poor_loss`), how things stand.
const SILENCE_SETTLE: Duration = Duration::from_secs(3);

/// Loss in bands of half the poor threshold: a record is republished when its author's loss
/// moves to another band, so children can tell the loss their parent adds from the loss it
/// receives with (a parent with 7% loss says so, and a child with 14% sees 7% added).
fn loss_band(loss_permille: u16) -> u16 {
    (loss_permille / (POOR_LOSS_PERMILLE / 2)).min(8)
}
/// How often a node looks for a promotion or a move to a higher free slot (jittered).
/// Promotions are further limited to one per `promotion_interval`; moves only ever go up, so
/// they need no limit beyond this.
pub const PROMOTION_CHECK: Duration = Duration::from_secs(5);

impl Agent {
    /// A new agent; publishes its first record at once.
    pub fn new(cfg: AgentConfig, now: Time) -> Self {
        Self::make(cfg, now, false)
    }

    /// A new agent that keeps no view of its own: the shell lends it one with every call
    /// ([`Agent::handle_in`], [`Agent::merged_in`]). For a simulator running thousands of
    /// agents that all hear the same records at the same times: one view merged once, instead
    /// of every agent merging every record into its own copy.
    ///
    /// The contract, for the agent to decide exactly as one with its own view would:
    /// - the lent view holds every record the agent has heard, with the time it heard each,
    ///   and, in place of what others heard of this node, the newest record the agent
    ///   published ([`View::replace`]), as its own view would;
    /// - when the shell merges a record into the view, it calls [`Agent::merged_in`] with
    ///   the outcome for every agent that record may concern (its parent and children, the
    ///   nodes it names as parent or children, and their children); the agent never merges
    ///   and never writes to the view;
    /// - the shell expires silent nodes from the view (after the agents' `ttl`) and tells
    ///   the agent with [`Agent::forget`]; it reacts (a lost parent or child) at its next
    ///   housekeeping tick, as it does to its own expiry.
    pub fn new_shared(cfg: AgentConfig, now: Time) -> Self {
        Self::make(cfg, now, true)
    }

    fn make(cfg: AgentConfig, now: Time, shared: bool) -> Self {
        let mut view = View::new(cfg.stream.clone());
        if let Some(root) = cfg.root {
            view.set_trusted_root(root);
        }
        let mut me = cfg.node;
        me.seq = cfg.seq_start;
        me.parent = None;
        me.children = Children::new();
        me.depth = if me.role == Role::Broadcaster {
            0
        } else {
            DETACHED
        };
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let first_refresh = now + jitter(&mut rng, cfg.refresh);
        let mut a = Agent {
            next_tick: now + cfg.tick,
            cfg,
            me,
            view,
            state: State::Idle,
            out: VecDeque::new(),
            rng,
            started: now,
            now,
            next_refresh: first_refresh,
            plan: None,
            plan_stale: true,
            plan_made: None,
            next_promotion_check: now + PROMOTION_CHECK,
            lost_children: Vec::new(),
            held: Vec::new(),
            successor: None,
            succeeding: None,
            replacing: Vec::new(),
            last_promotion: None,
            last_swap: None,
            swap_target: None,
            refused: Vec::new(),
            dirty: true,
            poor_since: None,
            band_published: 0,
            band_change: None,
            receiving_published: false,
            silent_since: None,
            shunned: Vec::new(),
            moving: None,
            suspects: Vec::new(),
            shared,
            forgotten: Vec::new(),
        };
        a.flush();
        a
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// This node's current record.
    pub fn node(&self) -> &Node {
        &self.me
    }

    /// The tree as this node knows it (empty for an agent made with [`Agent::new_shared`]:
    /// its view is the shell's).
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The repair plan held for the loss of the current parent.
    pub fn repair_plan(&self) -> Option<&Repair> {
        self.plan.as_ref()
    }

    /// Whether this node is receiving from a parent (or is the root).
    pub fn is_attached(&self) -> bool {
        self.me.role == Role::Broadcaster || matches!(self.state, State::Attached)
    }

    /// Whether something this node started is under way: a join or repair waiting for an
    /// answer, an orphan backing off before its next try, a move or swap not yet answered, a
    /// held successor request, or a one-sided relation waiting to be reconciled. A newcomer
    /// backing off (no slot anywhere) is not busy: it waits for the tree to change. Scenario
    /// tests and the simulator ask whether the tree is settled only when no node is busy and
    /// nothing is in flight: depths follow parents one gossip delay per level, so a tree in
    /// the middle of a swap is consistent only once the swap is done.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.state,
            State::Joining { .. } | State::Backoff { lost: Some(_), .. }
        ) || self.moving.is_some()
            || self.swap_target.is_some()
            || !self.replacing.is_empty()
            || !self.suspects.is_empty()
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Time, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Tick => self.on_tick(),
            Input::Record(rec) => self.on_record(rec),
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::Join => {
                if matches!(self.state, State::Idle) && self.me.role != Role::Broadcaster {
                    self.start_join(None);
                }
            }
            Input::Leave => self.leave(),
            Input::ParentLost => self.on_parent_lost(),
            Input::ChildLost(c) => self.on_child_lost(c),
            Input::SetCapacity(c) => {
                let c = c.min(crate::MAX_CHILDREN as u8);
                if c != self.me.capacity {
                    self.me.capacity = c;
                    self.dirty = true;
                }
            }
            Input::SetLink { link, receiving } => self.on_link(link, receiving),
            Input::SetRefreshPerNode(d) => self.cfg.refresh_per_node = d,
        }
        self.flush();
    }

    /// [`Agent::handle`] for an agent made with [`Agent::new_shared`], over the shell's
    /// `view` (see there for what it must hold); the agent only reads it. An
    /// [`Input::Record`] is ignored here: the shell merges records and calls
    /// [`Agent::merged_in`]. An agent with its own view ignores `view`.
    pub fn handle_in(&mut self, view: &mut View, now: Time, input: Input) {
        if !self.shared {
            return self.handle(now, input);
        }
        if matches!(input, Input::Record(_)) {
            return;
        }
        self.lend(view, |a| a.handle(now, input));
    }

    /// The shell merged a record of `id` into the lent `view` (heard at `now`), with outcome
    /// `merge`: the agent reacts as it does to a record it merged itself. Only for an agent
    /// made with [`Agent::new_shared`].
    pub fn merged_in(&mut self, view: &mut View, now: Time, id: NodeId, merge: Merge) {
        if !self.shared || id == self.me.id {
            return;
        }
        self.lend(view, |a| {
            a.now = a.now.max(now);
            a.after_merge(id, merge);
            a.flush();
        });
    }

    /// The shell's view forgot these nodes (silent for `ttl`): the agent reacts at its next
    /// housekeeping tick. Only for an agent made with [`Agent::new_shared`].
    pub fn forget(&mut self, ids: &[NodeId]) {
        if self.shared {
            self.forgotten
                .extend(ids.iter().copied().filter(|&id| id != self.me.id));
        }
    }

    /// Runs `f` with the shell's view in place of our own (empty) one.
    fn lend(&mut self, view: &mut View, f: impl FnOnce(&mut Self)) {
        std::mem::swap(&mut self.view, view);
        f(self);
        std::mem::swap(&mut self.view, view);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call `handle(_, Input::Tick)` next.
    pub fn poll_timeout(&self) -> Option<Time> {
        if matches!(self.state, State::Left) {
            return None;
        }
        let mut t = self
            .next_tick
            .min(self.next_refresh)
            .min(self.next_promotion_check);
        match self.state {
            State::Joining { deadline, .. } => t = t.min(deadline),
            State::Backoff { until, .. } => t = t.min(until),
            _ => {}
        }
        for r in &self.replacing {
            t = t.min(r.deadline);
        }
        Some(t)
    }

    // ---- inputs -------------------------------------------------------------------------

    fn on_tick(&mut self) {
        let now = self.now;
        if now >= self.next_tick {
            self.next_tick = now + self.cfg.tick;
            self.expire();
            self.reconcile();
        }
        if now >= self.next_promotion_check {
            self.next_promotion_check = now + jitter(&mut self.rng, PROMOTION_CHECK);
            self.maybe_promote();
        }
        if now >= self.next_refresh {
            let every = self.refresh_interval();
            self.next_refresh = now + jitter(&mut self.rng, every);
            self.dirty = true;
        }
        if self.moving.is_some_and(|(_, deadline)| now >= deadline) {
            self.moving = None; // a late Accept is answered with Detach
        }
        if let Some((target, deadline)) = self.swap_target
            && now >= deadline
        {
            self.swap_target = None; // a late Move leaves one-sided relations: reconciled
            self.refuse(target);
        }
        // Held successor requests whose child did not turn out lost.
        let (due, keep): (Vec<_>, Vec<_>) = self.replacing.iter().partition(|r| now >= r.deadline);
        self.replacing = keep;
        for r in due {
            self.answer_attach(r.from);
        }
        match self.state.clone() {
            State::Joining {
                deadline, asking, ..
            } if now >= deadline => {
                // No answer in time: a late Accept will be answered with Detach.
                self.next_candidate(Some(asking));
            }
            // After one round without a place, stop avoiding the lost parent's subtree: the
            // parent may be back (a false alarm), and the candidate's own cycle check guards
            // the rest.
            State::Backoff { until, lost } if now >= until => {
                self.start_join(None);
                // Still an orphan of `lost` (for `is_busy` and the Attached event).
                match &mut self.state {
                    State::Joining { lost: l, .. } | State::Backoff { lost: l, .. } => *l = lost,
                    _ => {}
                }
            }
            _ => {}
        }
        let plan_old = self.plan_made.is_none_or(|t| now.since(t) >= PLAN_MAX_AGE);
        if (self.plan_stale || plan_old) && matches!(self.state, State::Attached) {
            self.plan_made = Some(now);
            self.plan = plan_repair(&self.view, self.me.id, CANDIDATES);
            self.plan_stale = false;
        }
    }

    /// Heals one-sided relations, whatever left them (a lost message, a move whose other half
    /// did not apply): a child that, in records newer than our listing of it, names another
    /// parent for `RECONCILE_GRACE` is dropped; a parent that does not list us for that long
    /// counts as lost. Gossip needs a moment to carry the other side's record, hence the grace.
    fn reconcile(&mut self) {
        let now = self.now;
        let seen = self.note_suspects();
        for id in seen {
            let since = self
                .suspects
                .iter()
                .find(|(s, _)| *s == id)
                .map_or(now, |&(_, t)| t);
            if now.since(since) < RECONCILE_GRACE {
                continue;
            }
            self.suspects.retain(|(s, _)| *s != id);
            if self.me.children.contains(id) {
                self.remove_child(id);
            } else if self.me.parent == Some(id) {
                self.on_parent_lost();
            }
        }
    }

    /// Updates `suspects` (the neighbours whose records disagree with ours, and since when)
    /// and returns them. Run as soon as a neighbour's record arrives, not only on the next
    /// tick, so that `is_busy` covers a one-sided relation from the moment this node can
    /// know of it.
    fn note_suspects(&mut self) -> Vec<NodeId> {
        let now = self.now;
        let mut seen = Vec::new();
        for c in self.me.children {
            if self
                .view
                .get(c)
                .is_some_and(|n| n.parent != Some(self.me.id))
            {
                seen.push(c);
            }
        }
        if matches!(self.state, State::Attached)
            && self.moving.is_none()
            && let Some(p) = self.me.parent
            && self
                .view
                .get(p)
                .is_some_and(|pn| !pn.children.contains(self.me.id))
        {
            seen.push(p);
        }
        self.suspects.retain(|(id, _)| seen.contains(id));
        for &id in &seen {
            if !self.suspects.iter().any(|(s, _)| *s == id) {
                self.suspects.push((id, now));
            }
        }
        seen
    }

    fn on_record(&mut self, rec: NodeRecord) {
        if rec.node.id == self.me.id {
            return; // nobody speaks for this node but itself
        }
        if self.shared {
            return; // the shell merges (see `merged_in`)
        }
        let id = rec.node.id;
        let Ok(merge) = self.view.merge(&rec, self.now) else {
            return;
        };
        self.after_merge(id, merge);
    }

    /// What a merged record of `id` changes for us.
    fn after_merge(&mut self, id: NodeId, merge: Merge) {
        // The repair plan depends on the parent, the grandparent and the siblings; other
        // changes only touch its fallbacks, which are re-ranked anyway when they run out.
        if merge == Merge::Updated || merge == Merge::Inserted {
            let parent = self.me.parent;
            let near = Some(id) == parent
                || parent.is_some_and(|p| {
                    self.view
                        .get(p)
                        .is_some_and(|pn| pn.parent == Some(id) || pn.children.contains(id))
                });
            if near {
                self.plan_stale = true;
            }
        }
        if Some(id) == self.me.parent || self.me.children.contains(id) {
            self.note_suspects();
        }
        // Follow the parent's depth, once it is attached itself.
        if self.me.parent == Some(id)
            && matches!(self.state, State::Attached)
            && let Some(p) = self.view.get(id)
            && p.depth != DETACHED
            && p.depth < MAX_DEPTH
            && self.me.depth != p.depth + 1
        {
            self.me.depth = p.depth + 1;
            self.dirty = true;
        }
    }

    fn on_message(&mut self, from: NodeId, msg: Message) {
        if matches!(self.state, State::Left) {
            if let Message::Attach { .. } = msg {
                self.send(
                    from,
                    Message::Reject {
                        reason: RejectReason::Leaving,
                    },
                );
            }
            return;
        }
        match msg {
            Message::Attach { replaces } => self.on_attach(from, replaces),
            Message::Accept { depth } => self.on_accept(from, depth),
            Message::Reject { .. } if self.moving.is_some_and(|(to, _)| to == from) => {
                self.moving = None;
            }
            Message::Reject { reason } => {
                if matches!(self.state, State::Joining { asking, .. } if asking == from)
                    && !(matches!(reason, RejectReason::NotAttached | RejectReason::Full)
                        && self.ask_successor_again(from))
                {
                    self.next_candidate(Some(from));
                }
            }
            Message::Detach => {
                if self.me.children.contains(from) {
                    self.remove_child(from);
                }
                if self.me.parent == Some(from) {
                    self.on_parent_lost();
                }
            }
            Message::SwapRequest { parent, children } => {
                self.on_swap_request(from, parent, children)
            }
            Message::Adopt { nodes } => self.on_adopt(from, nodes),
            Message::SwapReject => {
                if self.swap_target.is_some_and(|(t, _)| t == from) {
                    self.swap_target = None;
                    self.refuse(from);
                }
            }
            Message::Move {
                from_parent,
                to_parent,
                remove,
                add,
            } => self.on_move(from, from_parent, to_parent, remove, add),
        }
    }

    fn on_parent_lost(&mut self) {
        let Some(lost) = self.me.parent else { return };
        if !matches!(self.state, State::Attached) {
            return;
        }
        self.emit(Event::Orphaned { lost });
        // Keep the plan if it was made for this parent; otherwise plan from what we know now.
        let plan = match self.plan.take() {
            Some(p) if p.lost == lost => Some(p),
            _ => plan_repair(&self.view, self.me.id, CANDIDATES),
        };
        // The sibling this plan goes to first is the successor it counted on (not whoever
        // `successor` would name now: a sibling that took children since has fewer spare slots).
        self.succeeding = plan
            .as_ref()
            .is_some_and(|p| matches!(p.targets.first(), Some(RepairTarget::Replace { .. })))
            .then_some(lost);
        self.successor = plan.as_ref().and_then(|p| match p.targets.first() {
            Some(&RepairTarget::Attach(s)) if self.view.children_of(lost).any(|c| c == s) => {
                Some((s, 0))
            }
            _ => None,
        });
        // The successor makes room for its siblings at once, before they ask.
        if plan
            .as_ref()
            .is_some_and(|p| matches!(p.targets.first(), Some(RepairTarget::Replace { .. })))
        {
            let others = self
                .view
                .children_of(lost)
                .filter(|&c| c != self.me.id)
                .count();
            self.make_room(others);
        }
        self.me.parent = None;
        self.me.depth = DETACHED;
        self.dirty = true;
        let queue: VecDeque<(NodeId, Option<NodeId>)> = plan
            .map(|p| {
                p.targets
                    .iter()
                    .map(|t| match *t {
                        RepairTarget::Replace { grandparent } => (grandparent, Some(lost)),
                        RepairTarget::Attach(n) => (n, None),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.ask_next(queue, vec![lost], Some(lost));
    }

    /// Frees `need` slots by handing the weakest children to the strongest one (which does the
    /// same further down if it must): see `plan_shed`.
    fn make_room(&mut self, need: usize) {
        let Some(steps) = plan_shed(&self.view, self.me.id, need) else {
            return;
        };
        let Some(first) = steps.first() else { return };
        let (to, nodes) = (first.to, first.nodes);
        let none = Children::new();
        for n in nodes {
            let msg = Message::Move {
                from_parent: Some(self.me.id),
                to_parent: Some(to),
                remove: none,
                add: none,
            };
            self.send(n, msg);
            self.remove_child(n);
        }
        self.send(to, Message::Adopt { nodes });
    }

    fn on_adopt(&mut self, from: NodeId, nodes: Children) {
        if self.me.parent != Some(from) || nodes.contains(self.me.id) || nodes.contains(from) {
            return;
        }
        self.make_room(nodes.len());
        for n in nodes {
            self.take_child(n);
        }
    }

    fn on_child_lost(&mut self, child: NodeId) {
        if !self.lost_children.contains(&child) {
            self.lost_children.push(child);
            if self.lost_children.len() > 16 {
                self.lost_children.remove(0);
            }
        }
        if let Some(i) = self.replacing.iter().position(|r| r.lost == child) {
            let r = self.replacing.remove(i);
            self.remove_child(child);
            self.answer_attach(r.from);
        } else if self.me.children.contains(child) {
            self.remove_child(child);
            // Noticed before any orphan asked: keep the slot for the successor, which takes the
            // lost node's place with its siblings under it. Without the hold, a node moving up
            // to a free slot (or a newcomer) takes it first and the whole orphaned subtree goes
            // one level deeper, each orphan on its own. A leaf leaves no orphans to wait for.
            let fed_children = self.view.get(child).is_some_and(|n| !n.children.is_empty());
            if fed_children && self.held.len() < crate::MAX_CHILDREN {
                self.held.push((child, self.now + self.cfg.slot_hold));
            }
        }
    }

    fn on_link(&mut self, link: LinkStats, receiving: bool) {
        // The loss this hop adds: under a lossy or overloaded path, every node below sees the
        // loss of the hops above it.
        let parent = self.me.parent.and_then(|p| self.view.get(p));
        let poor = receiving && adds_poor_loss(link.loss_permille, parent);
        // Others judge the parent, and our children this node, by these figures: publish when
        // the band of loss changes and holds.
        // Media arriving is news at once (a newcomer's first frames, a subtree back after a
        // silence that was published); silence once it holds (see `SILENCE_SETTLE`).
        if receiving == self.receiving_published {
            self.silent_since = None;
        } else if receiving {
            self.dirty = true;
        } else {
            let since = *self.silent_since.get_or_insert(self.now);
            if self.now.since(since) >= SILENCE_SETTLE {
                self.dirty = true;
            }
        }
        let band = if receiving {
            loss_band(link.loss_permille)
        } else {
            0
        };
        if band == self.band_published {
            self.band_change = None;
        } else {
            let since = *self.band_change.get_or_insert(self.now);
            if self.now.since(since) >= BAND_SETTLE {
                self.band_published = band;
                self.band_change = None;
                self.dirty = true;
            }
        }
        self.me.link = link;
        self.me.receiving = receiving;
        match (poor, self.poor_since) {
            (false, _) => self.poor_since = None,
            (true, None) => self.poor_since = Some(self.now),
            (true, Some(since)) => {
                if self.now.since(since) >= self.cfg.poor_parent_after
                    && let (Some(parent), State::Attached) = (self.me.parent, &self.state)
                {
                    // The parent does not deliver what it promised: leave it for the repair plan's
                    // next best, and do not go back to it for a while.
                    self.poor_since = None;
                    self.shun(parent);
                    self.send(parent, Message::Detach);
                    self.on_parent_lost();
                }
            }
        }
    }

    /// Does not ask `id` for a swap again for one promotion interval.
    fn refuse(&mut self, id: NodeId) {
        let until = self.now + self.cfg.promotion_interval;
        self.refused.retain(|&(n, _)| n != id);
        if self.refused.len() >= 16 {
            self.refused.remove(0);
        }
        self.refused.push((id, until));
    }

    fn shun(&mut self, id: NodeId) {
        let until = self.now + SHUN_FOR;
        self.shunned.retain(|&(n, t)| n != id && t > self.now);
        if self.shunned.len() >= 16 {
            self.shunned.remove(0);
        }
        self.shunned.push((id, until));
    }

    fn shunned_ids(&self) -> Vec<NodeId> {
        self.shunned
            .iter()
            .filter(|&&(_, t)| t > self.now)
            .map(|&(n, _)| n)
            .collect()
    }

    // ---- parent side --------------------------------------------------------------------

    fn on_attach(&mut self, from: NodeId, replaces: Option<NodeId>) {
        if let Some(lost) = replaces
            && self.me.children.contains(lost)
            && self.me.spare() == 0
        {
            if self.lost_children.contains(&lost) {
                self.remove_child(lost);
            } else {
                // Hold the request until the shell confirms the loss or the wait ends.
                if self.replacing.len() < crate::MAX_CHILDREN * 2 {
                    let deadline = self.now + self.cfg.replace_wait;
                    self.replacing.push(PendingReplace {
                        from,
                        lost,
                        deadline,
                    });
                } else {
                    self.send(
                        from,
                        Message::Reject {
                            reason: RejectReason::Full,
                        },
                    );
                }
                return;
            }
        }
        // A successor (or the lost child itself, back after all) claims its held slot.
        if let Some(i) = self
            .held
            .iter()
            .position(|&(lost, _)| Some(lost) == replaces || lost == from)
        {
            self.held.remove(i);
        }
        self.answer_attach(from);
    }

    fn answer_attach(&mut self, from: NodeId) {
        let now = self.now;
        self.held.retain(|&(_, until)| until > now);
        // Attached means more than having a parent: the parent's chain must reach the root in
        // this node's view. A node inside a subtree whose top is repairing (and has said so)
        // takes no children, so two repairing subtrees cannot adopt each other.
        let chain_ok = self.me.role == Role::Broadcaster
            || self
                .me
                .parent
                .is_some_and(|p| self.view.depth_avoiding(p, &[self.me.id]).is_some());
        // The successor takes its siblings while it is still asking for the lost parent's
        // slot: they arrive together. No cycle: it asks only outside the lost subtree, and a
        // sibling asks it only when the sibling's plan names it successor (so the sibling
        // does not take children this way itself).
        let sibling_depth = match (&self.state, self.succeeding) {
            (State::Joining { lost: Some(l), .. }, Some(s)) if *l == s => self
                .view
                .get(s)
                .filter(|n| n.children.contains(from) && n.depth < MAX_DEPTH)
                .map(|n| n.depth),
            _ => None,
        };
        // (Our depth once in the lost parent's place is the lost parent's.)
        if let Some(depth) = sibling_depth
            && (self.me.children.contains(from) || self.me.spare() > self.held.len())
        {
            self.take_child(from);
            self.send(from, Message::Accept { depth: depth + 1 });
            return;
        }
        let reason = if !self.is_attached() || !chain_ok {
            Some(RejectReason::NotAttached)
        } else if self.me.depth >= MAX_DEPTH || self.view.in_subtree(self.me.id, from) {
            Some(RejectReason::Cycle)
        } else if !self.me.children.contains(from) && self.me.spare() <= self.held.len() {
            Some(RejectReason::Full)
        } else {
            None
        };
        match reason {
            Some(reason) => self.send(from, Message::Reject { reason }),
            None => {
                self.take_child(from);
                self.send(
                    from,
                    Message::Accept {
                        depth: self.me.depth + 1,
                    },
                );
            }
        }
    }

    /// Counts `child` as ours (it is no longer a lost one).
    fn take_child(&mut self, child: NodeId) {
        if self.me.children.insert(child) {
            self.lost_children.retain(|&c| c != child);
            self.emit(Event::ChildAdded(child));
            self.dirty = true;
        }
    }

    fn remove_child(&mut self, child: NodeId) {
        if self.me.children.remove(child) {
            self.emit(Event::ChildRemoved(child));
            self.dirty = true;
        }
    }

    // ---- child side ---------------------------------------------------------------------

    fn start_join(&mut self, lost: Option<NodeId>) {
        let mut nodes = self.shunned_ids();
        nodes.extend(lost);
        let avoid = Avoid {
            nodes,
            subtrees: lost.into_iter().collect(),
            max_depth: None,
        };
        let queue = self.ranked(&avoid);
        self.ask_next(queue, lost.into_iter().collect(), lost);
    }

    /// The placement's candidates, shuffled among those of equal depth: every joiner ranks the
    /// same view the same way, and without this a crowd arriving at once would all ask the same
    /// parent first (only one wins each slot; the rest would walk the same list in lockstep).
    fn ranked(&mut self, avoid: &Avoid) -> VecDeque<(NodeId, Option<NodeId>)> {
        let mut c = place(&self.view, self.me.id, avoid, CANDIDATES * 2).candidates;
        let mut start = 0;
        while start < c.len() {
            let depth = c[start].depth;
            let end = c[start..]
                .iter()
                .position(|x| x.depth != depth)
                .map_or(c.len(), |n| start + n);
            for i in (start + 1..end).rev() {
                let j = self.rng.random_range(start..=i);
                c.swap(i, j);
            }
            start = end;
        }
        c.truncate(CANDIDATES);
        c.into_iter().map(|c| (c.parent, None)).collect()
    }

    fn ask_next(
        &mut self,
        mut queue: VecDeque<(NodeId, Option<NodeId>)>,
        tried: Vec<NodeId>,
        lost: Option<NodeId>,
    ) {
        while let Some((p, replaces)) = queue.pop_front() {
            if tried.contains(&p) || p == self.me.id {
                continue;
            }
            self.send(p, Message::Attach { replaces });
            self.state = State::Joining {
                asking: p,
                deadline: self.now + self.cfg.attach_timeout,
                queue,
                tried,
                lost,
            };
            return;
        }
        self.emit(Event::NoPlace);
        let wait = Duration::from_millis(500) + jitter(&mut self.rng, Duration::from_millis(500));
        self.state = State::Backoff {
            until: self.now + wait,
            lost,
        };
    }

    /// The lost parent's successor said it is not attached, or full: it is most likely taking
    /// the lost parent's slot right now, or handing its own children down to make room for its
    /// siblings (`plan_shed`), and will have room in a round trip. Asking it again keeps the
    /// orphaned subtree together one level higher than a fallback would.
    fn ask_successor_again(&mut self, from: NodeId) -> bool {
        let Some((s, tries)) = self.successor.as_mut() else {
            return false;
        };
        if *s != from || *tries >= SUCCESSOR_RETRIES {
            return false;
        }
        *tries += 1;
        let State::Joining { deadline, lost, .. } = &mut self.state else {
            return false;
        };
        if lost.is_none() {
            return false;
        }
        *deadline = self.now + self.cfg.attach_timeout;
        self.send(from, Message::Attach { replaces: None });
        true
    }

    fn next_candidate(&mut self, refused: Option<NodeId>) {
        let State::Joining {
            queue,
            mut tried,
            lost,
            ..
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        tried.extend(refused);
        if queue.is_empty() {
            // The ranked list ran out: rank again, without those that refused.
            let mut nodes = tried.clone();
            nodes.extend(self.shunned_ids());
            let avoid = Avoid {
                nodes,
                subtrees: lost.into_iter().collect(),
                max_depth: None,
            };
            let fresh = self.ranked(&avoid);
            self.ask_next(fresh, tried, lost);
        } else {
            self.ask_next(queue, tried, lost);
        }
    }

    fn on_accept(&mut self, from: NodeId, depth: u16) {
        if self.moving.is_some_and(|(to, _)| to == from) && matches!(self.state, State::Attached) {
            // A move: the new parent feeds us now; only then let the old one go.
            self.moving = None;
            if depth == 0 || depth > MAX_DEPTH {
                self.send(from, Message::Detach);
                return;
            }
            let previous = self.me.parent;
            if let Some(old) = previous {
                self.send(old, Message::Detach);
            }
            self.take_parent(from, previous, depth);
            return;
        }
        let asked = matches!(self.state, State::Joining { asking, .. } if asking == from);
        if !asked || depth == 0 || depth > MAX_DEPTH {
            // A late or unexpected yes: free the slot again.
            if self.me.parent != Some(from) {
                self.send(from, Message::Detach);
            }
            return;
        }
        let previous = self.me.parent.or(match &self.state {
            State::Joining { lost, .. } => *lost,
            _ => None,
        });
        self.state = State::Attached;
        self.take_parent(from, previous, depth);
    }

    /// Records `parent` (which accepted us at `depth`) and tells the shell to pull from it.
    fn take_parent(&mut self, parent: NodeId, previous: Option<NodeId>, depth: u16) {
        self.me.parent = Some(parent);
        self.me.depth = depth;
        self.plan_stale = true;
        self.dirty = true;
        self.emit(Event::Attached {
            parent,
            previous,
            depth,
        });
    }

    fn leave(&mut self) {
        if matches!(self.state, State::Left) {
            return;
        }
        if let Some(p) = self.me.parent.take() {
            self.send(p, Message::Detach);
        }
        for c in self.me.children {
            self.send(c, Message::Detach);
        }
        self.me.children = Children::new();
        self.me.depth = if self.me.role == Role::Broadcaster {
            0
        } else {
            DETACHED
        };
        self.me.receiving = false;
        self.state = State::Left;
        self.dirty = true;
    }

    // ---- promotion ----------------------------------------------------------------------

    fn maybe_promote(&mut self) {
        if !matches!(self.state, State::Attached)
            || self.moving.is_some()
            || self.swap_target.is_some()
            || self.now.since(self.started) < self.cfg.promotion_min_uptime
        {
            return;
        }
        let Some(parent) = self.me.parent else { return };
        let may_swap = self
            .last_promotion
            .is_none_or(|t| self.now.since(t) >= self.cfg.promotion_interval);
        // A free slot much higher up comes first: moving there with the whole subtree makes
        // the tree shallower and sends nobody down, while a swap only trades depths (the
        // weaker node lands where the stronger one was, so a swap from deep down keeps the
        // tree as deep as it was). Make-before-break: the current parent is kept until the
        // new one accepts.
        if let Some(to) = plan_move(&self.view, self.me.id, self.cfg.move_margin) {
            self.moving = Some((to.parent, self.now + self.cfg.attach_timeout));
            self.send(to.parent, Message::Attach { replaces: None });
            return;
        }
        let now = self.now;
        self.refused.retain(|&(_, until)| until > now);
        let refused: Vec<NodeId> = self.refused.iter().map(|&(n, _)| n).collect();
        if may_swap
            && let Some(plan) =
                plan_promotion_avoiding(&self.view, self.me.id, self.cfg.promotion_margin, &refused)
            && plan.up == self.me.id
        {
            // The rate limit counts swaps that happen (see `on_move`), not proposals: many
            // nodes ask the same weakest node at once, only one wins, and the others should
            // ask the next weakest at their next check rather than sit out a whole interval.
            self.swap_target = Some((plan.down, self.now + self.cfg.attach_timeout));
            let msg = Message::SwapRequest {
                parent,
                children: self.me.children,
            };
            self.send(plan.down, msg);
        }
    }

    fn on_swap_request(&mut self, from: NodeId, parent: NodeId, children: Children) {
        // A node waiting for the answer to its own proposal takes part in no other swap, nor
        // in one right after another (the records of the last must spread first, or the
        // next would be planned on a stale neighbourhood). Being displaced is not rate
        // limited beyond that: only rising is (one proposal per `promotion_interval`), and
        // every swap moves capacity strictly upward, so displacing a node again soon is
        // progress, not thrash. Limiting it too made one swap per weak node per interval
        // the pace of the whole tree's sorting (docs/tree.md, "Promotion").
        let settle = SWAP_SETTLE.min(self.cfg.promotion_interval);
        let recently = self.swap_target.is_some()
            || self.last_swap.is_some_and(|t| self.now.since(t) < settle);
        // Plan only on facts that agree with what the proposer says of itself right now.
        let fresh = self
            .view
            .get(from)
            .is_some_and(|u| u.parent == Some(parent) && u.children == children);
        let plan =
            if matches!(self.state, State::Attached) && self.moving.is_none() && !recently && fresh
            {
                swap(&self.view, from, self.me.id)
            } else {
                None
            };
        // The swap must still be worth it by this node's own view.
        let worth = plan.is_some()
            && self.view.get(from).is_some_and(|u| {
                u.capacity
                    >= self
                        .me
                        .capacity
                        .saturating_add(self.cfg.promotion_margin.max(1))
            });
        let Some(plan) = plan.filter(|_| worth) else {
            self.send(from, Message::SwapReject);
            return;
        };
        self.last_swap = Some(self.now);
        self.emit(Event::Swapped {
            up: plan.up,
            down: plan.down,
        });
        for p in &plan.placed {
            let (old_parent, old_children) = if p.node == self.me.id {
                (self.me.parent, self.me.children)
            } else {
                match self.view.get(p.node) {
                    Some(n) => (n.parent, n.children),
                    None => continue,
                }
            };
            let remove =
                Children::from_ids(old_children.iter().filter(|c| !p.children.contains(*c)));
            let add = Children::from_ids(p.children.iter().filter(|c| !old_children.contains(*c)));
            let (Some(remove), Some(add)) = (remove, add) else {
                continue;
            };
            let to_parent = (p.parent != old_parent).then_some(p.parent).flatten();
            if p.node == self.me.id {
                self.apply_move(old_parent, to_parent, remove, add);
            } else {
                self.send(
                    p.node,
                    Message::Move {
                        from_parent: old_parent,
                        to_parent,
                        remove,
                        add,
                    },
                );
            }
        }
    }

    fn on_move(
        &mut self,
        from: NodeId,
        from_parent: Option<NodeId>,
        to_parent: Option<NodeId>,
        remove: Children,
        add: Children,
    ) {
        // Only a node this move connects us with may move us; and never into a broken record.
        let related = self.me.parent == Some(from)
            || to_parent == Some(from)
            || self.me.children.contains(from)
            || add.contains(from)
            || self.swap_target.is_some_and(|(t, _)| t == from);
        let me = self.me.id;
        let after =
            |c: NodeId| add.contains(c) || (self.me.children.contains(c) && !remove.contains(c));
        let root_moved = self.me.role == Role::Broadcaster && to_parent.is_some();
        let broken = to_parent == Some(me) || add.contains(me) || to_parent.is_some_and(after);
        let valid = !root_moved && !broken;
        if !related || !valid || !self.is_attached() {
            return;
        }
        if self.swap_target.is_some_and(|(t, _)| t == from) {
            self.swap_target = None;
            self.last_promotion = Some(self.now);
            self.last_swap = Some(self.now);
        }
        self.apply_move(from_parent, to_parent, remove, add);
    }

    fn apply_move(
        &mut self,
        from_parent: Option<NodeId>,
        to_parent: Option<NodeId>,
        remove: Children,
        add: Children,
    ) {
        for c in remove {
            self.remove_child(c);
        }
        for c in add {
            // At most MAX_CHILDREN: a stale plan cannot overfill this node.
            if self.me.children.insert(c) {
                self.emit(Event::ChildAdded(c));
            }
        }
        // Change the parent only if it is still the one the coordinator knew.
        if let Some(parent) = to_parent
            && self.me.parent == from_parent
            && self.me.role != Role::Broadcaster
        {
            let previous = self.me.parent;
            self.me.parent = Some(parent);
            if let Some(p) = self.view.get(parent)
                && p.depth < MAX_DEPTH
            {
                self.me.depth = p.depth + 1;
            }
            // Otherwise keep our depth: the parent's next record fixes it.
            self.emit(Event::Attached {
                parent,
                previous,
                depth: self.me.depth,
            });
        }
        self.plan_stale = true;
        self.dirty = true;
    }

    // ---- gossip -------------------------------------------------------------------------

    /// How often the own record is republished without a change now: `refresh`, or longer in
    /// a large swarm (see [`AgentConfig::refresh_per_node`]).
    pub fn refresh_interval(&self) -> Duration {
        let n = u32::try_from(self.view.len()).unwrap_or(u32::MAX);
        self.cfg
            .refresh
            .max(self.cfg.refresh_per_node.saturating_mul(n))
            .min(MAX_REFRESH)
    }

    fn expire(&mut self) {
        let gone = if self.shared {
            std::mem::take(&mut self.forgotten)
        } else {
            self.view.expire(self.now, self.cfg.ttl, self.me.id)
        };
        for gone in gone {
            self.plan_stale = true;
            if self.me.parent == Some(gone) {
                self.on_parent_lost();
            }
            if self.me.children.contains(gone) {
                self.on_child_lost(gone);
            }
        }
    }

    /// Publishes the own record if it changed (or a refresh is due).
    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // Our relations changed: a new one may be one-sided until the other side publishes.
        self.note_suspects();
        self.me.seq += 1;
        // The record says how long until the next one at the latest, so receivers keep it
        // that long (`Node::lifetime`): the refresh interval, or the time to the refresh
        // already timed if that is further (the interval shrank since).
        let next = self
            .refresh_interval()
            .max(self.next_refresh.since(self.now));
        self.me.refresh_tens = u8::try_from(next.as_secs().div_ceil(10)).unwrap_or(u8::MAX);
        self.me.uptime_s =
            u32::try_from(self.now.since(self.started).as_secs()).unwrap_or(u32::MAX);
        self.receiving_published = self.me.receiving;
        // Our own record is valid by construction; keep it in our view as others see it (a
        // shared view gets it from the shell, see `new_shared`).
        if !self.shared {
            let _ = self.view.merge_node(self.me, self.now);
        }
        self.out.push_back(Output::Publish(NodeRecord {
            stream: self.cfg.stream.clone(),
            node: self.me,
        }));
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }
}

/// `base` minus up to a tenth, so that timers of many nodes spread out.
fn jitter(rng: &mut SmallRng, base: Duration) -> Duration {
    let tenth = base.as_micros() as u64 / 10;
    base - Duration::from_micros(rng.random_range(0..=tenth))
}
