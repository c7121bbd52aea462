//! The JSON the tree API serves: `GET /api/streams` and `GET /api/streams/{stream}/tree` (the
//! latter is `treecast_tree::TreeSnapshot`, shared with the native nodes).

use serde::{Deserialize, Serialize};

pub use treecast_tree::snapshot::{TreeNode, TreeSnapshot, max_depth};

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

/// The tree of one broadcast.
pub fn snapshot(b: &Broadcast) -> TreeSnapshot {
    TreeSnapshot::of(b.view(), b.is_live())
}
