//! # treecast-tree: the pure tree core
//!
//! Every node of a treecast stream forwards media to at most [`MAX_CHILDREN`] children. This
//! crate holds all the logic that decides who feeds whom, once, shared by the native node, the
//! signal server and the simulator:
//!
//! - [`NodeRecord`]: what a node gossips about itself, with a compact, size-capped binary
//!   encoding whose decoder never panics ([`codec`]).
//! - [`View`]: records merged order-independently, with expiry of silent nodes and relations
//!   that count only when both sides agree, and [`View::check_invariants`].
//! - Decisions as values: [`place`] (a ranked [`Placement`]), [`plan_repair`] (a [`Repair`]
//!   precomputed for when the parent is lost), [`plan_promotion`] (a make-before-break
//!   [`Promotion`]).
//! - [`Agent`]: the state machine a node runs (see its docs for the driving contract).
//!
//! No IO, no clock and no OS randomness: time arrives in inputs as [`Time`], randomness from a
//! seed the caller passes in. Graph walks are loops capped at [`MAX_DEPTH`], never recursion,
//! because gossiped state can be hostile or cyclic. See docs/tree.md for the reasons behind
//! each rule.

mod agent;
mod apply;
pub mod codec;
mod id;
mod message;
mod placement;
mod promotion;
mod record;
mod repair;
pub mod snapshot;
mod store;
mod view;

pub use agent::{Agent, AgentConfig, Event, Input, MAX_REFRESH, Output, PROMOTION_CHECK};
pub use apply::ApplyError;
pub use codec::{DecodeError, MAX_RECORD_BYTES};
pub use id::{InvalidStreamId, MAX_STREAM_ID_LEN, NodeId, StreamId, Time};
pub use message::{Message, RejectReason};
pub use placement::{Avoid, Candidate, MOVE_MARGIN, Placement, place, plan_move};
pub use promotion::{Link, Placed, Promotion, plan_promotion, plan_promotion_avoiding, swap};
pub use record::{
    Children, DETACHED, LinkStats, MAX_CHILDREN, MAX_DEPTH, Node, NodeRecord, Platform,
    Reachability, RecordError, Role, TTL_REFRESHES, capacity_for,
};
pub use repair::{Repair, RepairTarget, Shed, plan_repair, plan_shed, successor};
pub use view::{Merge, MergeError, POOR_LOSS_PERMILLE, View, Violation};

/// The version of the records and messages this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
