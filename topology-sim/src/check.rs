//! Invariant checks after every step, shared by both engines, and a subtree count.

use treecast_tree::{NodeId, Role, Time, View};

use crate::config::CheckPolicy;
use crate::metrics::Tally;

/// Checks a view after every step: `View::check_nodes` over the nodes the step touched, and
/// `View::check_invariants` over the whole view as often as the policy says.
#[derive(Debug)]
pub struct Checker {
    policy: CheckPolicy,
    /// Below this many nodes the auto policy checks the whole view after every step.
    all_below: usize,
    steps_since_full: usize,
    touched: Vec<NodeId>,
}

impl Checker {
    /// A checker following `policy`, checking the whole view after every step while it has
    /// at most `all_below` nodes (auto policy).
    pub fn new(policy: CheckPolicy, all_below: usize) -> Self {
        Checker {
            policy,
            all_below,
            steps_since_full: 0,
            touched: Vec::new(),
        }
    }

    /// Nodes whose parent or children changed in this step.
    pub fn touch(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        self.touched.extend(ids);
    }

    /// Runs the check due after a step, counting what it finds in `tally`.
    pub fn after_step(&mut self, view: &View, now: Time, tally: &mut Tally) {
        self.steps_since_full += 1;
        let full = match self.policy {
            CheckPolicy::Every => true,
            CheckPolicy::End => false,
            // Spaced by the view's size, a whole-view check costs about one node per step.
            CheckPolicy::Auto => {
                view.len() <= self.all_below || self.steps_since_full >= view.len()
            }
        };
        let found = if full {
            self.steps_since_full = 0;
            tally.full_checks += 1;
            view.check_invariants()
        } else if self.touched.is_empty() {
            Ok(())
        } else {
            self.touched.sort_unstable();
            self.touched.dedup();
            view.check_nodes(&self.touched)
        };
        self.touched.clear();
        tally.invariant_checks += 1;
        if let Err(v) = found {
            tally.violations(&v, &format!("{now:?}"));
        }
    }
}

/// Nodes in the subtree under `top`, itself included: a counting walk with a stack, capped at
/// the view's size (not `View::subtree`, whose duplicate check is quadratic in the size).
pub fn subtree_size(view: &View, top: NodeId) -> u64 {
    let mut stack = vec![top];
    let mut n = 0u64;
    while let Some(at) = stack.pop() {
        n += 1;
        if n as usize > view.len() {
            break; // only a cycle gets here, and check_invariants reports it
        }
        stack.extend(view.children_of(at));
    }
    n
}

/// The end of a run, the same in both modes: the nodes not connected to the root (still
/// repairing or waiting) leave the tree, then what must hold once the tree is quiet is checked
/// over the whole view. Returns how many nodes left.
pub fn final_checks(view: &mut View, tally: &mut Tally) -> u64 {
    let gone: Vec<NodeId> = view
        .unattached()
        .into_iter()
        .filter(|&id| view.get(id).is_some_and(|n| n.role != Role::Broadcaster))
        .collect();
    if !gone.is_empty() {
        // They are about to leave the view: check them first. (Otherwise the settled check
        // below covers check_invariants.)
        tally.invariant_checks += 1;
        tally.full_checks += 1;
        if let Err(v) = view.check_invariants() {
            tally.violations(&v, "end");
        }
    }
    for &id in &gone {
        view.remove(id);
    }
    tally.invariant_checks += 1;
    tally.full_checks += 1;
    if let Err(v) = view.check_settled() {
        tally.settled_violations += v.len() as u64;
        tally.violations(&v, "settled");
    }
    gone.len() as u64
}
