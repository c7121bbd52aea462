//! The gossip overlay: libp2p carrying node records (gossipsub, one topic per stream) and
//! direct agent messages (request-response `/treecast/tree/1`) between treecast nodes.
//!
//! Shaped like rust-libp2p's `examples/file-sharing`: [`new`] returns a cloneable [`Client`],
//! the receiver of [`Event`]s for the driver (the task that owns the tree `Agent`), and the
//! [`EventLoop`] that owns the `Swarm` and must be spawned as its own task:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use treecast_node::gossip::{self, GossipConfig};
//! let config = GossipConfig::builder().mdns(false).build()?;
//! let (client, mut events, event_loop) = gossip::new(config).await?;
//! tokio::spawn(event_loop.run());
//! while let Some(event) = events.recv().await {
//!     // feed records and messages to the agent; publish what it outputs with `client`
//! #   let _ = (&client, event);
//! }
//! # Ok(()) }
//! ```
//!
//! Everything from the network is checked before it reaches the driver (see [`Verdict`]):
//! records must decode, belong to the topic's stream, be authored by the signing peer (see
//! [`node_id`]) and be newer than the last one accepted from that node. The event loop never
//! invents records: the driver publishes what its agent outputs.
//!
//! Channels: commands from clients are bounded by `command_capacity` (default 64; clients wait
//! when it is full). Events to the driver are bounded by `event_capacity` (default 1024) and
//! never block the event loop; when the channel is full (see [`Event`] for each kind):
//! a record is dropped without being remembered as seen (the author's next republish gets
//! through), a direct message is answered `busy` (the sender's [`Client::send`] returns
//! [`ClientError::Busy`]), and peer and listen notices are dropped. Each drop is counted in
//! [`Stats`].

mod addr;
mod args;
mod behaviour;
mod bounded;
mod client;
mod config;
pub mod envelope;
mod event_loop;
mod id;
mod protocol;
mod validate;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use treecast_tree::{NodeId, NodeRecord, StreamId};

pub use addr::{AddrError, Bootstrap, default_listen, with_peer_id};
pub use args::Args;
pub use behaviour::{Behaviour, BehaviourEvent};
pub use behaviour::{BuildError, IDENTIFY_PROTOCOL, KAD_PROTOCOL, MAX_TRANSMIT_BYTES};
pub use client::{Client, ClientError};
pub use config::{ConfigBuilder, ConfigError, GossipConfig};
pub use event_loop::EventLoop;
pub use id::node_id;
pub use protocol::{Ack, Body, MAX_SYNC_RECORDS, Request, TOPIC_PREFIX, TREE_PROTOCOL, topic};
pub use validate::{Ignored, Rejection, Stats, Verdict};

/// Something the driver hears from the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A validated record, newer than any accepted before from its node. Dropped (and counted
    /// in [`Stats::dropped_records`]) when the channel is full.
    Record {
        /// The peer that signed it: its author, or the proxy of a browser.
        from: PeerId,
        /// The record.
        record: NodeRecord,
    },
    /// A direct message. When the channel is full the sender is answered `busy` instead.
    Message {
        /// The sender's tree id: [`node_id`] of `peer`, or the browser `peer` speaks for.
        from: NodeId,
        /// The node meant: this one, or a browser it speaks for.
        to: NodeId,
        /// The sender's peer.
        peer: PeerId,
        /// The stream it is about (one this node follows).
        stream: StreamId,
        /// What it says (never a [`Body::Probe`]: the event loop answers those itself).
        body: Body,
    },
    /// The first connection to a peer opened. Dropped when the channel is full: media silence,
    /// not this notice, is what tells a node its parent is gone.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its tree id.
        node: NodeId,
    },
    /// The last connection to a peer closed. Dropped when the channel is full.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Its tree id.
        node: NodeId,
    },
    /// Listening on a new address, given with `/p2p/<peer id>` as other nodes pass it to
    /// `--bootstrap`. Dropped when the channel is full ([`Client::listen_addrs`] has them all).
    Listening {
        /// The full address.
        addr: Multiaddr,
    },
}

/// Why the overlay could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The swarm could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// Builds the swarm, starts listening and dialling the bootstrap nodes, and returns the
/// client, the driver's event receiver and the event loop (spawn [`EventLoop::run`]).
/// Must be called inside a tokio runtime.
pub async fn new(
    config: GossipConfig,
) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), Error> {
    let (commands_tx, commands_rx) = mpsc::channel(config.command_capacity);
    let (events_tx, events_rx) = mpsc::channel(config.event_capacity);
    let receiving = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = Client::new(commands_tx, config.peer_id(), receiving.clone());
    let event_loop = EventLoop::start(&config, commands_rx, events_tx, receiving)?;
    Ok((client, events_rx, event_loop))
}

/// The line a node prints at start-up for each listen address, e.g.
/// `p2p listening on /ip4/192.0.2.1/tcp/4001/p2p/12D3KooW…`.
pub fn announce(addr: &Multiaddr, peer: PeerId) -> String {
    format!("p2p listening on {}", with_peer_id(addr.clone(), peer))
}
