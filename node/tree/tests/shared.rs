//! Agents over one shared view (`Agent::new_shared`) decide exactly as agents with a view each:
//! the same scenario, run both ways, gives the same outputs at the same times in the same order.
//! This is what lets the simulator run thousands of agents over one view.

#![allow(clippy::unwrap_used)] // test harness: a panic is a test failure

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use treecast_tree::*;

const ROOT: NodeId = NodeId(1);
/// One-way delay of every message.
const DELAY: Duration = Duration::from_millis(20);
/// How long gossip takes to carry a record to everyone: longer than a message, so that
/// agents act while others do not know their newest record yet.
const GOSSIP: Duration = Duration::from_millis(150);
/// How long the shell takes to notice a dead parent or child (media silence).
const DETECT: Duration = Duration::from_millis(300);
/// Short refresh and ttl, so that silent nodes expire within the run.
const REFRESH: Duration = Duration::from_secs(2);
const TTL: Duration = Duration::from_secs(6);
/// The agents' housekeeping period (their default), at whole multiples of which every agent
/// here ticks (all start at time zero).
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Delivery {
    Record(NodeRecord),
    Message {
        from: NodeId,
        to: NodeId,
        msg: Message,
    },
    Input {
        to: NodeId,
        input: Input,
    },
}

struct Net {
    now: Time,
    /// `Some`: the agents share this view; `None`: each has its own.
    shared: Option<View>,
    agents: BTreeMap<NodeId, Agent>,
    /// Each agent's newest published record (shown to it over the shared view).
    own: BTreeMap<NodeId, Node>,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    pending: BTreeMap<u64, Delivery>,
    seq: u64,
    /// Every output of every agent, with when and whose.
    log: Vec<(Time, NodeId, Output)>,
}

fn stream() -> StreamId {
    StreamId::new("s").unwrap()
}

impl Net {
    fn new(shared: bool) -> Self {
        Net {
            now: Time::ZERO,
            shared: shared.then(|| {
                let mut v = View::new(stream());
                v.set_trusted_root(ROOT);
                v
            }),
            agents: BTreeMap::new(),
            own: BTreeMap::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
        }
    }

    fn spawn(&mut self, id: NodeId, role: Role, capacity: u8, seed: u64) {
        let mut cfg = AgentConfig::new(Node::new(id, role, capacity), stream());
        cfg.root = Some(ROOT);
        cfg.seed = seed ^ id.0;
        cfg.refresh = REFRESH;
        cfg.ttl = TTL;
        cfg.promotion_interval = Duration::from_secs(5);
        let agent = if self.shared.is_some() {
            Agent::new_shared(cfg, self.now)
        } else {
            Agent::new(cfg, self.now)
        };
        self.agents.insert(id, agent);
        self.drain(id);
        self.push(
            self.now,
            Delivery::Input {
                to: id,
                input: Input::Join,
            },
        );
    }

