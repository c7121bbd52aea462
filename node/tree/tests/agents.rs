//! Seeded scenario tests: many agents stepped through a simulated network in virtual time.
//! No sleeps, no wall clock; a failing test prints its seed.

#![allow(clippy::unwrap_used)] // test harness: a panic is a test failure

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use treecast_tree::*;

const ROOT: NodeId = NodeId(1);
/// One-way delay of every message and record.
const DELAY: Duration = Duration::from_millis(20);
/// How long the shell takes to notice a dead parent or child (media silence).
const DETECT: Duration = Duration::from_millis(300);

#[derive(Debug)]
enum Delivery {
    /// A record, and whether it says more than the author's previous one (not just a refresh).
    Record(NodeRecord, bool),
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
    agents: BTreeMap<NodeId, Agent>,
    queue: BinaryHeap<Reverse<(Time, u64, NodeIdKey)>>,
    pending: BTreeMap<u64, Delivery>,
    seq: u64,
    events: Vec<(Time, NodeId, Event)>,
    seed: u64,
    /// The last record each node published, to tell changes from refreshes.
    published: BTreeMap<NodeId, Node>,
    /// Messages, inputs and changed records on their way.
    in_flight: usize,
}

/// Orders deliveries with equal time by insertion.
type NodeIdKey = u64;

impl Net {
    fn new(seed: u64) -> Self {
        let mut n = Net {
            now: Time::ZERO,
            agents: BTreeMap::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            events: Vec::new(),
            seed,
            published: BTreeMap::new(),
            in_flight: 0,
        };
        n.spawn(ROOT, Role::Broadcaster, 4);
        n
    }

    fn config(&self, id: NodeId, role: Role, capacity: u8) -> AgentConfig {
        let mut cfg = AgentConfig::new(Node::new(id, role, capacity), StreamId::new("s").unwrap());
        cfg.root = Some(ROOT);
        cfg.seed = self.seed ^ id.0;
        cfg
    }

    fn spawn(&mut self, id: NodeId, role: Role, capacity: u8) {
        let cfg = self.config(id, role, capacity);
        self.spawn_with(cfg);
    }

    fn spawn_with(&mut self, cfg: AgentConfig) {
        let id = cfg.node.id;
        // A newcomer learns the current records from a bootstrap peer.
        let known: Vec<NodeRecord> = self
            .agents
            .values()
            .map(|a| NodeRecord {
                stream: StreamId::new("s").unwrap(),
                node: *a.node(),
            })
            .collect();
        let mut agent = Agent::new(cfg, self.now);
        for r in known {
            agent.handle(self.now, Input::Record(r));
        }
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
        if !matches!(d, Delivery::Record(_, false)) {
            self.in_flight += 1;
        }
        self.seq += 1;
        self.pending.insert(self.seq, d);
        self.queue.push(Reverse((at, self.seq, self.seq)));
    }

    fn drain(&mut self, id: NodeId) {
        let mut outs = Vec::new();
        if let Some(a) = self.agents.get_mut(&id) {
            while let Some(o) = a.poll_output() {
                outs.push(o);
            }
        }
        for o in outs {
            match o {
                Output::Publish(r) => {
                    let strip = |n: Node| Node {
                        seq: 0,
                        uptime_s: 0,
                        ..n
                    };
                    let changed = self
                        .published
                        .insert(id, r.node)
                        .is_none_or(|old| strip(old) != strip(r.node));
                    self.push(self.now + DELAY, Delivery::Record(r, changed))
                }
                Output::Send { to, msg } => {
                    self.push(self.now + DELAY, Delivery::Message { from: id, to, msg })
                }
                Output::Event(e) => self.events.push((self.now, id, e)),
            }
        }
    }

    /// Kills a node: its parent and children notice after `DETECT`.
    fn kill(&mut self, id: NodeId) {
        let a = self.agents.remove(&id).unwrap();
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
        while self.step(until) {}
        self.now = until;
    }

