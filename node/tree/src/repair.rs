//! Repair: what an orphan does when its parent is lost, decided before it happens.
//!
//! Rules (docs/tree.md, "Repair"):
//! 1. Every orphan keeps its own children: only the link above it is replaced.
//! 2. The lost parent's *successor* is the orphan with the most spare slots (then the highest
//!    capacity, then the most stable, then the lowest id). It takes the lost parent's slot at
//!    the grandparent, which has just become free, so it and its subtree move up one level.
//! 3. The other orphans attach under the successor while it has room (in order of capacity,
//!    then id), so they keep their depth; the rest go to the best placement outside the lost
//!    parent's subtree.
//!
//! Every orphan's new parent is therefore the successor or a node outside the lost subtree, and
//! the successor's is outside it too: repairs running at once cannot form a cycle.

use crate::id::NodeId;
use crate::placement::{Avoid, place};
use crate::record::{Children, MAX_DEPTH, Node, Role};
use crate::view::{View, stability};

/// Where to go, in order, when the parent is lost.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The parent this plan replaces.
    pub lost: NodeId,
    /// Targets, best first.
    pub targets: Vec<RepairTarget>,
}

/// One step of a repair plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairTarget {
    /// Take the lost parent's slot at its parent (this node is the successor).
    Replace {
        /// The lost parent's parent.
        grandparent: NodeId,
    },
    /// Attach to this node like a joiner.
    Attach(NodeId),
}

impl RepairTarget {
    /// The node to ask.
    pub fn parent(self) -> NodeId {
        match self {
            RepairTarget::Replace { grandparent } => grandparent,
            RepairTarget::Attach(p) => p,
        }
    }
}

/// The successor of `lost` among its agreed children, if any child can feed others.
pub fn successor(view: &View, lost: NodeId) -> Option<NodeId> {
    view.children_of(lost)
        .filter_map(|c| view.get(c))
        .filter(|n| n.slots() > 0)
        .max_by_key(|n| {
            (
                n.capacity,
                n.spare(),
                stability(n.uptime_s),
                std::cmp::Reverse(n.id),
            )
        })
        .map(|n| n.id)
}

/// One step of making room: `from` hands `nodes` (some of its children) to `to` (its strongest
/// child), whose depth they then have... one level deeper than under `from`, which is exactly
/// their old depth once `from` has moved up into its lost parent's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    /// The node making room.
    pub from: NodeId,
    /// Its child that takes the nodes.
    pub to: NodeId,
    /// The children handed down.
    pub nodes: Children,
}

/// How `node` frees `need` slots by handing its weakest children to its strongest child, and
/// that child in turn if it must make room too: a chain down the subtree, empty when `node`
/// has room already, `None` when it cannot be done (a chain ends at a node with no child
/// that can feed).
///
/// This is what keeps depth under churn: when a node is lost, its successor moves up into its
/// place and takes in its siblings, and every node handed down lands where it was before. No
/// subtree is dumped at the bottom of the tree.
pub fn plan_shed(view: &View, node: NodeId, need: usize) -> Option<Vec<Shed>> {
    let mut steps = Vec::new();
    let (mut at, mut need) = (node, need);
    for _ in 0..MAX_DEPTH {
        let n = view.get(at)?;
        let short = need.saturating_sub(n.spare());
        if short == 0 {
            return Some(steps);
        }
        let mut kids: Vec<&Node> = view.children_of(at).filter_map(|c| view.get(c)).collect();
        kids.sort_by_key(|k| (std::cmp::Reverse(k.capacity), k.id));
        let to = kids.iter().find(|k| k.slots() > 0)?.id;
        let given = kids
            .iter()
            .rev()
            .filter(|k| k.id != to)
            .take(short)
            .map(|k| k.id);
        let nodes = Children::from_ids(given)?;
        if nodes.len() < short {
            return None;
        }
        steps.push(Shed {
            from: at,
            to,
            nodes,
        });
        (at, need) = (to, short);
    }
    None
}

/// The plan for `me` should its current parent be lost; `None` at the root, while detached,
/// or when the parent is the root (the stream ends with it).
pub fn plan_repair(view: &View, me: NodeId, limit: usize) -> Option<Repair> {
    let lost = view.parent_of(me)?;
    if view.get(lost)?.role == Role::Broadcaster {
        return None;
    }
    // The lost parent's parent as both say, or as the lost parent said last: a grandparent
    // that noticed the loss first has dropped it already (and holds its slot for the
    // successor), and the plan must not change because of that.
    let grandparent = view
        .parent_of(lost)
        .or_else(|| view.get(lost).and_then(|n| n.parent));
    let succ = successor(view, lost);
    let mut targets = Vec::with_capacity(limit.min(8));
    match (succ, grandparent) {
        (Some(s), Some(g)) if s == me => targets.push(RepairTarget::Replace { grandparent: g }),
        (Some(s), Some(_)) => {
            // Siblings take the successor's slots in a fixed order everyone computes alike: all
            // of them if it can make room by handing children down (see `plan_shed`), else its
            // spare slots.
            let others = view.children_of(lost).filter(|&c| c != s).count();
            let room = if plan_shed(view, s, others).is_some() {
                others
            } else {
                view.get(s).map_or(0, |n| n.spare())
            };
            let mut siblings: Vec<_> = view
                .children_of(lost)
                .filter(|&c| c != s)
                .filter_map(|c| view.get(c))
                .map(|n| (std::cmp::Reverse(n.capacity), n.id))
                .collect();
            siblings.sort();
            if siblings.iter().take(room).any(|&(_, id)| id == me) {
                targets.push(RepairTarget::Attach(s));
            }
        }
        _ => {}
    }
    // Fallbacks no deeper than this node is now: two orphans repairing at once (of different
    // lost parents, each on a view that has not heard of the other yet) cannot then attach into
    // each other's subtree, since each would have to sit deeper than the other.
    let max_depth = view
        .get(me)
        .map(|n| n.depth)
        .filter(|&d| d != crate::DETACHED);
    let avoid = Avoid {
        nodes: vec![lost],
        subtrees: vec![lost],
        max_depth,
    };
    let rest = limit.saturating_sub(targets.len());
    targets.extend(
        place(view, me, &avoid, rest)
            .candidates
            .into_iter()
            .map(|c| RepairTarget::Attach(c.parent)),
    );
    Some(Repair { lost, targets })
}
