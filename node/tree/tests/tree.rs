//! Scenario and property tests of placement, repair and promotion over the public API, with
//! decisions applied straight to a view (the simulator's fast mode).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is a test failure

use proptest::prelude::*;
use treecast_tree::*;

const ROOT: NodeId = NodeId(1);

fn stream() -> StreamId {
    StreamId::new("test").unwrap()
}

fn tree_with_root() -> View {
    let mut v = View::new(stream());
    v.set_trusted_root(ROOT);
    v.apply_join(Node::new(ROOT, Role::Broadcaster, 4), Time::ZERO);
    v
}

/// Joins `id` at the best place, then lets it rise while it can.
fn join(v: &mut View, id: NodeId, capacity: u8) -> Result<(), String> {
    v.apply_join(Node::new(id, Role::Relay, capacity), Time::ZERO);
    let best = place(v, id, &Avoid::default(), 4)
        .best()
        .ok_or("no place")?;
    v.apply_attach(id, best.parent, Time::ZERO)
        .map_err(|e| e.to_string())?;
    for _ in 0..MAX_DEPTH {
        match plan_promotion(v, id, 1) {
            Some(p) => v
                .apply_promotion(&p, Time::ZERO)
                .map_err(|e| e.to_string())?,
            None => break,
        }
    }
    Ok(())
}

/// Crashes `id` and lets its orphans carry out their precomputed plans.
fn crash(v: &mut View, id: NodeId) -> Vec<NodeId> {
    let orphans: Vec<NodeId> = v.children_of(id).collect();
    let mut plans: Vec<_> = orphans.iter().map(|&o| (o, plan_repair(v, o, 8))).collect();
    // The successor goes first, as it does live: its siblings' plans count on it being in place.
    plans.sort_by_key(|(_, p)| {
        !matches!(
            p.as_ref().and_then(|p| p.targets.first()),
            Some(RepairTarget::Replace { .. })
        )
    });
    v.apply_remove(id, Time::ZERO);
    for (o, plan) in plans {
        let mut ok = false;
        if let Some(plan) = plan {
            for t in plan.targets {
                if v.apply_repair(o, plan.lost, t, Time::ZERO).is_ok() {
                    if let RepairTarget::Replace { .. } = t {
                        // The successor makes room for its siblings.
                        v.apply_shed(o, orphans.len() - 1, Time::ZERO);
                    }
                    ok = true;
                    break;
                }
            }
        }
        if !ok {
            // Fall back to a fresh placement, as a live node does after its plan ran out.
            let lost_avoid = Avoid {
                nodes: vec![id],
                ..Avoid::default()
            };
            if let Some(c) = place(v, o, &lost_avoid, 4).best() {
                v.apply_attach(o, c.parent, Time::ZERO).unwrap();
            }
        }
    }
    orphans
}

#[test]
fn newcomers_fill_the_shallowest_slots() {
    let mut v = tree_with_root();
    for i in 0..20 {
        join(&mut v, NodeId(100 + i), 4).unwrap();
    }
    v.check_settled().unwrap();
    let depths: Vec<u16> = (0..20)
        .map(|i| v.depth_of(NodeId(100 + i)).unwrap())
        .collect();
    assert_eq!(depths.iter().filter(|&&d| d == 1).count(), 4);
    assert_eq!(depths.iter().filter(|&&d| d == 2).count(), 16);
}

#[test]
fn placement_never_picks_inside_the_joiners_subtree() {
    let mut v = tree_with_root();
    join(&mut v, NodeId(10), 1).unwrap();
    join(&mut v, NodeId(11), 1).unwrap();
    // 10 (or 11) sits under the root, the other under it; fill the root.
    for i in 0..3 {
        join(&mut v, NodeId(20 + i), 0).unwrap();
    }
    let top = v
        .children_of(ROOT)
        .find(|&c| v.get(c).unwrap().capacity == 1)
        .unwrap();
    let p = place(&v, top, &Avoid::default(), 10);
    for c in &p.candidates {
        assert!(!v.in_subtree(c.parent, top), "{c:?} lies under {top:?}");
    }
}

#[test]
fn orphans_keep_their_subtrees_and_the_successor_takes_the_slot() {
    let mut v = tree_with_root();
    for i in 0..40 {
        join(&mut v, NodeId(100 + i), 4).unwrap();
    }
    let victim = v.children_of(ROOT).next().unwrap();
    let orphans: Vec<NodeId> = v.children_of(victim).collect();
    let grandchildren: Vec<Vec<NodeId>> = orphans
        .iter()
        .map(|&o| v.children_of(o).collect())
        .collect();
    let succ = successor(&v, victim).unwrap();
    crash(&mut v, victim);
    v.check_settled().unwrap();
    assert_eq!(
        v.parent_of(succ),
        Some(ROOT),
        "the successor takes the lost slot"
    );
    for (o, kids) in orphans.iter().zip(grandchildren) {
        assert!(v.depth_of(*o).is_some(), "{o:?} re-attached");
        let now: Vec<NodeId> = v.children_of(*o).collect();
        for k in kids {
            assert!(now.contains(&k), "{o:?} kept its child {k:?}");
        }
    }
}