    /// Carries out the next delivery or timer due no later than `until`; false if there is none.
    fn step(&mut self, until: Time) -> bool {
        let next_timer = self
            .agents
            .iter()
            .filter_map(|(id, a)| a.poll_timeout().map(|t| (t, *id)))
            .min();
        let next_msg = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let t = match (next_timer, next_msg) {
            (Some((tt, _)), Some(tm)) => tt.min(tm),
            (Some((tt, _)), None) => tt,
            (None, Some(tm)) => tm,
            (None, None) => return false,
        };
        if t > until {
            return false;
        }
        self.now = t;
        if next_msg == Some(t) {
            let Reverse((_, key, _)) = self.queue.pop().unwrap();
            let d = self.pending.remove(&key).unwrap();
            if !matches!(d, Delivery::Record(_, false)) {
                self.in_flight -= 1;
            }
            match d {
                Delivery::Record(r, _) => {
                    let ids: Vec<NodeId> = self.agents.keys().copied().collect();
                    for id in ids.into_iter().filter(|&i| i != r.node.id) {
                        self.agents
                            .get_mut(&id)
                            .unwrap()
                            .handle(t, Input::Record(r.clone()));
                        self.drain(id);
                    }
                }
                Delivery::Message { from, to, msg } => {
                    if let Some(a) = self.agents.get_mut(&to) {
                        a.handle(t, Input::Message { from, msg });
                        self.drain(to);
                    }
                }
                Delivery::Input { to, input } => {
                    if let Some(a) = self.agents.get_mut(&to) {
                        a.handle(t, input);
                        self.drain(to);
                    }
                }
            }
        } else if let Some((_, id)) = next_timer {
            self.agents.get_mut(&id).unwrap().handle(t, Input::Tick);
            self.drain(id);
        }
        true
    }

    /// Nothing under way: no message, input or changed record travelling, no agent busy.
    fn quiet(&self) -> bool {
        self.in_flight == 0 && !self.agents.values().any(Agent::is_busy)
    }

    /// The tree as the nodes themselves say it is (each node's own record).
    fn truth(&self) -> View {
        let mut v = View::new(StreamId::new("s").unwrap());
        v.set_trusted_root(ROOT);
        for a in self.agents.values() {
            v.merge_node(*a.node(), self.now).unwrap();
        }
        v
    }

    fn orphaned(&self) -> BTreeSet<NodeId> {
        self.events
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Orphaned { .. }))
            .map(|(_, id, _)| *id)
            .collect()
    }
}

fn settle(net: &mut Net, secs: u64) {
    let until = net.now + Duration::from_secs(secs);
    net.run_until(until);
    let truth = net.truth();
    if let Err(v) = truth.check_settled() {
        panic!("seed {}: not settled: {v:?}", net.seed);
    }
}

#[test]
fn nodes_join_and_form_a_valid_tree() {
    for seed in 1..=5 {
        let mut net = Net::new(seed);
        for i in 0..40 {
            net.spawn(NodeId(100 + i), Role::Relay, [4, 2, 1, 0][(i % 4) as usize]);
            let t = net.now + Duration::from_millis(50);
            net.run_until(t);
        }
        settle(&mut net, 20);
        let truth = net.truth();
        for a in net.agents.values() {
            assert!(
                truth.depth_of(a.id()).is_some(),
                "seed {seed}: {:?} is not attached",
                a.id()
            );
            assert!(a.node().children.len() <= usize::from(a.node().capacity) || a.id() == ROOT);
        }
    }
}

#[test]
fn racers_for_the_last_slot_never_overfill_a_parent() {
    for seed in 1..=5 {
        let mut net = Net::new(seed);
        // The root has one slot; five newcomers ask for it at the same instant.
        net.agents.remove(&ROOT);
        let cfg = net.config(ROOT, Role::Broadcaster, 1);
        net.spawn_with(cfg);
        net.run_until(Time::from_millis(100));
        for i in 0..5 {
            net.spawn(NodeId(100 + i), Role::Relay, 4);
        }
        settle(&mut net, 10);
        let truth = net.truth();
        assert_eq!(
            truth.get(ROOT).unwrap().children.len(),
            1,
            "seed {seed}: exactly one wins the root's slot"
        );
        for i in 0..5 {
            assert!(
                truth.depth_of(NodeId(100 + i)).is_some(),
                "seed {seed}: racer {i} found a place"
            );
        }
        for n in truth.nodes() {
            assert!(n.children.len() <= 4);
        }
    }
}

