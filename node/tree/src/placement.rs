//! Placement: where a newcomer (or an orphan with its subtree) attaches.
//!
//! Rule: the shallowest attached node with a free slot; among equals native before browser,
//! then most spare slots, then most stable, then lowest id. Never a node inside the joiner's own
//! subtree (that would make a cycle), never a node whose chain to the root is broken. The result
//! is a ranked list so a joiner can fall back at once when a slot was just taken.
//! See docs/tree.md, "Placement".

use crate::id::NodeId;
use crate::record::MAX_DEPTH;
use crate::view::View;

/// One place a joiner may attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The node to ask for a slot.
    pub parent: NodeId,
    /// The depth the joiner would have there.
    pub depth: u16,
}

/// Ranked candidates, best first. Empty when the tree has no free slot the joiner may use.
#[must_use]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Best first.
    pub candidates: Vec<Candidate>,
}

impl Placement {
    /// The best candidate.
    pub fn best(&self) -> Option<Candidate> {
        self.candidates.first().copied()
    }
}

/// What a placement must stay away from, besides the joiner's own subtree.
#[derive(Debug, Clone, Default)]
pub struct Avoid {
    /// Nodes not to ask (they refused, or were just lost).
    pub nodes: Vec<NodeId>,
    /// Nodes whose whole subtree is off limits (the lost parent during a repair).
    pub subtrees: Vec<NodeId>,
}

/// Ranks up to `limit` places for `joiner` in `view`.
pub fn place(view: &View, joiner: NodeId, avoid: &Avoid, limit: usize) -> Placement {
    let mut candidates = Vec::with_capacity(limit.min(16));
    let mut struggling = Vec::new();
    // Bounded scan: a hostile view could hold many nodes that look open but are not attached.
    let mut forbidden = Vec::with_capacity(1 + avoid.subtrees.len());
    forbidden.push(joiner);
    forbidden.extend_from_slice(&avoid.subtrees);
    let scan_cap = limit.saturating_mul(64).max(256);
    for (scanned, key) in view.open_slots().enumerate() {
        if candidates.len() >= limit || scanned >= scan_cap {
            break;
        }
        let p = key.id;
        if p == joiner || avoid.nodes.contains(&p) {
            continue;
        }
        // The claimed depth must be the real one (the chain to the root is intact), and the
        // chain must not pass through the joiner or a subtree to avoid: one walk checks both.
        let Some(depth) = view.depth_avoiding(p, &forbidden) else {
            continue;
        };
        if depth != key.depth || depth >= MAX_DEPTH {
            continue;
        }
        let c = Candidate {
            parent: p,
            depth: depth + 1,
        };
        if view.is_struggling(p) {
            struggling.push(c);
        } else {
            candidates.push(c);
        }
    }
    // A parent whose children report heavy loss is a last resort.
    let room = limit.saturating_sub(candidates.len());
    candidates.extend(struggling.into_iter().take(room));
    Placement { candidates }
}
