//! The cloneable handle the driver (and anyone else) uses to command the event loop.

use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

use treecast_tree::{Message, NodeId, NodeRecord, StreamId};

use super::id::node_id;
use super::protocol::{Ack, Body, Request};
use super::validate::Stats;

/// A handle on the gossip [`super::EventLoop`]. Cheap to clone; every method sends one
/// command over a bounded channel (so it waits when the event loop is behind) and awaits
/// the answer. When every `Client` is dropped the event loop ends.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    peer: PeerId,
    /// What the event loop answers to probes (see [`Client::set_receiving`]).
    receiving: Arc<AtomicBool>,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The event loop has stopped.
    #[error("the gossip event loop has stopped")]
    Closed,
    /// Only records of this node, or of browsers it proxies (`via`), may be published.
    #[error("record of node {0} is neither ours nor proxied by us")]
    NotOurs(NodeId),
    /// gossipsub refused the record.
    #[error("publish failed: {0}")]
    Publish(String),
    /// Subscribing failed.
    #[error("subscribe failed: {0}")]
    Subscribe(String),
    /// Dialling failed at once (an unusable address).
    #[error("dial failed: {0}")]
    Dial(String),
    /// No peer is known for this node yet (neither connected nor seen in gossip).
    #[error("no known peer for node {0}")]
    UnknownNode(NodeId),
    /// The receiver's driver is not keeping up, or too many messages are in flight here.
    #[error("receiver busy")]
    Busy,
    /// The receiver does not take part in the stream.
    #[error("receiver does not follow that stream")]
    UnknownStream,
    /// The message could not be delivered (dial failure, timeout, connection closed).
    #[error("delivery failed: {0}")]
    Failed(String),
}

/// What a [`Client`] asks the event loop to do.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe {
        stream: StreamId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Publish {
        record: NodeRecord,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Send {
        to: NodeId,
        request: Request,
        reply: oneshot::Sender<Result<Ack, ClientError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    /// See [`Client::resync`].
    Resync {
        stream: StreamId,
    },
    Protect {
        nodes: Vec<NodeId>,
    },
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        peer: PeerId,
        receiving: Arc<AtomicBool>,
    ) -> Self {
        Client {
            commands,
            peer,
            receiving,
        }
    }

    /// Sets what this node answers to [`Client::probe`]s: whether media arrives.
    pub fn set_receiving(&self, receiving: bool) {
        self.receiving.store(receiving, Ordering::Relaxed);
    }

    /// This node's libp2p identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// This node's tree id ([`node_id`] of [`Client::peer_id`]).
    pub fn node_id(&self) -> NodeId {
        node_id(&self.peer)
    }

    /// Follows a stream: its records start arriving as [`super::Event::Record`] and direct
    /// messages about it are accepted.
    pub async fn subscribe(&self, stream: StreamId) -> Result<(), ClientError> {
        self.ask(|reply| Command::Subscribe { stream, reply })
            .await?
    }

    /// Publishes a record of this node (or of a browser it proxies) to its stream's topic,
    /// subscribing to the topic if needed.
    ///
    /// `Ok` means handed to gossipsub, or queued when no peer follows the topic yet: a queued
    /// record is retried every `publish_retry` and as soon as a peer subscribes, and is replaced
    /// by a newer record of the same node.
    pub async fn publish(&self, record: NodeRecord) -> Result<(), ClientError> {
        self.ask(|reply| Command::Publish { record, reply }).await?
    }

    /// Sends an agent message to the node `to`, and waits until the receiver's event loop has
    /// handed it to its driver (or failed to).
    ///
    /// The peer of `to` is known once connected to it or once one of its records was accepted;
    /// it is dialled (found through the DHT if needed, possibly via a relay) when not connected.
    pub async fn send(
        &self,
        to: NodeId,
        stream: StreamId,
        msg: Message,
    ) -> Result<(), ClientError> {
        self.send_body(to, stream, Body::Tree { msg })
            .await
            .map(drop)
    }

    /// Sends any direct message (see [`Client::send`]) and returns the receiver's
    /// acknowledgement: [`Ack::Delivered`], or [`Ack::Alive`] for a probe.
    pub async fn send_body(
        &self,
        to: NodeId,
        stream: StreamId,
        body: Body,
    ) -> Result<Ack, ClientError> {
        let request = Request::new(stream, body, to);
        self.ask(|reply| Command::Send { to, request, reply })
            .await?
    }

    /// Sends a direct message on behalf of `from`, a browser whose records this node
    /// publishes (the signal server's use; see [`Request::from`]).
    pub async fn send_as(
        &self,
        from: NodeId,
        to: NodeId,
        stream: StreamId,
        body: Body,
    ) -> Result<Ack, ClientError> {
        let request = Request {
            from: Some(from),
            ..Request::new(stream, body, to)
        };
        self.ask(|reply| Command::Send { to, request, reply })
            .await?
    }

    /// Asks `to` whether it is alive and receives media; `Ok(receiving)` if it answered.
    /// Bound the wait with a timeout: a peer that vanished without closing its connection
    /// answers nothing until the request times out.
    pub async fn probe(&self, to: NodeId, stream: StreamId) -> Result<bool, ClientError> {
        match self.send_body(to, stream, Body::Probe).await? {
            Ack::Alive { receiving } => Ok(receiving),
            other => Err(ClientError::Failed(format!(
                "unexpected answer to a probe: {other:?}"
            ))),
        }
    }

    /// Names the nodes whose connections the overlay never closes to stay under its peer
    /// bound (the tree neighbours: parent, children, the backup parent); replaces the last
    /// list. Fails only when the event loop is gone or its queue is full.
    pub fn protect(&self, nodes: Vec<NodeId>) -> Result<(), ClientError> {
        self.commands
            .try_send(Command::Protect { nodes })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ClientError::Busy,
                mpsc::error::TrySendError::Closed(_) => ClientError::Closed,
            })
    }

    /// Asks the peers following `stream` for its records again (a newcomer whose first sync
    /// came too early to hold anything). Fails only when the event loop is gone or busy.
    pub fn resync(&self, stream: StreamId) -> Result<(), ClientError> {
        self.commands
            .try_send(Command::Resync { stream })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ClientError::Busy,
                mpsc::error::TrySendError::Closed(_) => ClientError::Closed,
            })
    }

    /// Dials an address (with or without `/p2p/<peer id>`). `Ok` means the dial started; the
    /// connection shows up as [`super::Event::PeerConnected`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), ClientError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// The addresses this node listens on, each ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ClientError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// Validation counters and drop counts since start.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }
}