/// Thirty relays of four slots joining 30 ms apart, settled.
fn thirty_relays(seed: u64) -> Net {
    let mut net = Net::new(seed);
    for i in 0..30 {
        net.spawn(NodeId(100 + i), Role::Relay, 4);
        let t = net.now + Duration::from_millis(30);
        net.run_until(t);
    }
    settle(&mut net, 5);
    net
}

/// The interior node with the biggest subtree below the root.
fn biggest_below_root(truth: &View) -> NodeId {
    truth
        .children_of(ROOT)
        .max_by_key(|&c| truth.subtree(c, 1000).len())
        .unwrap()
}

#[test]
fn orphans_repair_and_nobody_else_is_disturbed() {
    for seed in 1..=5 {
        let mut net = thirty_relays(seed);
        let truth = net.truth();
        let victim = biggest_below_root(&truth);
        let subtree: BTreeSet<NodeId> = truth.subtree(victim, 1000).into_iter().collect();
        let orphans: Vec<NodeId> = truth.children_of(victim).collect();
        assert!(!orphans.is_empty());
        let kept: Vec<(NodeId, Vec<NodeId>)> = orphans
            .iter()
            .map(|&o| (o, truth.children_of(o).collect()))
            .collect();
        let before = net.events.len();
        let killed_at = net.now;
        net.kill(victim);
        // Right after the repair (before any later rebalancing), every orphan still has its
        // children and every node is connected again.
        net.run_until(killed_at + Duration::from_millis(1500));
        let truth = net.truth();
        for a in net.agents.values() {
            assert!(
                truth.depth_of(a.id()).is_some(),
                "seed {seed}: {:?} did not recover",
                a.id()
            );
        }
        for (o, kids) in kept {
            let now: Vec<NodeId> = truth.children_of(o).collect();
            for k in kids {
                assert!(
                    now.contains(&k),
                    "seed {seed}: orphan {o:?} lost its child {k:?}"
                );
            }
        }
        settle(&mut net, 10);
        let disturbed: Vec<NodeId> = net.events[before..]
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Orphaned { .. }))
            .map(|(_, id, _)| *id)
            .filter(|id| !subtree.contains(id))
            .collect();
        assert!(
            disturbed.is_empty(),
            "seed {seed}: nodes outside the lost subtree were orphaned: {disturbed:?}"
        );
        // Every orphan re-attached quickly: detection plus a round trip or two.
        for &o in &orphans {
            let back = net.events[before..]
                .iter()
                .find(|(_, id, e)| *id == o && matches!(e, Event::Attached { .. }))
                .map(|(t, _, _)| t.since(killed_at))
                .unwrap();
            assert!(
                back < Duration::from_millis(1500),
                "seed {seed}: {o:?} took {back:?}"
            );
        }
    }
}

