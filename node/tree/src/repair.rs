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
use crate::record::Role;
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
                n.spare(),
                n.capacity,
                stability(n.uptime_s),
                std::cmp::Reverse(n.id),
            )
        })
        .map(|n| n.id)
}

/// The plan for `me` should its current parent be lost; `None` at the root, while detached,
/// or when the parent is the root (the stream ends with it).
pub fn plan_repair(view: &View, me: NodeId, limit: usize) -> Option<Repair> {
    let lost = view.parent_of(me)?;
    if view.get(lost)?.role == Role::Broadcaster {
        return None;
    }
    let grandparent = view.parent_of(lost);
    let succ = successor(view, lost);
    let mut targets = Vec::with_capacity(limit.min(8));
    match (succ, grandparent) {
        (Some(s), Some(g)) if s == me => targets.push(RepairTarget::Replace { grandparent: g }),
        (Some(s), Some(_)) => {
            // Siblings take the successor's spare slots in a fixed order everyone computes alike.
            let room = view.get(s).map_or(0, |n| n.spare());
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
    let avoid = Avoid {
        nodes: vec![lost],
        subtrees: vec![lost],
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
