//! # treecast-signal: the signal server for browsers
//!
//! Browsers have nothing but a page and a WebSocket, so this server speaks for them in the
//! tree: it runs the core's [`treecast_tree::Agent`] for each browser, places it with the
//! core's placement over the stream's view, publishes its record (`via` = this server,
//! `platform = browser`), and relays WebRTC offers, answers and candidates between a browser
//! and its parent and children. See docs/protocol.md, "Signalling (browser <-> signal server)".
//!
//! ```text
//!  browser --ws--> ws::serve --Command--> hub (one task) --owns--> Broadcast per stream
//!                                          |                          (View + Agent per browser)
//!                                          +--Outbound--> overlay::bridge --> libp2p
//!  libp2p --> overlay::bridge --Hub::record / native_message / native_signal-->
//! ```
//!
//! Entry point: [`run`]; tests and embedders use [`Server::bind`] to learn the address and to
//! hold a [`Hub`] handle.

mod assets;
pub mod broadcast;
pub mod config;
mod driver;
pub mod forward;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod overlay;
pub mod protocol;
pub mod shutdown;
pub mod tree;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use config::{Config, ConfigBuilder, ConfigError, Limits};
pub use hub::{Hub, Outbound};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gossip overlay could not start.
    #[error("gossip overlay: {0}")]
    Overlay(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// Runs the server until `shutdown` resolves, then closes every WebSocket and returns.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), "treecast-signal listening");
    server.serve(shutdown).await
}

/// Runs the server as a gossip peer of the native nodes until `shutdown` resolves: starts the
/// overlay from `gossip` (plus the configuration's bootstrap addresses), follows `streams` at
/// once (others when their first browser arrives), and bridges it to the hub.
pub async fn run_with_overlay(
    mut config: Config,
    gossip: treecast_node::gossip::ConfigBuilder,
    streams: Vec<treecast_tree::StreamId>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    use treecast_node::gossip;
    let mut gossip = gossip;
    for b in &config.bootstrap {
        let node: gossip::Bootstrap = b.parse().map_err(|e: gossip::AddrError| {
            Error::Overlay(format!("bootstrap address {b:?}: {e}"))
        })?;
        gossip = gossip.bootstrap(node);
    }
    let gossip = gossip.build().map_err(|e| Error::Overlay(e.to_string()))?;
    let (client, events, event_loop) = gossip::new(gossip)
        .await
        .map_err(|e| Error::Overlay(e.to_string()))?;
    tokio::spawn(event_loop.run());
    config.server_id = Some(client.node_id());
    let mut server = Server::bind(config).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut addrs = Vec::new();
    while addrs.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        addrs = client.listen_addrs().await.unwrap_or_default();
    }
    for addr in &addrs {
        println!("{}", gossip::announce(addr, client.peer_id()));
    }
    tracing::info!(addr = %server.local_addr(), node = %client.node_id(), "treecast-signal listening");
    overlay::follow(&client, &streams).await;
    let outbound = server.take_outbound();
    if let Some(outbound) = outbound {
        tokio::spawn(overlay::bridge(client, events, server.hub(), outbound));
    }
    server.serve(shutdown).await
}

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    hub: Hub,
    outbound: Option<mpsc::Receiver<Outbound>>,
    hub_task: tokio::task::JoinHandle<()>,
    trigger: shutdown::Trigger,
    state: http::AppState,
}

impl Server {
    /// Binds the HTTP address and starts the hub.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| Error::Bind {
                addr: config.http,
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Serve)?;
        let (trigger, shutdown) = shutdown::channel();
        let metrics = Arc::new(metrics::Metrics::default());
        let (hub, outbound, hub_task) = Hub::start(&config, metrics.clone(), shutdown.clone());
        let origin = config.origin.as_deref().and_then(forward::Origin::parse);
        let state = http::AppState {
            hub: hub.clone(),
            origin,
            cfg: Arc::new(config),
            metrics,
            shutdown,
        };
        Ok(Server {
            listener,
            addr,
            hub,
            outbound: Some(outbound),
            hub_task,
            trigger,
            state,
        })
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to the hub: how the gossip client (and tests) feed records and native messages.
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// What must go out to native nodes. Whoever takes it must keep reading; if nobody takes
    /// it, outbound messages are dropped and counted.
    pub fn take_outbound(&mut self) -> Option<mpsc::Receiver<Outbound>> {
        self.outbound.take()
    }

    /// Serves until `shutdown` resolves: stops accepting, closes WebSockets with 1001, stops
    /// the hub.
    pub async fn serve(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        // Nobody took the outbound side: drain it so the hub never sees a full queue.
        if let Some(mut rx) = self.outbound.take() {
            tokio::spawn(async move {
                while let Some(o) = rx.recv().await {
                    tracing::trace!(?o, "no gossip client; outbound message dropped");
                }
            });
        }
        let app =
            http::router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let trigger = self.trigger;
        let mut ws_shutdown = self.state.shutdown.clone();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down");
                trigger.fire();
                // Keep `trigger` alive until fired; WebSocket tasks watch the same signal.
                ws_shutdown.wait().await;
            })
            .await
            .map_err(Error::Serve);
        let _ = self.hub_task.await;
        result
    }
}