/// The parent of a lost relay notices first (its child's connections reset) and a newcomer
/// arrives while the orphans are still noticing: the freed slot waits for the successor, and
/// the successor's siblings, which ask it before it is attached again, ask again rather than
/// scatter. The whole orphaned subtree comes back at its old depths.
///
/// Seed 7 once failed: the grandparent's record without the lost child reached the orphans
/// before they noticed the loss, their refreshed plans lost the successor (no agreed
/// grandparent), and one sibling went elsewhere. Plans now fall back to the grandparent the
/// lost parent last claimed.
#[test]
fn a_lost_relays_slot_waits_for_its_successor_and_its_siblings() {
    for seed in 1..=20 {
        let mut net = thirty_relays(seed);
        let truth = net.truth();
        let victim = biggest_below_root(&truth);
        let orphans: Vec<NodeId> = truth.children_of(victim).collect();
        assert!(orphans.len() >= 2, "seed {seed}: want siblings");
        let heir = successor(&truth, victim).unwrap();
        let depths: BTreeMap<NodeId, u16> = orphans
            .iter()
            .map(|&o| (o, truth.depth_of(o).unwrap()))
            .collect();
        let killed_at = net.now;
        let v = net.agents.remove(&victim).unwrap();
        let parent = v.node().parent.unwrap();
        // The parent at once; a newcomer 60 ms later, when the parent's record with a free
        // slot has reached it; the orphans after the usual silence.
        net.push(
            killed_at + Duration::from_millis(10),
            Delivery::Input {
                to: parent,
                input: Input::ChildLost(victim),
            },
        );
        for &o in &orphans {
            net.push(
                killed_at + DETECT,
                Delivery::Input {
                    to: o,
                    input: Input::ParentLost,
                },
            );
        }
        net.run_until(killed_at + Duration::from_millis(60));
        let newcomer = NodeId(999);
        net.spawn(newcomer, Role::Relay, 4);
        net.run_until(killed_at + Duration::from_millis(1500));
        let truth = net.truth();
        // The newcomer was kept out of the held slot (whoever took it in the end).
        assert_ne!(
            truth.get(newcomer).and_then(|n| n.parent),
            Some(parent),
            "seed {seed}: the newcomer took the lost relay's slot"
        );
        // The siblings that asked the successor while it was not attached yet asked again:
        // the orphaned subtree stays together (each orphan under the successor or a sibling,
        // unless the successor had no room left), at the old depths when the successor took
        // its lost parent's slot.
        let heir_depth = truth.depth_of(heir);
        for (&o, &d) in &depths {
            if o == heir {
                continue;
            }
            let under = truth.get(o).and_then(|n| n.parent);
            let heir_full = truth.get(heir).is_some_and(|n| n.spare() == 0);
            assert!(
                under.is_some_and(|p| depths.contains_key(&p)) || heir_full,
                "seed {seed}: orphan {o:?} left its siblings for {under:?}"
            );
            if under == Some(heir) && truth.get(heir).and_then(|n| n.parent) == Some(parent) {
                assert_eq!(truth.depth_of(o), Some(d), "seed {seed}: {o:?} went deeper");
                assert_eq!(heir_depth, Some(d - 1));
            }
        }
        assert!(
            truth.depth_of(newcomer).is_some(),
            "seed {seed}: the newcomer found no other place"
        );
        settle(&mut net, 10);
    }
}

#[test]
fn a_strong_late_joiner_is_promoted_without_orphaning_anyone() {
    for seed in 1..=5 {
        let mut net = Net::new(seed);
        for i in 0..8 {
            net.spawn(NodeId(100 + i), Role::Relay, 1);
            let t = net.now + Duration::from_millis(50);
            net.run_until(t);
        }
        settle(&mut net, 5);
        net.spawn(NodeId(999), Role::Relay, 4);
        settle(&mut net, 60);
        let truth = net.truth();
        assert_eq!(
            truth.depth_of(NodeId(999)),
            Some(1),
            "seed {seed}: the strong node rose to depth 1"
        );
        assert!(
            net.orphaned().is_empty(),
            "seed {seed}: a swap orphaned {:?}",
            net.orphaned()
        );
        assert!(net.events.iter().any(|(_, _, e)| matches!(
            e,
            Event::Swapped {
                up: NodeId(999),
                ..
            }
        )));
    }
}

#[test]
fn a_leaving_node_hands_its_children_on() {
    let mut net = Net::new(7);
    for i in 0..12 {
        net.spawn(NodeId(100 + i), Role::Relay, 4);
        let t = net.now + Duration::from_millis(30);
        net.run_until(t);
    }
    settle(&mut net, 5);
    let truth = net.truth();
    let leaver = truth
        .children_of(ROOT)
        .find(|&c| truth.children_of(c).count() > 0)
        .unwrap();
    let t = net.now;
    net.agents.get_mut(&leaver).unwrap().handle(t, Input::Leave);
    net.drain(leaver);
    net.run_until(t + Duration::from_millis(100));
    net.agents.remove(&leaver);
    settle(&mut net, 10);
    let truth = net.truth();
    for a in net.agents.values() {
        assert!(
            truth.depth_of(a.id()).is_some(),
            "{:?} did not recover",
            a.id()
        );
    }
}

