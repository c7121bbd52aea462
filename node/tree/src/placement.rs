//! Placement: where a newcomer (or an orphan with its subtree) attaches.
//!
//! Rule: the shallowest attached node with a free slot; among equals native before browser,
//! then most spare slots, then most stable, then lowest id. Never a node inside the joiner's own
//! subtree (that would make a cycle), never a node whose chain to the root is broken. A native
//! joiner takes a browser parent only as a last resort, after every native one at any depth: a
//! browser re-encodes what it relays, and can vanish with a closed tab. (Forbidding it outright
//! deadlocks: browsers that arrived first can fill every slot near the root, and a native
//! newcomer could never get in to be promoted above them.) The result
//! is a ranked list so a joiner can fall back at once when a slot was just taken.
//! See docs/tree.md, "Placement".

use crate::id::NodeId;
use crate::record::{MAX_DEPTH, Platform};
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
    /// The deepest the joiner may end up, if limited (see [`crate::plan_repair`]).
    pub max_depth: Option<u16>,
}

/// Ranks up to `limit` places for `joiner` in `view`.
pub fn place(view: &View, joiner: NodeId, avoid: &Avoid, limit: usize) -> Placement {
    // Nobody claims a free slot shallow enough (a count, no index read): the scan below would
    // stop at its first key.
    if avoid.max_depth.is_some_and(|m| {
        view.shallowest_open_depth()
            .is_none_or(|d| d.saturating_add(1) > m)
    }) {
        return Placement {
            candidates: Vec::new(),
        };
    }
    let mut candidates = Vec::with_capacity(limit.min(16));
    let mut struggling = Vec::new();
    let mut browsers = Vec::new();
    // Bounded scan: a hostile view could hold many nodes that look open but are not attached.
    let mut forbidden = Vec::with_capacity(1 + avoid.subtrees.len());
    forbidden.push(joiner);
    forbidden.extend_from_slice(&avoid.subtrees);
    let scan_cap = limit.saturating_mul(64).max(256);
    // A joiner the view does not know yet is taken for native.
    let native = view
        .get(joiner)
        .is_none_or(|n| n.platform == Platform::Native);
    for (scanned, key) in view.open_slots().enumerate() {
        if candidates.len() >= limit || scanned >= scan_cap {
            break;
        }
        // The index is ordered by depth: past the limit, every later slot is deeper still.
        if avoid
            .max_depth
            .is_some_and(|m| key.depth.saturating_add(1) > m)
        {
            break;
        }
        let p = key.id;
        if p == joiner || avoid.nodes.contains(&p) {
            continue;
        }
        let browser_parent = native && view.get(p).is_some_and(|n| n.platform == Platform::Browser);
        // The claimed depth must be the real one (the chain to the root is intact), and the
        // chain must not pass through the joiner or a subtree to avoid: one walk checks both.
        let Some(depth) = view.depth_avoiding(p, &forbidden) else {
            continue;
        };
        if depth != key.depth
            || depth >= MAX_DEPTH
            || avoid.max_depth.is_some_and(|m| depth + 1 > m)
        {
            continue;
        }
        let c = Candidate {
            parent: p,
            depth: depth + 1,
        };
        if browser_parent {
            browsers.push(c);
        } else if view.is_struggling(p) {
            struggling.push(c);
        } else {
            candidates.push(c);
        }
    }
    // A parent whose children report heavy loss is a last resort.
    let room = limit.saturating_sub(candidates.len());
    candidates.extend(struggling.into_iter().take(room));
    let room = limit.saturating_sub(candidates.len());
    candidates.extend(browsers.into_iter().take(room));
    Placement { candidates }
}

/// The default `margin` of [`plan_move`]: two levels, so a node one level too deep stays put
/// (moving costs a switch of upstream for its whole subtree) while deeper ones move.
pub const MOVE_MARGIN: u16 = 2;

/// A free slot at least `margin` levels higher than where `me` is now (outside its own
/// subtree), if there is one: moving there with the whole subtree makes the tree shallower.
///
/// Each such move makes the node and its subtree strictly shallower, so moves for a fixed set of
/// nodes always end, and two nodes moving at once cannot end up in each other's subtree (each
/// would have to sit deeper than the other). See docs/tree.md, "Rebalancing".
pub fn plan_move(view: &View, me: NodeId, margin: u16) -> Option<Candidate> {
    let depth = view.depth_of(me)?;
    let limit = depth.checked_sub(margin.max(1))?;
    let avoid = Avoid {
        max_depth: Some(limit),
        ..Avoid::default()
    };
    place(view, me, &avoid, 1).best()
}
