//! A serialisable snapshot of a [`View`]: the JSON of `GET /api/streams/{stream}/tree`, served
//! by native nodes and signal servers alike.
//!
//! Node ids are 16 hex digits in strings (a `u64` does not survive a JavaScript number).
//! Relations are the agreed ones (the child names the parent and the parent lists the child),
//! so `parent` is `null` only at the root; nodes not connected to the root are listed apart,
//! under `detached`.

use serde::{Deserialize, Serialize};

use crate::{LinkStats, Node, NodeId, Platform, Role, View};

/// `GET /api/streams/{stream}/tree`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSnapshot {
    /// The stream.
    pub stream: String,
    /// Whether a broadcaster is known.
    pub live: bool,
    /// The root's id.
    pub root: Option<String>,
    /// Nodes connected to the root, shallowest first.
    pub nodes: Vec<TreeNode>,
    /// Nodes not connected to the root (joining, repairing).
    pub detached: Vec<TreeNode>,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The node.
    pub id: String,
    /// Its parent; `null` only for the root (and in `detached`).
    pub parent: Option<String>,
    /// Its children.
    pub children: Vec<String>,
    /// Hops from the root; `null` in `detached`.
    pub depth: Option<u16>,
    /// Child slots it offers.
    pub capacity: u8,
    /// Whether media arrives.
    pub receiving: bool,
    /// What it does.
    pub role: Role,
    /// Native process or browser tab.
    pub platform: Platform,
    /// The server publishing its record, for browsers.
    pub via: Option<String>,
    /// Seconds since it joined.
    pub uptime_s: u32,
    /// The longest it goes without republishing its record, as the record declares (0: not
    /// said); see `Node::refresh_tens`.
    pub refresh_s: u32,
    /// The link from its parent.
    pub link: LinkStats,
}

impl TreeSnapshot {
    /// The tree as `view` knows it; `live` says whether a broadcaster is known to be sending.
    pub fn of(view: &View, live: bool) -> Self {
        let mut nodes = Vec::new();
        let mut detached = Vec::new();
        for n in view.nodes() {
            match view.depth_of(n.id) {
                Some(d) => nodes.push(tree_node(view, n, Some(d))),
                None => detached.push(tree_node(view, n, None)),
            }
        }
        nodes.sort_by(|a, b| (a.depth, &a.id).cmp(&(b.depth, &b.id)));
        detached.sort_by(|a, b| a.id.cmp(&b.id));
        TreeSnapshot {
            stream: view.stream().to_string(),
            live,
            root: view.root().map(hex),
            nodes,
            detached,
        }
    }
}

/// The deepest attached node of a view.
pub fn max_depth(view: &View) -> u16 {
    view.nodes()
        .filter_map(|n| view.depth_of(n.id))
        .max()
        .unwrap_or(0)
}

fn tree_node(view: &View, n: &Node, depth: Option<u16>) -> TreeNode {
    TreeNode {
        id: hex(n.id),
        parent: depth.and(view.parent_of(n.id)).map(hex),
        children: view.children_of(n.id).map(hex).collect(),
        depth,
        capacity: n.capacity,
        receiving: n.receiving,
        role: n.role,
        platform: n.platform,
        via: n.via.map(hex),
        uptime_s: n.uptime_s,
        refresh_s: 10 * u32::from(n.refresh_tens),
        link: n.link,
    }
}

fn hex(id: NodeId) -> String {
    id.to_string()
}