/// Node 50 joins first, so it sits right under the root with four slots; ten more follow
/// (some under it), then the network runs `settle_secs`.
fn fifty_and_ten_more(settle_secs: u64) -> Net {
    let mut net = Net::new(11);
    net.spawn(NodeId(50), Role::Relay, 4);
    net.run_until(Time::from_millis(200));
    for i in 0..10 {
        net.spawn(NodeId(100 + i), Role::Relay, 4);
        let t = net.now + Duration::from_millis(50);
        net.run_until(t);
    }
    settle(&mut net, settle_secs);
    net
}

#[test]
fn children_of_a_node_that_cannot_deliver_move_away() {
    // The liar (50) declares four slots and joins first, so it sits right under the root.
    let mut net = fifty_and_ten_more(3);
    let victims: Vec<NodeId> = net.truth().children_of(NodeId(50)).collect();
    assert!(!victims.is_empty(), "the liar got children");
    // Its children measure heavy loss on the link from it, every second.
    let poor = LinkStats {
        kbps: 300,
        loss_permille: 250,
        rtt_ms: 30,
    };
    for _ in 0..15 {
        let t = net.now;
        for &v in &victims {
            let still = net
                .agents
                .get(&v)
                .is_some_and(|a| a.node().parent == Some(NodeId(50)));
            if still {
                net.agents.get_mut(&v).unwrap().handle(
                    t,
                    Input::SetLink {
                        link: poor,
                        receiving: true,
                    },
                );
                net.drain(v);
            }
        }
        if net.truth().is_struggling(NodeId(50)) {
            let p = place(&net.truth(), NodeId(9999), &Avoid::default(), 1)
                .best()
                .unwrap();
            assert_ne!(
                p.parent,
                NodeId(50),
                "a failing parent is not offered while others have room"
            );
        }
        net.run_until(t + Duration::from_secs(1));
    }
    settle(&mut net, 5);
    let truth = net.truth();
    for v in victims {
        assert_ne!(
            truth.parent_of(v),
            Some(NodeId(50)),
            "{v:?} left the failing parent"
        );
        assert!(truth.depth_of(v).is_some(), "{v:?} found another parent");
    }
}

/// Loss a parent reports itself is loss from above (an overloaded or lossy path), not its
/// fault: its children, with 14% loss where it has 7%, see it add only 7%, below the 8% of a
/// poor link, so it is not struggling and nobody leaves it (by the children's 14% alone
/// they would).
#[test]
fn loss_from_above_is_not_the_parents_fault() {
    // Long enough for moves and swaps to be over: what follows is about loss only.
    let mut net = fifty_and_ten_more(60);
    let children: Vec<NodeId> = net.truth().children_of(NodeId(50)).collect();
    assert!(!children.is_empty());
    let lossy = |loss_permille| LinkStats {
        kbps: 300,
        loss_permille,
        rtt_ms: 30,
    };
    for _ in 0..20 {
        let t = net.now;
        // The parent receives with 25% loss; its children with 26%.
        for (id, loss) in
            std::iter::once((NodeId(50), 70)).chain(children.iter().map(|&c| (c, 140)))
        {
            net.agents.get_mut(&id).unwrap().handle(
                t,
                Input::SetLink {
                    link: lossy(loss),
                    receiving: true,
                },
            );
            net.drain(id);
        }
        net.run_until(t + Duration::from_secs(1));
        assert!(!net.truth().is_struggling(NodeId(50)));
    }
    let truth = net.truth();
    for c in children {
        assert_eq!(truth.parent_of(c), Some(NodeId(50)), "{c:?} stayed");
    }
}

