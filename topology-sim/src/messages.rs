//! Message-level mode: every node runs its own [`Agent`]; records and messages travel through a
//! simulated network with delays, in virtual time.
//!
//! The network: records travel in gossip rounds of `GOSSIP_ROUND` (as gossipsub batches what it
//! forwards per heartbeat): the records published during one round reach every other agent
//! together, one gossip delay after the round ends (the one-way latency times the hops of a
//! gossip mesh of degree `gossip_fanout`, about `log_D(n)`). A node that published twice in
//! one round is delivered only its newer record, which merging makes equivalent (a view is a
//! semilattice). A direct message reaches its one receiver after one latency. Both get jitter.
//!
//! All agents hear every round at the same time, so they all hold the same records: they
//! share one view, merged once per record, and each sees its own newest record (and a
//! newcomer its sync) on top of it (see `knowledge.rs`). A record is handed to the agents it
//! may concern ([`Agent::merged_in`]): the children and parent of its node, and, when its
//! place changed, the agents whose parent it names as a child or as its parent (their repair
//! plans); an agent reacts to nothing else in a record. Every agent thus handles what it would
//! if each round were handed to every agent at delivery, at the same times and in the same
//! order, over the view it would have. A newcomer gets the newest record of every live node
//! when it arrives (the sync a shell does from a gossip peer on joining). Silent nodes are
//! forgotten as agents would forget them ([`Agent::forget`]).
//! A crash is noticed by the crashed node's parent
//! and children after the detection time (media silence); a graceful leaver runs
//! `Input::Leave`, whose messages tell its neighbours.
//!
//! Beside the agents the simulator keeps a *truth* view: the latest record each live node
//! published. Metrics and invariant checks look at it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use treecast_tree::{
    Agent, AgentConfig, Children, Event, Input, Merge, Message, Node, NodeId, NodeRecord, Output,
    Role, StreamId, Time, View,
};

use crate::check::{Checker, subtree_size};
use crate::config::{Config, CrashSelect, LeaveKind, ROOT_ID};
use crate::dist;
use crate::fast::Run;
use crate::knowledge::{Knowledge, Relations};
use crate::metrics::{Depths, Shape, Tally};
use crate::queue::Queue;

/// Least time after the scenario's last event before the settled check, so joins, repairs and
/// swaps under way finish.
const SETTLE: Duration = Duration::from_secs(10);
/// After `SETTLE`, the run goes on until the network is quiet (see `Net::quiet`), at most this
/// long: promotions and moves come in waves (every node looks every 5 s, swaps at most once per
/// promotion interval), and a check in the middle of one sees half-done swaps.
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// Records published within one round travel together (see the module docs). Delivering a
/// batch to one agent after another keeps each agent's view in cache for the whole batch,
/// which is what makes thousands of agents affordable.
const GOSSIP_ROUND: Duration = Duration::from_millis(100);
/// Below this many nodes the auto policy checks the whole truth view after every step (lower
/// than fast mode's: here a step is one delivery, and there are many more of them).
const CHECK_ALL_BELOW: usize = 100;

#[derive(Debug, Clone)]
enum Ev {
    Arrive,
    Replace,
    Leave(NodeId),
    Crash(usize),
    /// An agent's timer.
    Wake(NodeId),
    /// A direct message arrives.
    Deliver {
        to: NodeId,
        from: NodeId,
        msg: Message,
    },
    /// The records of one gossip round (by index) reach every other agent.
    Gossip(u64),
    /// Media silence: the node notices its parent is gone.
    ParentLost(NodeId),
    /// The node notices a child is gone.
    ChildLost {
        parent: NodeId,
        child: NodeId,
    },
}

/// One agent, and what the simulator noted of it after its last input.
#[derive(Debug)]
struct Slot {
    agent: Agent,
    /// The timer scheduled for it (an older `Wake` in the queue is stale).
    wake: Option<Time>,
    /// Its parent and children, as `Net::followers` and `Net::feeders` have them.
    parent: Option<NodeId>,
    children: Children,
}

/// The records published during one gossip round.
#[derive(Debug, Default)]
struct Round {
    /// The newest record of each node that published.
    records: Vec<NodeRecord>,
    /// Whether one of them says more than "still here" (see `Net::quiet`).
    changed: bool,
}

/// Runs `cfg` with one agent per node.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(f64)) -> Run {
    let mut net = Net::new(cfg);
    net.run(progress);
    net.finish()
}

