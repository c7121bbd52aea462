//! treecast-node: the IO shell around the pure tree core.
//!
//! The media path, the gossip swarm and the HTTP API live here; see ARCHITECTURE.md.

pub mod gossip;
