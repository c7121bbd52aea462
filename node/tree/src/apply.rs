//! Applying decisions straight to a view, as if every node involved had carried out its part at
//! the same instant. This is the simulator's fast mode and a convenient way for tests to build
//! trees; live nodes reach the same states through the [`crate::Agent`] protocol instead.
//!
//! Every change goes through [`View::merge_node`] with a higher `seq`, so indexes stay right and
//! the result is a view that gossip could have produced.

use crate::id::{NodeId, Time};
use crate::promotion::Promotion;
use crate::record::{DETACHED, MAX_DEPTH, Node};
use crate::repair::RepairTarget;
use crate::view::View;

/// Why a decision could not be applied to the view as it is now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A node the decision names is not in the view.
    #[error("unknown node {0:?}")]
    Unknown(NodeId),
    /// The parent has no free slot.
    #[error("{0:?} has no free slot")]
    Full(NodeId),
    /// The parent is not connected to the root.
    #[error("{0:?} is not attached to the root")]
    Detached(NodeId),
    /// The parent is inside the child's own subtree.
    #[error("attaching would make a cycle")]
    Cycle,
}

impl View {
    /// Adds a node that has just arrived, detached.
    pub fn apply_join(&mut self, mut node: Node, now: Time) {
        node.parent = None;
        node.children = Default::default();
        if node.role != crate::Role::Broadcaster {
            node.depth = DETACHED;
        }
        node.seq = self
            .get(node.id)
            .map_or(node.seq, |old| old.seq.max(node.seq) + 1);
        // A freshly built record is valid by construction.
        let _ = self.merge_node(node, now);
    }

    /// `child` (with its subtree) attaches to `parent`, leaving its old parent if it had one.
    pub fn apply_attach(
        &mut self,
        child: NodeId,
        parent: NodeId,
        now: Time,
    ) -> Result<(), ApplyError> {
        let p = *self.get(parent).ok_or(ApplyError::Unknown(parent))?;
        let c = *self.get(child).ok_or(ApplyError::Unknown(child))?;
        if p.spare() == 0 {
            return Err(ApplyError::Full(parent));
        }
        // One walk: the parent is attached, and not inside the child's subtree.
        let depth = self.depth_avoiding(parent, &[child]).ok_or_else(|| {
            if self.in_subtree(parent, child) {
                ApplyError::Cycle
            } else {
                ApplyError::Detached(parent)
            }
        })?;
        if depth >= MAX_DEPTH {
            return Err(ApplyError::Cycle);
        }
        if let Some(old) = c.parent.filter(|&old| old != parent) {
            self.edit(old, now, |n| {
                n.children.remove(child);
            });
        }
        self.edit(parent, now, |n| {
            n.children.insert(child);
        });
        self.edit(child, now, |n| {
            n.parent = Some(parent);
            n.depth = depth + 1;
        });
        self.fix_depths(child, now);
        Ok(())
    }

    /// `id` crashed or left: its record goes, its parent drops it, and its children, now
    /// orphans, mark themselves detached (keeping their own children) until they repair.
    /// Returns the orphans.
    pub fn apply_remove(&mut self, id: NodeId, now: Time) -> Vec<NodeId> {
        let orphans: Vec<NodeId> = self.children_of(id).collect();
        if let Some(p) = self.parent_of(id) {
            self.edit(p, now, |n| {
                n.children.remove(id);
            });
        }
        self.remove(id);
        for &o in &orphans {
            self.edit(o, now, |n| {
                n.parent = None;
                n.depth = DETACHED;
            });
        }
        orphans
    }

    /// An orphan of `lost` carries out one step of its repair plan.
    pub fn apply_repair(
        &mut self,
        me: NodeId,
        lost: NodeId,
        target: RepairTarget,
        now: Time,
    ) -> Result<(), ApplyError> {
        if let RepairTarget::Replace { grandparent } = target
            && self
                .get(grandparent)
                .is_some_and(|g| g.children.contains(lost))
        {
            self.edit(grandparent, now, |n| {
                n.children.remove(lost);
            });
        }
        self.apply_attach(me, target.parent(), now)
    }

    /// `node` makes room for `need` more children by handing children down its subtree
    /// ([`crate::plan_shed`]); false if it cannot.
    pub fn apply_shed(&mut self, node: NodeId, need: usize, now: Time) -> bool {
        let Some(steps) = crate::plan_shed(self, node, need) else {
            return false;
        };
        // Bottom up, so every receiver has room when its nodes arrive.
        for step in steps.iter().rev() {
            for n in step.nodes {
                self.edit(step.from, now, |r| {
                    r.children.remove(n);
                });
                self.edit(step.to, now, |r| {
                    r.children.insert(n);
                });
                self.edit(n, now, |r| r.parent = Some(step.to));
                self.fix_depths(n, now);
            }
        }
        true
    }

    /// Carries out a promotion: every node involved takes its planned parent and children.
    pub fn apply_promotion(&mut self, plan: &Promotion, now: Time) -> Result<(), ApplyError> {
        for p in &plan.placed {
            if self.get(p.node).is_none() {
                return Err(ApplyError::Unknown(p.node));
            }
        }
        for p in &plan.placed {
            self.edit(p.node, now, |n| {
                n.parent = p.parent;
                n.children = p.children;
            });
        }
        // `up` now sits where `down` was: depths below it follow.
        self.fix_depths(plan.up, now);
        self.fix_depths(plan.down, now);
        Ok(())
    }

    /// Rewrites one node's record with a higher seq.
    fn edit(&mut self, id: NodeId, now: Time, f: impl FnOnce(&mut Node)) {
        if let Some(mut n) = self.get(id).copied() {
            f(&mut n);
            n.seq += 1;
            // Edits above keep records valid; an invalid one is simply not applied.
            let _ = self.merge_node(n, now);
        }
    }

    /// Sets the depths in the subtree under `top` (itself included) from agreed parents.
    /// Below a node whose depth was already right nothing changes, so the walk stops there:
    /// a swap near the root touches the nodes that moved, not the whole tree under them.
    fn fix_depths(&mut self, top: NodeId, now: Time) {
        let mut stack = vec![top];
        let mut visited = 0usize;
        while let Some(at) = stack.pop() {
            visited += 1;
            if visited > self.len() {
                break; // only a cycle could get here; check_invariants reports it
            }
            let depth = match self.parent_of(at).and_then(|p| self.get(p)) {
                Some(p) if p.depth < MAX_DEPTH => p.depth + 1,
                _ => DETACHED,
            };
            let Some(n) = self.get(at) else { continue };
            let changed = n.depth != depth && n.role != crate::Role::Broadcaster;
            if changed {
                self.edit(at, now, |n| n.depth = depth);
            }
            if changed || at == top {
                stack.extend(self.children_of(at));
            }
        }
    }
}
