//! The `treecast-signal` binary: parses arguments, sets up logging, runs the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use treecast_signal::config::FileConfig;

/// The treecast signal server: lets browsers watch (and relay) a treecast stream.
///
/// Serves the pages /watch/STREAM, /publish/STREAM and /tree/STREAM, WebSocket signalling at
/// /ws/STREAM, the JSON API /api/streams and /api/streams/STREAM/tree, and /metrics
/// (Prometheus). Browser viewers are placed in the stream's tree by the tree core; this server
/// publishes their records on their behalf.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML file with any of the settings below and the limits (see
    /// `treecast_signal::config::FileConfig`); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address for HTTP and WebSocket [default: 127.0.0.1:8080]. Pages that publish a camera
    /// need a secure context: localhost, or HTTPS in front of this server.
    #[arg(long, value_name = "ADDR", env = "TREECAST_SIGNAL_HTTP")]
    http: Option<SocketAddr>,

    /// The gossip overlay shared with the native nodes (this server is a peer of it).
    #[command(flatten)]
    gossip: treecast_node::gossip::Args,

    /// A stream to follow from the start (repeatable), so its tree shows at /tree/STREAM and
    /// /api/streams before any browser arrives. Others are followed when a browser asks.
    #[arg(long, value_name = "NAME")]
    stream: Vec<String>,

    /// Bearer token WHIP publishers must present at /whip/STREAM. Without it WHIP is disabled.
    #[arg(
        long,
        value_name = "T",
        env = "TREECAST_WHIP_TOKEN",
        hide_env_values = true
    )]
    whip_token: Option<String>,

    /// The broadcaster's HTTP address (http://HOST:PORT, its --http): WHIP publishers (OBS, the
    /// /publish page) and WHEP players that reach this server are handed to it.
    #[arg(long, value_name = "URL", env = "TREECAST_ORIGIN")]
    origin: Option<String>,

    /// STUN/TURN URL handed to browsers (repeatable). Default: stun:stun.l.google.com:19302.
    /// Pass --ice-server none for host candidates only (LAN, tests).
    #[arg(long, value_name = "URL")]
    ice_server: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,treecast_signal=info".into()),
        )
        .init();
    let args = Cli::parse();
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            FileConfig::parse(&text)?
        }
        None => FileConfig::default(),
    };
    let mut builder = file
        .builder()
        .whip_token(args.whip_token)
        .origin(args.origin);
    if let Some(http) = args.http {
        builder = builder.http(http);
    }
    if !args.ice_server.is_empty() {
        let urls = args
            .ice_server
            .into_iter()
            .filter(|u| u != "none")
            .collect();
        builder = builder.ice_servers(urls);
    }
    let config = builder.build().context("invalid configuration")?;
    let streams = args
        .stream
        .iter()
        .map(|s| treecast_tree::StreamId::new(s.clone()))
        .collect::<Result<Vec<_>, _>>()
        .context("invalid --stream")?;
    treecast_signal::run_with_overlay(config, args.gossip.config(), streams, shutdown_signal())
        .await
        .context("treecast-signal failed")
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