    fn push(&mut self, at: Time, d: Delivery) {
        self.seq += 1;
        self.pending.insert(self.seq, d);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn drain(&mut self, id: NodeId) {
        let mut outs = Vec::new();
        if let Some(a) = self.agents.get_mut(&id) {
            while let Some(o) = a.poll_output() {
                outs.push(o);
            }
        }
        for o in outs {
            self.log.push((self.now, id, o.clone()));
            match o {
                Output::Publish(r) => {
                    self.own.insert(id, r.node);
                    self.push(self.now + GOSSIP, Delivery::Record(r));
                }
                Output::Send { to, msg } => {
                    self.push(self.now + DELAY, Delivery::Message { from: id, to, msg })
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Feeds `input` to agent `id` over its own view or the shared one (with its own newest
    /// record in place of what gossip carried so far).
    fn feed(&mut self, id: NodeId, input: Input) {
        let now = self.now;
        let Some(agent) = self.agents.get_mut(&id) else {
            return;
        };
        match &mut self.shared {
            None => agent.handle(now, input),
            Some(view) => {
                let mine = self.own[&id];
                let old = view.replace(id, Some((mine, now)));
                agent.handle_in(view, now, input);
                view.replace(id, old);
            }
        }
        self.drain(id);
    }

    fn deliver(&mut self, rec: NodeRecord) {
        let now = self.now;
        let author = rec.node.id;
        let ids: Vec<NodeId> = self
            .agents
            .keys()
            .copied()
            .filter(|&i| i != author)
            .collect();
        let merge = match &mut self.shared {
            None => None,
            Some(view) => match view.merge(&rec, now) {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        for id in ids {
            match (merge, &mut self.shared) {
                (Some(merge), Some(view)) => {
                    let mine = self.own[&id];
                    let old = view.replace(id, Some((mine, now)));
                    let agent = self.agents.get_mut(&id).unwrap();
                    agent.merged_in(view, now, author, merge);
                    view.replace(id, old);
                }
                _ => {
                    let agent = self.agents.get_mut(&id).unwrap();
                    agent.handle(now, Input::Record(rec.clone()));
                }
            }
            self.drain(id);
        }
    }

    fn kill(&mut self, id: NodeId) {
        let Some(a) = self.agents.remove(&id) else {
            return;
        };
        let n = *a.node();
        if let Some(p) = n.parent {
            self.push(
                self.now + DETECT,
                Delivery::Input {
                    to: p,
                    input: Input::ChildLost(id),
                },
            );
        }
        for c in n.children.iter() {
            self.push(
                self.now + DETECT,
                Delivery::Input {
                    to: c,
                    input: Input::ParentLost,
                },
            );
        }
    }

    fn run_until(&mut self, until: Time) {
        loop {
            let next_timer = self
                .agents
                .iter()
                .filter_map(|(id, a)| a.poll_timeout().map(|t| (t, *id)))
                .min();
            let next_msg = self.queue.peek().map(|Reverse((t, _))| *t);
            let t = match (next_timer, next_msg) {
                (Some((tt, _)), Some(tm)) => tt.min(tm),
                (Some((tt, _)), None) => tt,
                (None, Some(tm)) => tm,
                (None, None) => break,
            };
            if t > until {
                break;
            }
            self.now = t;
            if next_msg == Some(t) {
                let Reverse((_, key)) = self.queue.pop().unwrap();
                match self.pending.remove(&key).unwrap() {
                    Delivery::Record(r) => self.deliver(r),
                    Delivery::Message { from, to, msg } => {
                        self.feed(to, Input::Message { from, msg })
                    }
                    Delivery::Input { to, input } => self.feed(to, input),
                }
            } else if let Some((_, id)) = next_timer {
                self.expire_shared();
                self.feed(id, Input::Tick);
            }
        }
        self.now = until;
    }

    /// The shared view forgets silent nodes when the agents' housekeeping ticks fall due
    /// (every agent here ticks at whole seconds), and tells every agent.
    fn expire_shared(&mut self) {
        let now = self.now;
        let Some(view) = &mut self.shared else {
            return;
        };
        if !now.as_micros().is_multiple_of(TICK.as_micros() as u64) {
            return;
        }
        let gone = view.expire(now, TTL, NodeId(0));
        for a in self.agents.values_mut() {
            a.forget(&gone);
        }
    }
}

/// A random scenario: a root and `n` viewers start together; later some crash, some leave,
/// some change capacity.
fn scenario(shared: bool, seed: u64) -> Vec<(Time, NodeId, Output)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n: u64 = rng.random_range(8..40);
    let mut net = Net::new(shared);
    net.spawn(ROOT, Role::Broadcaster, rng.random_range(1..=4), seed);
    for id in 2..n + 2 {
        net.spawn(NodeId(id), Role::Viewer, rng.random_range(0..=4), seed);
    }
    net.run_until(Time::ZERO + Duration::from_secs(15));
    for _ in 0..rng.random_range(2..10) {
        let at = net.now + Duration::from_millis(rng.random_range(0..4000));
        net.run_until(at);
        let id = NodeId(rng.random_range(2..n + 2));
        match rng.random_range(0..3) {
            0 => net.kill(id),
            1 => {
                net.feed(id, Input::Leave);
            }
            _ => {
                let c = rng.random_range(0..=4);
                net.feed(id, Input::SetCapacity(c));
            }
        }
    }
    let end = net.now + Duration::from_secs(20);
    net.run_until(end);
    net.log
}

#[test]
fn agents_over_a_shared_view_decide_as_agents_with_their_own() {
    for seed in 0..24 {
        let own = scenario(false, seed);
        let shared = scenario(true, seed);
        assert!(own.len() > 100, "seed {seed}: the scenario does something");
        if let Some(i) = (0..own.len().min(shared.len())).find(|&i| own[i] != shared[i]) {
            panic!(
                "seed {seed}: output {i} differs: own view {:?}, shared view {:?}",
                own[i], shared[i]
            );
        }
        assert_eq!(own.len(), shared.len(), "seed {seed}");
    }
}
