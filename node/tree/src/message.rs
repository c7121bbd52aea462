//! Direct messages between two nodes' agents (carried by the shell over a libp2p
//! request-response protocol, or by the simulator's network).

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::record::Children;

/// One message from one agent to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// "Let me be your child." With `replaces`, the sender is the successor of a lost child of
    /// the receiver and asks for that child's slot.
    Attach {
        /// The lost child whose slot the sender asks for.
        replaces: Option<NodeId>,
    },
    /// "Yes: you are my child, at this depth."
    Accept {
        /// The child's depth under this parent.
        depth: u16,
    },
    /// "No."
    Reject {
        /// Why.
        reason: RejectReason,
    },
    /// "We are no longer parent and child" (leaving, or dropping a child).
    Detach,
    /// "I can feed more children than you: let us swap places" (promotion). Carries the
    /// sender's parent and children as they are now, so the coordinator plans on fresh facts.
    SwapRequest {
        /// The sender's parent.
        parent: NodeId,
        /// The sender's children.
        children: Children,
    },
    /// "Not now."
    SwapReject,
    /// "Take these nodes as your children": sent by a parent making room (a successor taking
    /// in its siblings); the nodes are told by a `Move` from the same sender.
    Adopt {
        /// The nodes to take on.
        nodes: Children,
    },
    /// "Take this place": sent by the coordinator of a swap to every node whose links change.
    /// A change, not a state: the receiver removes and adds only what is named, and changes its
    /// parent only if it still has `from_parent`, so two swaps touching one node cannot undo
    /// each other with stale lists.
    Move {
        /// The parent the receiver has now (checked before changing it).
        from_parent: Option<NodeId>,
        /// The new parent, if it changes.
        to_parent: Option<NodeId>,
        /// Children to drop.
        remove: Children,
        /// Children to take on.
        add: Children,
    },
}

/// Why an attach request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Every slot is taken.
    Full,
    /// The receiver is not connected to the root itself.
    NotAttached,
    /// The receiver lies in the sender's subtree.
    Cycle,
    /// The receiver is leaving.
    Leaving,
}