#[test]
fn a_strong_node_rises_above_a_weak_one() {
    let mut v = tree_with_root();
    for i in 0..4 {
        join(&mut v, NodeId(10 + i), 1).unwrap();
    }
    join(&mut v, NodeId(99), 4).unwrap();
    assert_eq!(
        v.depth_of(NodeId(99)),
        Some(1),
        "the strong node is promoted under the root"
    );
    v.check_settled().unwrap();
}

#[test]
fn promotion_plans_are_make_before_break() {
    let mut v = tree_with_root();
    for i in 0..4 {
        v.apply_join(Node::new(NodeId(10 + i), Role::Relay, 1), Time::ZERO);
        v.apply_attach(NodeId(10 + i), ROOT, Time::ZERO).unwrap();
    }
    v.apply_join(Node::new(NodeId(99), Role::Relay, 4), Time::ZERO);
    v.apply_attach(NodeId(99), NodeId(10), Time::ZERO).unwrap();
    let plan = plan_promotion(&v, NodeId(99), 1).unwrap();
    assert_eq!((plan.up, plan.down), (NodeId(99), NodeId(10)));
    let open: Vec<_> = plan.open.iter().map(|l| (l.parent, l.child)).collect();
    let close: Vec<_> = plan.close.iter().map(|l| (l.parent, l.child)).collect();
    assert_eq!(open, vec![(ROOT, NodeId(99)), (NodeId(99), NodeId(10))]);
    assert_eq!(close, vec![(ROOT, NodeId(10)), (NodeId(10), NodeId(99))]);
}

#[test]
fn native_nodes_take_a_browser_parent_only_as_a_last_resort() {
    let mut v = View::new(stream());
    v.set_trusted_root(ROOT);
    v.apply_join(Node::new(ROOT, Role::Broadcaster, 1), Time::ZERO);
    let mut b = Node::new(NodeId(2), Role::Viewer, 4);
    b.platform = Platform::Browser;
    v.apply_join(b, Time::ZERO);
    v.apply_attach(NodeId(2), ROOT, Time::ZERO).unwrap();
    // The only open slots are the browser's: a browser may take one, a native node may not.
    let mut b3 = Node::new(NodeId(3), Role::Viewer, 0);
    b3.platform = Platform::Browser;
    v.apply_join(b3, Time::ZERO);
    let best = place(&v, NodeId(3), &Avoid::default(), 4).best().unwrap();
    assert_eq!(best.parent, NodeId(2));
    v.apply_join(Node::new(NodeId(4), Role::Relay, 1), Time::ZERO);
    let best = place(&v, NodeId(4), &Avoid::default(), 4).best().unwrap();
    assert_eq!(best.parent, NodeId(2), "no native slot left: the browser's");
    v.apply_attach(NodeId(4), NodeId(2), Time::ZERO).unwrap();
    // Now a native slot exists one level deeper than the browser's: a native joiner (or one
    // the view has not heard of yet) prefers it, a browser joiner takes the shallower one.
    v.apply_join(Node::new(NodeId(5), Role::Relay, 1), Time::ZERO);
    assert_eq!(
        place(&v, NodeId(5), &Avoid::default(), 4)
            .best()
            .unwrap()
            .parent,
        NodeId(4)
    );
    assert_eq!(
        place(&v, NodeId(6), &Avoid::default(), 4)
            .best()
            .unwrap()
            .parent,
        NodeId(4)
    );
    assert_eq!(
        place(&v, NodeId(3), &Avoid::default(), 4)
            .best()
            .unwrap()
            .parent,
        NodeId(2)
    );
}

#[test]
fn hostile_cyclic_gossip_does_not_hang_walks() {
    let mut v = tree_with_root();
    // 5 -> 6 -> 7 -> 5: each names the next as parent, and each parent agrees.
    for (id, parent, child) in [(5, 6, 7), (6, 7, 5), (7, 5, 6)] {
        let mut n = Node::new(NodeId(id), Role::Relay, 4);
        n.parent = Some(NodeId(parent));
        n.depth = 1;
        n.children.insert(NodeId(child));
        v.merge_node(n, Time::ZERO).unwrap();
    }
    assert_eq!(v.depth_of(NodeId(5)), None);
    assert!(v.check_invariants().is_err(), "the cycle is reported");
    let p = place(&v, NodeId(77), &Avoid::default(), 4);
    assert_eq!(
        p.candidates.iter().map(|c| c.parent).collect::<Vec<_>>(),
        vec![ROOT]
    );
}

#[test]
fn only_the_trusted_root_may_be_broadcaster() {
    let mut v = tree_with_root();
    let fake = Node::new(NodeId(666), Role::Broadcaster, 4);
    assert_eq!(v.merge_node(fake, Time::ZERO), Err(MergeError::NotRoot));
}

