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
    /// "I can feed more children than you: let us swap places" (promotion).
    SwapRequest,
    /// "Not now."
    SwapReject,
    /// "Take this place": sent by the coordinator of a swap to every node whose links change.
    Move {
        /// Your parent after the swap.
        parent: Option<NodeId>,
        /// Your children after the swap.
        children: Children,
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