struct Net<'c> {
    cfg: &'c Config,
    stream: StreamId,
    rng: SmallRng,
    queue: Queue<Ev>,
    now: Time,
    /// Scenario events stop here; agents run on until `end + SETTLE` and a quiet moment.
    end: Time,
    /// Messages, rounds carrying a changed record, and loss notices on their way: the network
    /// is quiet at 0.
    in_flight: u64,
    /// Gossip rounds published and not yet delivered, by round index.
    rounds: BTreeMap<u64, Round>,
    agents: BTreeMap<NodeId, Slot>,
    /// What the agents know: one view for all, and each one's differences.
    known: Knowledge,
    /// The agents whose parent is the key (as each agent has it, not as gossip does).
    followers: Relations,
    /// The agents listing the key among their children.
    feeders: Relations,
    truth: View,
    arrived: u64,
    next_id: u64,
    /// Orphans repairing: since when, and which parent they lost.
    orphaned: BTreeMap<NodeId, Time>,
    tally: Tally,
    checker: Checker,
}

impl<'c> Net<'c> {
    fn new(cfg: &'c Config) -> Self {
        let stream = StreamId::new("sim").expect("a valid constant stream name");
        let mut truth = View::new(stream.clone());
        truth.set_trusted_root(NodeId(ROOT_ID));
        let known = Knowledge::new(truth.clone());
        let mut net = Net {
            cfg,
            stream,
            rng: SmallRng::seed_from_u64(cfg.seed),
            queue: Queue::default(),
            now: Time::ZERO,
            end: Time::ZERO + Duration::from_secs_f64(cfg.duration),
            in_flight: 0,
            rounds: BTreeMap::new(),
            agents: BTreeMap::new(),
            known,
            followers: Relations::default(),
            feeders: Relations::default(),
            truth,
            arrived: 0,
            next_id: ROOT_ID + 1,
            orphaned: BTreeMap::new(),
            tally: Tally::default(),
            checker: Checker::new(cfg.check, CHECK_ALL_BELOW),
        };
        let root = Node::new(NodeId(ROOT_ID), Role::Broadcaster, cfg.root_capacity);
        net.spawn(root);
        if cfg.viewers > 0 {
            net.queue.push(Time::ZERO, Ev::Arrive);
        }
        for (i, c) in cfg.crashes.iter().enumerate() {
            let at = Time::ZERO + Duration::from_secs_f64(c.at.unwrap_or(0.0));
            net.queue.push(at, Ev::Crash(i));
        }
        net
    }

    fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        let settle = self.end + SETTLE;
        let stop = settle + SETTLE_MAX;
        let mut steps = 0u64;
        while let Some(at) = self.queue.next_at() {
            if at > stop || (self.now >= settle && self.quiet()) {
                break;
            }
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            self.advance(at);
            if matches!(
                ev,
                Ev::Deliver { .. } | Ev::ParentLost(_) | Ev::ChildLost { .. }
            ) {
                self.in_flight -= 1;
            }
            let scenario_over = at > self.end;
            match ev {
                Ev::Arrive | Ev::Replace | Ev::Leave(_) | Ev::Crash(_) if scenario_over => {}
                Ev::Arrive => {
                    self.arrived += 1;
                    if self.arrived < self.cfg.viewers {
                        let gap = self
                            .cfg
                            .join_rate
                            .map_or(0.0, |r| dist::exponential(&mut self.rng, 1.0 / r));
                        let next = self.now + Duration::from_secs_f64(gap);
                        self.queue.push(next, Ev::Arrive);
                    }
                    self.join();
                }
                Ev::Replace => self.join(),
                Ev::Leave(id) => self.fail(&[id], self.cfg.leave),
                Ev::Crash(i) => {
                    let victims = self.pick_victims(i);
                    self.fail(&victims, LeaveKind::Crash);
                }
                Ev::Wake(id) => {
                    if let Some(slot) = self.agents.get_mut(&id)
                        && slot.wake == Some(at)
                    {
                        slot.wake = None;
                        self.input(id, Input::Tick);
                    }
                }
                Ev::Deliver { to, from, msg } => self.input(to, Input::Message { from, msg }),
                Ev::Gossip(round) => {
                    if let Some(round) = self.rounds.remove(&round) {
                        if round.changed {
                            self.in_flight -= 1;
                        }
                        self.deliver(&round.records);
                    }
                }
                Ev::ParentLost(id) => self.input(id, Input::ParentLost),
                Ev::ChildLost { parent, child } => self.input(parent, Input::ChildLost(child)),
            }
            self.checker
                .after_step(&self.truth, self.now, &mut self.tally);
            steps += 1;
            if steps.is_multiple_of(1024) {
                progress(self.now.as_micros() as f64 / stop.as_micros().max(1) as f64);
            }
        }
        if self.now < settle {
            self.advance(settle);
        }
        progress(1.0);
    }

    /// Nothing under way: no message, changed record or loss notice travelling, and no agent
    /// waiting for an answer or reconciling (`Agent::is_busy`). Refreshes that change nothing
    /// may still travel. If every agent follows the protocol, the tree is settled now.
    fn quiet(&self) -> bool {
        self.in_flight == 0 && !self.agents.values().any(|s| s.agent.is_busy())
    }

    fn advance(&mut self, to: Time) {
        let dt = to.since(self.now).as_secs_f64();
        self.tally.node_seconds += dt * self.agents.len() as f64;
        self.now = to;
    }

    /// Starts an agent for `node`, gives it everyone's records and lets it join.
    fn spawn(&mut self, node: Node) {
        let id = node.id;
        let mut ac = AgentConfig::new(node, self.stream.clone());
        ac.root = Some(NodeId(ROOT_ID));
        ac.seed = self.cfg.seed ^ id.0.rotate_left(17);
        ac.refresh = Duration::from_secs_f64(self.cfg.heartbeat);
        ac.ttl = ac.refresh * 3;
        ac.promotion_margin = self.cfg.promotion_margin;
        if self.cfg.promotion_interval > 0.0 {
            ac.promotion_interval = Duration::from_secs_f64(self.cfg.promotion_interval);
        }
        let mut agent = Agent::new_shared(ac, self.now);
        let travelling: BTreeSet<NodeId> = self
            .rounds
            .values()
            .flat_map(|r| r.records.iter().map(|rec| rec.node.id))
            .collect();
        self.known.arrive(id, self.now, &self.truth, travelling);
        let mut outs = Vec::new();
        while let Some(o) = agent.poll_output() {
            outs.push(o);
        }
        self.agents.insert(
            id,
            Slot {
                agent,
                wake: None,
                parent: None,
                children: Children::new(),
            },
        );
        for o in outs {
            self.output(id, o);
        }
        self.input(id, Input::Join);
    }

    fn join(&mut self) {
        let id = NodeId(self.next_id);
        self.next_id += 1;
        let cfg = self.cfg;
        let node = cfg.new_viewer(id, &mut self.rng);
        self.tally.joins += 1;
        if let Some(churn) = cfg.churn {
            let s = dist::session(&mut self.rng, churn.distribution, churn.mean_session);
            self.queue
                .push(self.now + Duration::from_secs_f64(s), Ev::Leave(id));
        }
        self.spawn(node);
    }

    /// Delivers the records of one gossip round: merges each into the gossip view and hands
    /// it to the agents it may concern; then carries out what those ask for, in id order.
    fn deliver(&mut self, records: &[NodeRecord]) {
        self.expire();
        let mut told = BTreeSet::new();
        for rec in records {
            let id = rec.node.id;
            let Some(merge) = self.known.merge(rec, self.now) else {
                continue; // every agent rejects it alike
            };
            // Who reacts to it (see `Agent::after_merge`): its children (they follow its
            // depth) and its parent (reconciliation), and, when its place changed, the agents
            // whose parent it is a child or the parent of (their repair plans). Newcomers
            // that know things gossip does not yet are told everything.
            let mut concerned: Vec<NodeId> =
                self.followers.of(id).chain(self.feeders.of(id)).collect();
            if matches!(merge, Merge::Inserted | Merge::Updated) {
                for p in self.known.related(id) {
                    concerned.extend(self.followers.of(p));
                }
            }
            let agents = &self.agents;
            let parent_of = |a: NodeId| agents.get(&a).and_then(|s| s.parent);
            concerned.extend(self.known.concerned_differently(id, parent_of));
            concerned.sort_unstable();
            concerned.dedup();
            for a in concerned {
                if a == id {
                    continue;
                }
                let now = self.now;
                let merge = self.known.merge_for(a, &rec.node, merge, now);
                if let Some(Slot { agent, .. }) = self.agents.get_mut(&a) {
                    self.known
                        .lend(a, now, |view| agent.merged_in(view, now, id, merge));
                    told.insert(a);
                }
            }
        }
        let mut outs = Vec::new();
        for &id in &told {
            if let Some(Slot { agent, .. }) = self.agents.get_mut(&id) {
                while let Some(o) = agent.poll_output() {
                    outs.push((id, o));
                }
            }
        }
        for (id, o) in outs {
            self.output(id, o);
        }
        for id in told {
            self.after_input(id);
        }
    }

    /// Forgets the nodes silent for the agents' `ttl` and tells the agents that knew them.
    fn expire(&mut self) {
        let ttl = Duration::from_secs_f64(self.cfg.heartbeat) * 3;
        let agents = &mut self.agents;
        self.known.expire(self.now, ttl, |a, gone| {
            if let Some(Slot { agent, .. }) = agents.get_mut(&a) {
                agent.forget(gone);
            }
        });
    }

    /// Feeds one input to an agent and carries out what it asks for.
    fn input(&mut self, id: NodeId, input: Input) {
        if !self.agents.contains_key(&id) {
            return; // gone: messages to it are lost
        }
        self.expire();
        let now = self.now;
        let late = self.known.noticed_late(id, now);
        let mut outs = Vec::new();
        if let Some(Slot { agent, .. }) = self.agents.get_mut(&id) {
            agent.forget(&late);
            self.known
                .lend(id, now, |view| agent.handle_in(view, now, input));
            while let Some(o) = agent.poll_output() {
                outs.push(o);
            }
        }
        for o in outs {
            self.output(id, o);
        }
        self.after_input(id);
    }

    /// Schedules the agent's next timer and notes its parent, after an input.
    fn after_input(&mut self, id: NodeId) {
        let Some(slot) = self.agents.get_mut(&id) else {
            return;
        };
        let wake = slot.agent.poll_timeout().filter(|&t| slot.wake != Some(t));
        if wake.is_some() {
            slot.wake = wake;
        }
        let me = slot.agent.node();
        let parent = std::mem::replace(&mut slot.parent, me.parent);
        self.followers.replace(id, parent, me.parent);
        let children = std::mem::replace(&mut slot.children, me.children);
        if children != me.children {
            self.feeders.replace_all(id, children, me.children);
        }
        if let Some(t) = wake {
            self.queue.push(t.max(self.now), Ev::Wake(id));
        }
    }

    fn output(&mut self, id: NodeId, out: Output) {
        match out {
            Output::Publish(rec) => {
                self.known.published(id, rec.node);
                self.tally.publications += 1;
                self.tally.publication_bytes += rec.encode().len() as u64;
                let changed = self.truth.get(id).is_none_or(|old| {
                    let strip = |n: &Node| Node {
                        seq: 0,
                        uptime_s: 0,
                        ..*n
                    };
                    strip(old) != strip(&rec.node)
                });
                if self.truth.merge(&rec, self.now).is_ok() {
                    self.checker.touch([id]);
                    self.checker.touch(rec.node.parent);
                    self.checker.touch(rec.node.children.iter());
                }
                self.publish(rec, changed);
            }
            Output::Send { to, msg } => {
                self.tally.requests += 1;
                self.in_flight += 1;
                let delay = dist::delay(&mut self.rng, self.cfg.latency_ms, self.cfg.jitter_ms);
                self.queue
                    .push(self.now + delay, Ev::Deliver { to, from: id, msg });
            }
            Output::Event(e) => self.event(id, e),
        }
    }

    fn event(&mut self, id: NodeId, e: Event) {
        match e {
            Event::Attached { previous, .. } => {
                if previous.is_some() {
                    self.tally.reparents += 1;
                }
                if let Some(since) = self.orphaned.remove(&id) {
                    let secs = self.now.since(since).as_secs_f64();
                    self.tally.repair_ms.push(secs * 1000.0);
                    let size = subtree_size(&self.truth, id);
                    self.tally.viewer_seconds_without_media += secs * size as f64;
                }
            }
            Event::Orphaned { .. } => {
                self.orphaned.entry(id).or_insert(self.now);
            }
            Event::Swapped { .. } => self.tally.promotions += 1,
            Event::NoPlace => self.tally.unplaced_joins += 1,
            Event::ChildAdded(_) | Event::ChildRemoved(_) => {}
        }
    }

    /// `victims` go: gracefully (their agents say goodbye) or by crashing (neighbours notice
    /// after the detection time).
    fn fail(&mut self, victims: &[NodeId], kind: LeaveKind) {
        let detect = Duration::from_secs_f64(self.cfg.detection_ms / 1000.0);
        for &v in victims {
            if v == NodeId(ROOT_ID) || !self.agents.contains_key(&v) {
                continue;
            }
            let me = *self.agents[&v].agent.node();
            for c in me.children.iter() {
                self.orphaned.entry(c).or_insert(self.now);
            }
            match kind {
                LeaveKind::Graceful => {
                    self.tally.leaves += 1;
                    self.input(v, Input::Leave);
                }
                LeaveKind::Crash => {
                    self.tally.crashes += 1;
                    for c in me.children.iter() {
                        self.in_flight += 1;
                        self.queue.push(self.now + detect, Ev::ParentLost(c));
                    }
                    if let Some(p) = me.parent {
                        self.in_flight += 1;
                        self.queue.push(
                            self.now + detect,
                            Ev::ChildLost {
                                parent: p,
                                child: v,
                            },
                        );
                    }
                }
            }
            if let Some(slot) = self.agents.remove(&v) {
                self.followers.replace(v, slot.parent, None);
                self.feeders.replace_all(v, slot.children, Children::new());
            }
            self.known.depart(v);
            self.orphaned.remove(&v);
            self.truth.remove(v);
            if self.cfg.churn.is_some_and(|c| c.rejoin) {
                self.queue.push(self.now, Ev::Replace);
            }
        }
    }

    fn pick_victims(&mut self, i: usize) -> Vec<NodeId> {
        let spec = &self.cfg.crashes[i];
        let root = NodeId(ROOT_ID);
        let pool: Vec<NodeId> = match spec.select {
            CrashSelect::Nodes => return spec.nodes.iter().map(|&n| NodeId(n)).collect(),
            CrashSelect::Random => self
                .agents
                .keys()
                .copied()
                .filter(|&id| id != root)
                .collect(),
            CrashSelect::Interior => self
                .agents
                .iter()
                .filter(|(id, s)| **id != root && !s.agent.node().children.is_empty())
                .map(|(id, _)| *id)
                .collect(),
            CrashSelect::Depth => self
                .agents
                .iter()
                .filter(|(id, s)| **id != root && Some(s.agent.node().depth) == spec.depth)
                .map(|(id, _)| *id)
                .collect(),
        };
        dist::sample(&mut self.rng, pool, spec.count as usize)
    }

    /// Adds a record to the current gossip round, opening the round (and scheduling its
    /// delivery) with the first record.
    fn publish(&mut self, rec: NodeRecord, changed: bool) {
        let index = self.now.as_micros() / GOSSIP_ROUND.as_micros() as u64;
        if !self.rounds.contains_key(&index) {
            let end = Time((index + 1) * GOSSIP_ROUND.as_micros() as u64);
            let at = end + self.gossip_delay();
            self.queue.push(at, Ev::Gossip(index));
            self.rounds.insert(index, Round::default());
        }
        let Some(round) = self.rounds.get_mut(&index) else {
            return; // inserted above
        };
        match round.records.iter_mut().find(|r| r.node.id == rec.node.id) {
            Some(older) => *older = rec,
            None => round.records.push(rec),
        }
        if changed && !round.changed {
            round.changed = true;
            self.in_flight += 1;
        }
    }

    /// One latency per gossip hop; a mesh of degree D reaches n nodes in about log_D(n) hops.
    fn gossip_delay(&mut self) -> Duration {
        let n = self.agents.len().max(2) as f64;
        let d = f64::from(self.cfg.gossip_fanout.max(2));
        let hops = (n.ln() / d.ln()).ceil().max(1.0) as u32;
        (0..hops)
            .map(|_| dist::delay(&mut self.rng, self.cfg.latency_ms, self.cfg.jitter_ms))
            .sum()
    }

    fn finish(mut self) -> Run {
        for &since in self.orphaned.values() {
            self.tally.viewer_seconds_without_media += self.now.since(since).as_secs_f64();
        }
        // Liveness re-publications were counted as they happened.
        let detached = crate::check::final_checks(&mut self.truth, &mut self.tally);
        let mut shape = Shape::of(&self.truth, Depths::Measured);
        shape.detached = detached;
        Run {
            tally: self.tally,
            view: self.truth,
            shape,
        }
    }
}
