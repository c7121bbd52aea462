//! The hub: the one task that owns every [`Broadcast`] (GUIDE 3, "exactly one task owns the
//! core state"). WebSocket tasks, HTTP handlers and, later, the gossip client talk to it through
//! a cloneable [`Hub`] handle over a bounded channel; what it must send out to native nodes
//! leaves through a bounded channel of [`Outbound`] values.
//!
//! # Integration points
//!
//! - Gossip in: [`Hub::record`] for every record of the stream's topic.
//! - Gossip out: [`Outbound::Publish`] for each record of this server's browsers.
//! - Native peers: [`Outbound::Message`] / [`Hub::native_message`] carry the core's tree
//!   messages over the libp2p request-response protocol; [`Outbound::Signal`] /
//!   [`Hub::native_signal`] carry WebRTC offers, answers and candidates.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use treecast_tree::{Message, NodeId, NodeRecord, StreamId};

use crate::broadcast::Signal;
use crate::config::Config;
use crate::driver::Driver;
use crate::metrics::{Metrics, StreamGauges};
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::shutdown::Shutdown;
use crate::tree::{StreamSummary, TreeSnapshot};

/// Commands queued to the hub at most; senders wait (HTTP, WebSocket) when it is full.
const COMMAND_QUEUE: usize = 1024;
/// Outbound messages to the gossip/libp2p side at most; beyond, they are dropped and counted.
const OUTBOUND_QUEUE: usize = 1024;

/// A cloneable handle to the hub task.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: mpsc::Sender<Command>,
}

/// What leaves this server for native nodes (the gossip client and the libp2p side take it).
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Follow a stream's topic: the first browser (or record) of that stream arrived.
    Follow(StreamId),
    /// Publish a browser's record on the stream's topic.
    Publish(NodeRecord),
    /// A tree message from a browser's agent to a native node.
    Message {
        /// The stream.
        stream: StreamId,
        /// The browser.
        from: NodeId,
        /// The native node.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// WebRTC signalling from a browser to a native node.
    Signal {
        /// The stream.
        stream: StreamId,
        /// The browser.
        from: NodeId,
        /// The native node.
        to: NodeId,
        /// The offer, answer or candidate.
        signal: Signal,
    },
}

/// A browser's connection as the hub granted it.
#[derive(Debug)]
pub struct Session {
    /// The browser's node id.
    pub id: NodeId,
    /// The first message to send.
    pub welcome: ServerMessage,
    /// Messages for the browser, in order.
    pub rx: mpsc::Receiver<ServerMessage>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many connections from this address, or in all.
    #[error("too many connections")]
    TooManyConnections,
    /// The hub is gone (shutting down).
    #[error("server is shutting down")]
    Unavailable,
}

impl Refused {
    /// The error code the browser is told.
    pub fn code(self) -> ErrorCode {
        match self {
            Refused::TooManyConnections => ErrorCode::TooManyConnections,
            Refused::Unavailable => ErrorCode::Unavailable,
        }
    }
}

impl Hub {
    /// Starts the hub task. Returns its handle and the receiver of what must go to native
    /// nodes (drop it while there is no gossip client: outbound messages are then counted and
    /// dropped).
    pub fn start(
        cfg: &Config,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> (Hub, mpsc::Receiver<Outbound>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let driver = Driver::new(cfg.clone(), out_tx, metrics);
        let task = tokio::spawn(driver.run(rx, shutdown));
        (Hub { tx }, out_rx, task)
    }

    /// Registers a new WebSocket connection from `addr` on `stream`.
    pub async fn connect(&self, stream: StreamId, addr: IpAddr) -> Result<Session, Refused> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connect {
            stream,
            addr,
            reply,
        })
        .await;
        rx.await.unwrap_or(Err(Refused::Unavailable))
    }

    /// A decoded message from a browser.
    pub async fn client(&self, id: NodeId, msg: ClientMessage) {
        self.send(Command::Client { id, msg }).await;
    }

    /// A browser's connection closed.
    pub async fn disconnect(&self, id: NodeId) {
        self.send(Command::Disconnect { id }).await;
    }

    /// A gossiped record (from the gossip client).
    pub async fn record(&self, record: NodeRecord) {
        self.send(Command::Record(record)).await;
    }

    /// A tree message from a native node to a browser of this server.
    pub async fn native_message(&self, stream: StreamId, from: NodeId, to: NodeId, msg: Message) {
        self.send(Command::NativeMessage {
            stream,
            from,
            to,
            msg,
        })
        .await;
    }

    /// Signalling from a native node to a browser of this server.
    pub async fn native_signal(&self, stream: StreamId, from: NodeId, to: NodeId, signal: Signal) {
        self.send(Command::NativeSignal {
            stream,
            from,
            to,
            signal,
        })
        .await;
    }

    /// The streams this server knows.
    pub async fn streams(&self) -> Vec<StreamSummary> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Streams { reply }).await;
        rx.await.unwrap_or_default()
    }

    /// One stream's tree; `None` if the stream is unknown.
    pub async fn tree(&self, stream: StreamId) -> Option<TreeSnapshot> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Tree { stream, reply }).await;
        rx.await.ok().flatten()
    }

    /// Per-stream gauges for `/metrics`.
    pub async fn gauges(&self) -> Vec<StreamGauges> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Gauges { reply }).await;
        rx.await.unwrap_or_default()
    }

    async fn send(&self, cmd: Command) {
        // Fails only when the hub is gone (shutdown): the caller gets its default answer.
        let _ = self.tx.send(cmd).await;
    }
}

#[derive(Debug)]
pub(crate) enum Command {
    Connect {
        stream: StreamId,
        addr: IpAddr,
        reply: oneshot::Sender<Result<Session, Refused>>,
    },
    Client {
        id: NodeId,
        msg: ClientMessage,
    },
    Disconnect {
        id: NodeId,
    },
    Record(NodeRecord),
    NativeMessage {
        stream: StreamId,
        from: NodeId,
        to: NodeId,
        msg: Message,
    },
    NativeSignal {
        stream: StreamId,
        from: NodeId,
        to: NodeId,
        signal: Signal,
    },
    Streams {
        reply: oneshot::Sender<Vec<StreamSummary>>,
    },
    Tree {
        stream: StreamId,
        reply: oneshot::Sender<Option<TreeSnapshot>>,
    },
    Gauges {
        reply: oneshot::Sender<Vec<StreamGauges>>,
    },
}
