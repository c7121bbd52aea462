//! Promotion: a stronger node swaps places with a weaker node higher up.
//!
//! Rule (docs/tree.md, "Promotion"): node `up` swaps with `down` when `down` sits at a smaller
//! depth and `up` can feed at least `margin` more children than `down` (a browser never
//! displaces a native node). `up` looks at the shallowest level first and picks the weakest
//! node there. Each swap strictly raises the total of capacity weighted by height, so
//! swaps for fixed capacities always end; the margin and the shells' rate limits keep changing
//! capacity measurements from making the tree thrash.
//!
//! The two nodes exchange positions: `up` takes `down`'s parent and children, `down` takes
//! `up`'s. Depths of everyone else stay the same, except children `down` cannot feed, which
//! stay with `up` and so move up. The plan lists the links to open first and those to close
//! after (make-before-break), and the final parent and children of every node involved.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::NodeId;
use crate::record::{Children, Platform, Role};
use crate::view::View;

/// A directed media link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Link {
    /// The sender.
    pub parent: NodeId,
    /// The receiver.
    pub child: NodeId,
}

/// Where one node ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The node.
    pub node: NodeId,
    /// Its parent after the change.
    pub parent: Option<NodeId>,
    /// Its children after the change.
    pub children: Children,
}

/// A swap, with its make-before-break plan.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The stronger node, moving up.
    pub up: NodeId,
    /// The weaker node, moving down.
    pub down: NodeId,
    /// Links to open before any is closed.
    pub open: Vec<Link>,
    /// Links to close once the new ones carry media.
    pub close: Vec<Link>,
    /// Final parent and children of every node whose record changes.
    pub placed: Vec<Placed>,
}

/// The swap `me` should propose, if any node higher up is weaker by at least `margin`.
pub fn plan_promotion(view: &View, me: NodeId, margin: u8) -> Option<Promotion> {
    plan_promotion_avoiding(view, me, margin, &[])
}

/// [`plan_promotion`], passing over the nodes in `avoid`: they just refused a swap (busy with
/// another) or did not answer, so asking them again at once is pointless, while the next
/// weakest may say yes.
pub fn plan_promotion_avoiding(
    view: &View,
    me: NodeId,
    margin: u8,
    avoid: &[NodeId],
) -> Option<Promotion> {
    let up = view.get(me)?;
    // A node whose children report heavy loss has shown it cannot feed what it declares.
    if up.role == Role::Broadcaster || up.slots() == 0 || view.is_struggling(me) {
        return None;
    }
    let my_depth = view.depth_of(me)?;
    for depth in 1..my_depth {
        // The weakest capacity at this depth, from a count (no search): most levels of a
        // well-sorted tree hold nobody weak enough, and are skipped at once.
        let Some(weakest) = view.weakest_capacity_at(depth) else {
            continue;
        };
        if up.capacity < weakest.saturating_add(margin.max(1)) {
            continue;
        }
        // The weakest nodes at this depth by their claims; only an eligible one is verified
        // (its claimed depth must be its real one).
        for k in view.ranked_at(depth).take(8 + avoid.len()) {
            if up.capacity < k.capacity.saturating_add(margin.max(1)) {
                break; // the rest of this level is at least as strong
            }
            if avoid.contains(&k.id) {
                continue;
            }
            let Some(d) = view.get(k.id) else { continue };
            if up.platform > d.platform || view.depth_of(k.id) != Some(depth) {
                continue;
            }
            if let Some(p) = swap(view, me, k.id) {
                return Some(p);
            }
        }
    }
    None
}

/// The plan for `up` and `down` to exchange places; `None` if the view cannot support it.
pub fn swap(view: &View, up: NodeId, down: NodeId) -> Option<Promotion> {
    let u = view.get(up)?;
    let d = view.get(down)?;
    let pd = view.parent_of(down)?;
    let pu = view.parent_of(up)?;
    let cd: Vec<NodeId> = view.children_of(down).collect();
    let mut cu: Vec<NodeId> = view.children_of(up).collect();
    // Strongest children first: those `down` cannot feed stay with `up` and move up a level.
    cu.sort_by_key(|&c| (std::cmp::Reverse(view.get(c).map_or(0, |n| n.capacity)), c));
    let keep = cu.len().min(d.slots());
    let (overflow, to_down) = cu.split_at(cu.len() - keep);
    // Native children never go under a browser (see placement).
    let native = |c: &NodeId| view.get(*c).is_none_or(|n| n.platform == Platform::Native);
    if d.platform == Platform::Browser && to_down.iter().any(native) {
        return None;
    }
    let direct = pu == down;

    let up_children = cd
        .iter()
        .copied()
        .filter(|&c| c != up)
        .chain(direct.then_some(down))
        .chain(overflow.iter().copied());
    let up_children = Children::from_ids(up_children)?;
    if up_children.len() > u.slots() {
        return None;
    }
    let down_children = Children::from_ids(to_down.iter().copied())?;
    let down_parent = if direct { up } else { pu };

    if !direct && pu == pd {
        return None; // same depth: nothing to gain
    }
    // Every node whose record changes, starting from what it has now; a node can play two
    // parts (the parent of `up` may also be a child of `down`), so the edits accumulate.
    let mut placed: BTreeMap<NodeId, Placed> = BTreeMap::new();
    let mut edit = |id: NodeId, f: &mut dyn FnMut(&mut Placed)| -> Option<()> {
        let p = match placed.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let n = view.get(id)?;
                e.insert(Placed {
                    node: id,
                    parent: n.parent,
                    children: n.children,
                })
            }
        };
        f(p);
        Some(())
    };
    for &c in cd.iter().filter(|&&c| c != up).chain(overflow) {
        edit(c, &mut |p| p.parent = Some(up))?;
    }
    for &c in to_down {
        edit(c, &mut |p| p.parent = Some(down))?;
    }
    edit(pd, &mut |p| {
        p.children.remove(down);
        p.children.insert(up);
    })?;
    if !direct {
        edit(pu, &mut |p| {
            p.children.remove(up);
            p.children.insert(down);
        })?;
    }
    edit(up, &mut |p| {
        p.parent = Some(pd);
        p.children = up_children;
    })?;
    edit(down, &mut |p| {
        p.parent = Some(down_parent);
        p.children = down_children;
    })?;
    let placed: Vec<Placed> = placed.into_values().collect();

    let old: BTreeSet<Link> = [(pd, down), (pu, up)]
        .into_iter()
        .chain(cd.iter().map(|&c| (down, c)))
        .chain(cu.iter().map(|&c| (up, c)))
        .map(|(parent, child)| Link { parent, child })
        .collect();
    let new: BTreeSet<Link> = placed
        .iter()
        .filter(|p| p.node == up || p.node == down)
        .flat_map(|p| {
            p.parent
                .map(|parent| Link {
                    parent,
                    child: p.node,
                })
                .into_iter()
                .chain(p.children.iter().map(move |child| Link {
                    parent: p.node,
                    child,
                }))
        })
        .collect();
    Some(Promotion {
        up,
        down,
        open: new.difference(&old).copied().collect(),
        close: old.difference(&new).copied().collect(),
        placed,
    })
}
