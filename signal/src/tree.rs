//! The JSON the tree API serves: `GET /api/streams` and `GET /api/streams/{stream}/tree`.
//!
//! Node ids are 16 hex digits in strings (a `u64` does not survive a JavaScript number).
//! Relations are the agreed ones (the child names the parent and the parent lists the child),
//! so `parent` is `null` only at the root; nodes not connected to the root are listed apart,
//! under `detached`.

use serde::{Deserialize, Serialize};
use treecast_tree::{LinkStats, Node, NodeId, Platform, Role, View};

use crate::broadcast::Broadcast;

/// One entry of `GET /api/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream.
    pub stream: String,
    /// Whether a broadcaster is known.
    pub live: bool,
    /// Nodes known (native and browser, attached or not).
    pub nodes: usize,
    /// Browsers connected to this server.
    pub browsers: usize,
    /// The deepest attached node.
    pub depth: u16,
}

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
    /// The link from its parent.
    pub link: LinkStats,
}

impl StreamSummary {
    /// The summary of one broadcast.
    pub fn of(b: &Broadcast) -> Self {
        let view = b.view();
        StreamSummary {
            stream: b.stream().to_string(),
            live: b.is_live(),
            nodes: view.len(),
            browsers: b.browsers(),
            depth: max_depth(view),
        }
    }
}

impl TreeSnapshot {
    /// The tree of one broadcast.
    pub fn of(b: &Broadcast) -> Self {
        let view = b.view();
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
            stream: b.stream().to_string(),
            live: b.is_live(),
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
        link: n.link,
    }
}

fn hex(id: NodeId) -> String {
    id.to_string()
}