/// The tree is settled whenever the network is quiet, even while promotions come in waves.
/// Found by the simulator: a settled check at a fixed time after the last join
/// (`treecast-sim --mode messages --viewers 200 --join-rate 50 --duration 30 --seed 1`) caught
/// a swap half done (a child moved under a node whose record still gave its old depth; one
/// side of a relation published, the other not yet): depths lag one gossip delay per level
/// and relations one message, so "settled" can only be asked of a quiet network, and
/// `Agent::is_busy` must cover everything an agent has started.
#[test]
fn the_tree_is_settled_whenever_the_network_is_quiet() {
    for seed in 1..=5 {
        let mut net = Net::new(seed);
        // Weak nodes first, so that the strong ones arriving later are promoted.
        for i in 0..48 {
            let capacity = if i < 24 {
                [1, 0, 2][i % 3]
            } else {
                [4, 2, 4][i % 3]
            };
            net.spawn(NodeId(100 + i as u64), Role::Relay, capacity);
            let t = net.now + Duration::from_millis(40);
            net.run_until(t);
        }
        let (mut quiet, mut checked_during_swaps) = (0, 0);
        let end = net.now + Duration::from_secs(70);
        while net.step(end) {
            if !net.quiet() {
                continue;
            }
            quiet += 1;
            if let Err(v) = net.truth().check_settled() {
                panic!("seed {seed} at {:?}: quiet but not settled: {v:?}", net.now);
            }
            let swaps = net
                .events
                .iter()
                .filter(|(_, _, e)| matches!(e, Event::Swapped { .. }))
                .count();
            if swaps > 0 {
                checked_during_swaps += 1;
            }
        }
        assert!(
            quiet > 100,
            "seed {seed}: the network was quiet {quiet} times"
        );
        assert!(
            checked_during_swaps > 0,
            "seed {seed}: no swap happened before a quiet moment"
        );
    }
}

/// Strong nodes that arrive after weak ones rise above them within a few promotion checks,
/// not one swap per weak node per promotion interval. Found by the simulator: with 1,000
/// viewers joining at 100/s, 41 nodes of capacity 2 still sat at depth 3 over 72 of capacity
/// 4 at depth 5, and the tree ended 2 levels above the optimum: every strong node asked the
/// same weakest node, which swapped once and then refused everyone for 30 s, and each refused
/// proposer counted its own refused proposal against its rate limit for 30 s too. Now a
/// refusal costs the proposer nothing but that target (it asks the next weakest at its next
/// check), and a displaced node may be displaced again once its swap has settled (5 s).
/// Replay: `treecast-sim --mode messages --viewers 1000 --seed 1 --join-rate 100 --duration 90`.
#[test]
fn many_strong_latecomers_rise_above_the_weak_quickly() {
    for seed in 1..=3 {
        let mut net = Net::new(seed);
        // 20 weak nodes fill the top levels (the root's 4 slots, then theirs).
        for i in 0..20 {
            net.spawn(NodeId(100 + i), Role::Relay, [1, 2][(i % 2) as usize]);
            let t = net.now + Duration::from_millis(40);
            net.run_until(t);
        }
        // Then 24 strong ones, all below them.
        for i in 0..24 {
            net.spawn(NodeId(200 + i), Role::Relay, 4);
            let t = net.now + Duration::from_millis(40);
            net.run_until(t);
        }
        // Less than one promotion interval (30 s): the old pace allowed one swap per weak
        // node in that time, far too few to sort 20 weak nodes.
        let until = net.now + Duration::from_secs(25);
        net.run_until(until);
        let truth = net.truth();
        truth.check_invariants().unwrap();
        let depth = |id: u64| truth.depth_of(NodeId(id)).unwrap();
        // The root's four children and their sixteen are all strong now.
        let top: Vec<u64> = (0..20)
            .map(|i| 100 + i)
            .chain((0..24).map(|i| 200 + i))
            .filter(|&id| depth(id) <= 2)
            .collect();
        let weak_on_top: Vec<u64> = top.iter().copied().filter(|&id| id < 200).collect();
        assert!(
            weak_on_top.is_empty(),
            "seed {seed}: weak nodes {weak_on_top:?} still in the top two levels"
        );
    }
}
