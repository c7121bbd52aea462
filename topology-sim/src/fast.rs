//! Fast mode: one shared [`View`], to which the core's decisions are applied directly
//! (`View::apply_*`), as if every node involved had carried out its part at the same instant.
//!
//! The simulator only drives: it decides *when* things happen (arrivals, leaves, crashes) and
//! asks the core *what* happens ([`place`], [`plan_repair`], [`plan_promotion`]). Times that
//! the protocol would take are estimated: a repair costs the detection time (crashes only) plus
//! one request round trip per target tried.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use treecast_tree::{
    Avoid, MAX_DEPTH, MOVE_MARGIN, Node, NodeId, PROMOTION_CHECK, Repair, RepairTarget, Role,
    StreamId, Time, View, place, plan_move, plan_promotion, plan_repair,
};

use crate::check::{Checker, subtree_size};
use crate::config::{Config, CrashSelect, LeaveKind, ROOT_ID};
use crate::dist;
use crate::metrics::{Depths, Shape, Tally};
use crate::queue::Queue;

/// Candidates asked for per placement, and targets per repair plan.
const CANDIDATES: usize = 4;
const REPAIR_TARGETS: usize = 8;
/// Below this many nodes the auto policy checks invariants after every step.
const CHECK_ALL_BELOW: usize = 2_000;
/// Failed placements per retry round of waiting nodes (bounds the cost when the tree is full).
const RETRY_FAILURES: usize = 8;

/// What happens in virtual time.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next of the scenario's viewers arrives.
    Arrive,
    /// A newcomer replacing a leaver arrives.
    Replace,
    /// A viewer's session ends.
    Leave(NodeId),
    /// The crash batch with this index in the config.
    Crash(usize),
    /// Every node looks for a promotion.
    Promote,
}

/// The outcome of a fast run: counters and the final tree.
#[derive(Debug)]
pub struct Run {
    /// Counters.
    pub tally: Tally,
    /// The tree at the end, detached nodes removed.
    pub view: View,
    /// Its shape.
    pub shape: Shape,
}

/// Runs `cfg` in fast mode; `progress` gets the fraction done now and then.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(f64)) -> Run {
    let mut sim = Fast::new(cfg);
    sim.run(progress);
    sim.finish()
}

struct Fast<'c> {
    cfg: &'c Config,
    view: View,
    rng: SmallRng,
    queue: Queue<Event>,
    now: Time,
    end: Time,
    arrived: u64,
    next_id: u64,
    /// Nodes not connected to the root, waiting for a slot, since when.
    waiting: BTreeMap<NodeId, Time>,
    /// When each node last took part in a promotion round's swap (rate limit).
    last_promotion: BTreeMap<NodeId, Time>,
    tally: Tally,
    checker: Checker,
}

impl<'c> Fast<'c> {
    fn new(cfg: &'c Config) -> Self {
        let stream = StreamId::new("sim").expect("a valid constant stream name");
        let mut view = View::new(stream);
        let root = NodeId(ROOT_ID);
        view.set_trusted_root(root);
        view.apply_join(
            Node::new(root, Role::Broadcaster, cfg.root_capacity),
            Time::ZERO,
        );
        let mut queue = Queue::default();
        if cfg.viewers > 0 {
            queue.push(Time::ZERO, Event::Arrive);
        }
        if cfg.promotion_interval > 0.0 {
            queue.push(Time::ZERO + PROMOTION_CHECK, Event::Promote);
        }
        for (i, c) in cfg.crashes.iter().enumerate() {
            queue.push(secs(c.at.unwrap_or(0.0)), Event::Crash(i));
        }
        Fast {
            cfg,
            view,
            rng: SmallRng::seed_from_u64(cfg.seed),
            queue,
            now: Time::ZERO,
            end: secs(cfg.duration),
            arrived: 0,
            next_id: ROOT_ID + 1,
            waiting: BTreeMap::new(),
            last_promotion: BTreeMap::new(),
            tally: Tally::default(),
            checker: Checker::new(cfg.check, CHECK_ALL_BELOW),
        }
    }

    fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        let mut steps = 0u64;
        while let Some(at) = self.queue.next_at() {
            if at > self.end {
                break;
            }
            let Some((at, event)) = self.queue.pop() else {
                break;
            };
            self.advance(at);
            match event {
                Event::Arrive => {
                    self.arrived += 1;
                    if self.arrived < self.cfg.viewers {
                        let gap = self
                            .cfg
                            .join_rate
                            .map_or(0.0, |r| dist::exponential(&mut self.rng, 1.0 / r));
                        self.queue.push(self.now + secs_f(gap), Event::Arrive);
                    }
                    self.join();
                }
                Event::Replace => self.join(),
                Event::Leave(id) => self.fail(&[id], self.cfg.leave),
                Event::Crash(i) => {
                    let victims = self.pick_victims(i);
                    self.fail(&victims, LeaveKind::Crash);
                }
                Event::Promote => {
                    self.promotion_round();
                    self.queue.push(self.now + PROMOTION_CHECK, Event::Promote);
                }
            }
            self.retry_waiting();
            self.checker
                .after_step(&self.view, self.now, &mut self.tally);
            steps += 1;
            if steps.is_multiple_of(4096) {
                progress(self.done());
            }
        }
        self.advance(self.end.max(self.now));
        progress(1.0);
    }

    fn done(&self) -> f64 {
        if self.cfg.join_rate.is_none() && self.arrived < self.cfg.viewers {
            self.arrived as f64 / self.cfg.viewers as f64
        } else {
            self.now.as_micros() as f64 / self.end.as_micros().max(1) as f64
        }
    }

    /// Moves the clock, integrating the population for per-node rates.
    fn advance(&mut self, to: Time) {
        let dt = to.since(self.now).as_secs_f64();
        self.tally.node_seconds += dt * self.view.len() as f64;
        self.now = to;
    }

    fn join(&mut self) {
        let id = NodeId(self.next_id);
        self.next_id += 1;
        let cfg = self.cfg;
        let node = cfg.new_viewer(id, &mut self.rng);
        self.view.apply_join(node, self.now);
        self.tally.joins += 1;
        if let Some(churn) = cfg.churn {
            let s = dist::session(&mut self.rng, churn.distribution, churn.mean_session);
            self.queue.push(self.now + secs_f(s), Event::Leave(id));
        }
        if self.attach(id, &Avoid::default()).is_some() {
            self.promote(id);
        } else {
            self.tally.unplaced_joins += 1;
            self.waiting.insert(id, self.now);
        }
    }

    /// Attaches `id` at the best place it may use, trying ranked candidates in turn; returns
    /// the number of requests it took.
    fn attach(&mut self, id: NodeId, avoid: &Avoid) -> Option<u32> {
        // The best candidate almost always takes the node; rank the rest only if it does not
        // (verifying each candidate costs a walk up the tree).
        let mut tries = 0;
        for limit in [1, CANDIDATES] {
            for c in place(&self.view, id, avoid, limit)
                .candidates
                .into_iter()
                .skip(tries as usize)
            {
                tries += 1;
                self.tally.requests += 2;
                let old = self.view.get(id).and_then(|n| n.parent);
                if self.view.apply_attach(id, c.parent, self.now).is_ok() {
                    self.checker.touch([id, c.parent]);
                    self.checker.touch(old);
                    return Some(tries);
                }
            }
        }
        None
    }

    /// Lets `id` rise while a weaker node sits higher up.
    fn promote(&mut self, id: NodeId) {
        for _ in 0..MAX_DEPTH {
            if !self.promote_once(id) {
                return;
            }
        }
    }

    /// One swap for `id` if the core plans one; whether it happened.
    fn promote_once(&mut self, id: NodeId) -> bool {
        {
            let Some(plan) = plan_promotion(&self.view, id, self.cfg.promotion_margin) else {
                return false;
            };
            let moved = plan
                .placed
                .iter()
                .filter(|p| self.view.get(p.node).is_some_and(|n| n.parent != p.parent))
                .count();
            if self.view.apply_promotion(&plan, self.now).is_err() {
                return false;
            }
            self.checker.touch(plan.placed.iter().map(|p| p.node));
            self.tally.promotions += 1;
            self.tally.reparents += moved as u64;
            // A request and an answer per link opened, a notice per link closed.
            self.tally.requests += 2 * plan.open.len() as u64 + plan.close.len() as u64;
            true
        }
    }

    /// Moves `id` (with its subtree) to a free slot at least `MOVE_MARGIN` levels higher, if
    /// the core finds one; whether it happened.
    fn move_once(&mut self, id: NodeId) -> bool {
        let Some(c) = plan_move(&self.view, id, MOVE_MARGIN) else {
            return false;
        };
        let old = self.view.get(id).and_then(|n| n.parent);
        if self.view.apply_attach(id, c.parent, self.now).is_err() {
            return false;
        }
        self.checker.touch([id, c.parent]);
        self.checker.touch(old);
        self.tally.reparents += 1;
        self.tally.moves += 1;
        // Attach, accept, and a detach to the old parent.
        self.tally.requests += 3;
        true
    }

    /// Every node looks for one promotion (at most one per `promotion_interval` each), or else
    /// for a move to a free slot much higher up, as each live agent does every
    /// `PROMOTION_CHECK` (in id order; a node moved by an earlier change of the round plans
    /// from the tree as it is then).
    fn promotion_round(&mut self) {
        let ids: Vec<NodeId> = self
            .view
            .nodes()
            .filter(|n| n.depth > 1 && n.role != Role::Broadcaster)
            .map(|n| n.id)
            .collect();
        let interval = Duration::from_secs_f64(self.cfg.promotion_interval);
        // Cheap bounds from the view's indexes skip nodes for which the core's search cannot
        // succeed; the core still decides for every node that passes.
        let open = self.view.shallowest_open_depth().unwrap_or(u16::MAX);
        let mut weakest_above = vec![u8::MAX; usize::from(MAX_DEPTH) + 2];
        for d in 1..=MAX_DEPTH {
            let here = self.view.weakest_capacity_at(d).unwrap_or(u8::MAX);
            weakest_above[usize::from(d) + 1] = weakest_above[usize::from(d)].min(here);
        }
        let margin = self.cfg.promotion_margin.max(1);
        for id in ids {
            let Some(n) = self.view.get(id).copied() else {
                continue;
            };
            let depth = usize::from(n.depth.min(MAX_DEPTH));
            let may_swap = n.capacity >= weakest_above[depth].saturating_add(margin)
                && self
                    .last_promotion
                    .get(&id)
                    .is_none_or(|&t| self.now.since(t) >= interval);
            let may_move = n.depth >= open.saturating_add(1 + MOVE_MARGIN);
            if !may_swap && !may_move {
                continue;
            }
            // A move first, as the agent does: it makes the tree shallower, a swap only
            // trades depths.
            let moved = may_move && self.move_once(id);
            let swapped = !moved && may_swap && self.promote_once(id);
            if swapped {
                self.last_promotion.insert(id, self.now);
            }
            if moved || swapped {
                self.checker
                    .after_step(&self.view, self.now, &mut self.tally);
            }
        }
    }

    /// `victims` leave at once (gracefully or by crashing); their orphans repair with the
    /// plans they held before (each node keeps one ready, see `plan_repair`).
    fn fail(&mut self, victims: &[NodeId], kind: LeaveKind) {
        let root = NodeId(ROOT_ID);
        let victims: BTreeSet<NodeId> = victims
            .iter()
            .copied()
            .filter(|&v| v != root && self.view.get(v).is_some())
            .collect();
        if victims.is_empty() {
            return;
        }
        let mut plans: Vec<(NodeId, Option<Repair>)> = Vec::new();
        let mut orphans_of: BTreeMap<NodeId, usize> = BTreeMap::new();
        for &v in &victims {
            for o in self.view.children_of(v) {
                if !victims.contains(&o) {
                    *orphans_of.entry(v).or_default() += 1;
                    plans.push((o, plan_repair(&self.view, o, REPAIR_TARGETS)));
                }
            }
        }
        for &v in &victims {
            if let Some(n) = self.view.get(v) {
                self.tally.publications_of(self.view.stream(), &n.clone());
            }
            if let Some(since) = self.waiting.remove(&v) {
                self.tally.viewer_seconds_without_media += self.now.since(since).as_secs_f64();
            }
            self.checker.touch(self.view.parent_of(v));
            let orphans = self.view.apply_remove(v, self.now);
            self.checker.touch(orphans);
            match kind {
                LeaveKind::Graceful => self.tally.leaves += 1,
                LeaveKind::Crash => self.tally.crashes += 1,
            }
            if self.cfg.churn.is_some_and(|c| c.rejoin) {
                self.queue.push(self.now, Event::Replace);
            }
        }
        // The successor first: its siblings' plans attach under it once it is back in place.
        plans.sort_by_key(|(_, p)| {
            !matches!(
                p.as_ref().and_then(|p| p.targets.first()),
                Some(RepairTarget::Replace { .. })
            )
        });
        let avoid = Avoid {
            nodes: victims.iter().copied().collect(),
            ..Avoid::default()
        };
        let detect_ms = match kind {
            LeaveKind::Graceful => 0.0,
            LeaveKind::Crash => self.cfg.detection_ms,
        };
        for (o, plan) in plans {
            let size = subtree_size(&self.view, o);
            let mut tries = 0u32;
            let mut done = false;
            if let Some(plan) = plan {
                for t in plan.targets {
                    tries += 1;
                    self.tally.requests += 2;
                    if self.view.apply_repair(o, plan.lost, t, self.now).is_ok() {
                        self.checker.touch([o, t.parent()]);
                        if let RepairTarget::Replace { .. } = t {
                            // The successor makes room for its siblings by handing children
                            // down its subtree (each lands at its old depth).
                            let siblings = orphans_of.get(&plan.lost).map_or(0, |n| n - 1);
                            let before = self.view.get(o).map(|n| n.children);
                            if self.view.apply_shed(o, siblings, self.now) {
                                self.tally.requests += 2;
                            }
                            self.checker.touch(before.into_iter().flatten());
                        }
                        done = true;
                        break;
                    }
                }
            }
            if !done && let Some(more) = self.attach(o, &avoid) {
                // The plan ran out: a fresh placement, as a live node does.
                tries += more;
                done = true;
            }
            if done {
                let ms = detect_ms + self.round_trips_ms(tries);
                self.tally.repair_ms.push(ms);
                self.tally.viewer_seconds_without_media += ms / 1000.0 * size as f64;
                self.tally.reparents += 1;
                self.promote(o);
            } else {
                self.tally.unrepaired += 1;
                self.waiting.insert(o, self.now);
            }
        }
    }

    /// Places waiting nodes while slots are found.
    fn retry_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let ids: Vec<(NodeId, Time)> = self.waiting.iter().map(|(&k, &v)| (k, v)).collect();
        let mut failures = 0;
        for (id, since) in ids {
            if self.view.get(id).is_none() {
                self.waiting.remove(&id);
                continue;
            }
            if self.attach(id, &Avoid::default()).is_some() {
                self.waiting.remove(&id);
                let size = subtree_size(&self.view, id);
                self.tally.viewer_seconds_without_media +=
                    self.now.since(since).as_secs_f64() * size as f64;
                self.promote(id);
            } else {
                failures += 1;
                if failures >= RETRY_FAILURES {
                    return;
                }
            }
        }
    }

    fn pick_victims(&mut self, i: usize) -> Vec<NodeId> {
        let spec = &self.cfg.crashes[i];
        let root = NodeId(ROOT_ID);
        let pool: Vec<NodeId> = match spec.select {
            CrashSelect::Nodes => return spec.nodes.iter().map(|&n| NodeId(n)).collect(),
            CrashSelect::Random => self
                .view
                .nodes()
                .filter(|n| n.id != root)
                .map(|n| n.id)
                .collect(),
            CrashSelect::Interior => self
                .view
                .nodes()
                .filter(|n| n.id != root && self.view.children_of(n.id).next().is_some())
                .map(|n| n.id)
                .collect(),
            CrashSelect::Depth => self
                .view
                .nodes()
                .filter(|n| n.id != root && Some(n.depth) == spec.depth)
                .map(|n| n.id)
                .collect(),
        };
        dist::sample(&mut self.rng, pool, spec.count as usize)
    }

    /// Sum of `tries` request round trips, ms (jitter drawn per message).
    fn round_trips_ms(&mut self, tries: u32) -> f64 {
        (0..2 * tries)
            .map(|_| dist::delay(&mut self.rng, self.cfg.latency_ms, self.cfg.jitter_ms))
            .sum::<Duration>()
            .as_secs_f64()
            * 1000.0
    }

    fn finish(mut self) -> Run {
        let end = self.now;
        for (&id, &since) in &self.waiting {
            let size = subtree_size(&self.view, id);
            self.tally.viewer_seconds_without_media += end.since(since).as_secs_f64() * size as f64;
        }
        // Liveness re-publications: one per node per heartbeat.
        let beats = (self.tally.node_seconds / self.cfg.heartbeat) as u64;
        let stream = self.view.stream().clone();
        for n in self.view.nodes() {
            self.tally.publications_of(&stream, n);
        }
        let avg_len = self
            .tally
            .publication_bytes
            .checked_div(self.tally.publications)
            .unwrap_or(0);
        self.tally.publications += beats;
        self.tally.publication_bytes += beats * avg_len;

        let detached = crate::check::final_checks(&mut self.view, &mut self.tally);
        let mut shape = Shape::of(&self.view, Depths::Claimed);
        shape.detached = detached;
        Run {
            tally: self.tally,
            view: self.view,
            shape,
        }
    }
}

fn secs(s: f64) -> Time {
    Time::ZERO + secs_f(s)
}

fn secs_f(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