#[test]
fn silent_nodes_expire() {
    let mut v = tree_with_root();
    v.apply_join(Node::new(NodeId(2), Role::Relay, 4), Time::from_secs(10));
    let ttl = std::time::Duration::from_secs(30);
    assert_eq!(v.expire(Time::from_secs(35), ttl, NodeId(2)), vec![ROOT]);
    assert_eq!(
        v.expire(Time::from_secs(100), ttl, NodeId(2)),
        Vec::<NodeId>::new()
    );
    assert_eq!(v.len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Crash(usize),
    Leave(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0u8..=4).prop_map(Op::Join),
            1 => any::<usize>().prop_map(Op::Crash),
            1 => any::<usize>().prop_map(Op::Leave),
        ],
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_operations_keep_every_invariant(ops in ops()) {
        let mut v = tree_with_root();
        let mut next = 100u64;
        for op in ops {
            match op {
                Op::Join(cap) => {
                    next += 1;
                    // A full tree (all leaves of capacity 0) may have no place: that is fine.
                    let _ = join(&mut v, NodeId(next), cap);
                }
                Op::Crash(i) | Op::Leave(i) => {
                    let ids: Vec<NodeId> = v.nodes().map(|n| n.id).filter(|&id| id != ROOT).collect();
                    if !ids.is_empty() {
                        crash(&mut v, ids[i % ids.len()]);
                    }
                }
            }
            prop_assert_eq!(v.check_invariants(), Ok(()));
        }
        // Nodes that found no place are detached; everyone else is settled.
        // Nodes that found no place (and the subtrees below them) are not connected to the
        // root; everyone else must be settled.
        let detached: Vec<NodeId> = v.nodes().filter(|n| v.depth_of(n.id).is_none()).map(|n| n.id).collect();
        for id in detached { v.remove(id); }
        prop_assert_eq!(v.check_settled(), Ok(()));
    }

    #[test]
    fn merging_in_any_order_gives_the_same_view(
        recs in proptest::collection::vec((1u64..8, 0u64..4, 0u8..=4, proptest::option::of(1u64..8)), 1..40),
        seed in any::<u64>(),
    ) {
        let nodes: Vec<Node> = recs.iter().map(|&(id, seq, cap, parent)| {
            let mut n = Node::new(NodeId(id), Role::Relay, cap);
            n.seq = seq;
            if let Some(p) = parent.filter(|&p| p != id) {
                n.parent = Some(NodeId(p));
                n.depth = 1;
            }
            n
        }).collect();
        let mut shuffled = nodes.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut a = View::new(stream());
        let mut b = View::new(stream());
        for n in &nodes { let _ = a.merge_node(*n, Time::ZERO); }
        for n in &shuffled { let _ = b.merge_node(*n, Time::ZERO); }
        for n in &nodes { let _ = b.merge_node(*n, Time::ZERO); } // idempotent too
        let mut av: Vec<Node> = a.nodes().copied().collect();
        let mut bv: Vec<Node> = b.nodes().copied().collect();
        av.sort();
        bv.sort();
        prop_assert_eq!(av, bv);
    }

    #[test]
    fn checking_some_nodes_finds_each_cycle_a_full_walk_finds(
        parents in proptest::collection::vec((1u64..12, proptest::bool::weighted(0.9)), 10),
        picks in proptest::collection::vec(1u64..12, 1..12),
    ) {
        // Nodes 2..12 under random parents, listed by them or not (cycles, chains into cycles,
        // one-sided claims), then some nodes checked in a random order: the walks check_nodes
        // shares between them must report exactly the cycles a walk from each node alone finds.
        let mut v = tree_with_root();
        let named = |id: u64| parents[(id - 2) as usize].0;
        for id in 2u64..12 {
            let mut n = Node::new(NodeId(id), Role::Relay, 4);
            n.seq = 1;
            if named(id) != id {
                n.parent = Some(NodeId(named(id)));
                n.depth = 1;
            }
            for c in (2u64..12).filter(|&c| c != id && named(c) == id && parents[(c - 2) as usize].1) {
                if n.children.len() < 4 && n.parent != Some(NodeId(c)) {
                    n.children.insert(NodeId(c));
                }
            }
            let _ = v.merge_node(n, Time::ZERO);
        }
        let on_cycle = |id: NodeId| {
            let mut at = id;
            for _ in 0..=v.len() {
                match v.parent_of(at) {
                    Some(p) if p == id => return true,
                    Some(p) => at = p,
                    None => return false,
                }
            }
            false
        };
        let ids: Vec<NodeId> = picks.iter().map(|&i| NodeId(i)).collect();
        let mut want: Vec<NodeId> = ids.iter().copied().filter(|&id| v.get(id).is_some() && on_cycle(id)).collect();
        want.sort();
        want.dedup();
        let mut got: Vec<NodeId> = match v.check_nodes(&ids) {
            Ok(()) => Vec::new(),
            Err(vs) => vs.into_iter().filter_map(|x| match x { Violation::Cycle(n) => Some(n), _ => None }).collect(),
        };
        got.sort();
        got.dedup();
        prop_assert_eq!(got, want);
    }
}
