//! treecast-node: the IO shell around the pure tree core.
//!
//! This crate holds the media path (see `docs/media.md`): a node receives one broadcast, from a
//! file at the root or from its parent over WHEP, and forwards the RTP packets, untouched apart
//! from the per-leg header fields, to up to four children over WHEP. The library entry point is
//! [`run`]; the `treecast` binary only parses arguments and calls it.
//!
//! Codemap: [`config`] (the validated configuration), [`config_file`] (`--config FILE` merged
//! into the command line), [`ice`] (STUN/TURN, NAT IP, UDP ports), [`peer`] (how every peer
//! connection is built), [`upstream`] (pulling from the parent), [`source`] (file sources), [`fanout`] (one
//! bounded ring per track), [`child`] (one downstream leg),
//! [`record`] (the viewer's files), [`http`] and [`status`] (the API), [`gossip`] (the libp2p
//! overlay: records and direct messages), [`rtcp_tap`] (feedback
//! counters and keyframe-request delivery), [`impairment`] (seeded loss for tests), [`udp_mux`]
//! (one UDP port shared by every peer connection, `--udp-port`).

pub mod bench;
pub mod child;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod demo;
pub mod driver;
pub mod fanout;
pub mod gossip;
pub mod http;
pub mod ice;
pub mod impairment;
pub mod nack;
pub mod node;
pub mod overlay_runtime;
pub mod peer;
pub mod publish_pace;
pub mod record;
pub mod rtcp_tap;
pub mod rtp_in;
pub mod source;
pub mod status;
pub mod swarm;
pub mod udp_mux;
pub mod upstream;
pub mod whep_client;
pub mod whip;

mod impaired_runtime;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Config, Role, Source, TreeConfig};

use tracing::Instrument;

use crate::codec::{Codec, CodecExt, PayloadTypes};
use crate::fanout::{Feed, Tracks};
use crate::node::NodeState;
use crate::peer::PeerFactory;
use crate::source::Clip;

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A source file could not be loaded.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// The HTTP (or plain RTP) address could not be bound.
    #[error("cannot listen on {addr}: {}", bind_advice(reason))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error (in the message, so not a `source`).
        reason: std::io::Error,
    },
    /// The shared media port (`--udp-port`) could not be bound.
    #[error("cannot bind --udp-port {addr}: {}", udp_port_advice(reason))]
    UdpPort {
        /// The address (--ice-ip and the port).
        addr: SocketAddr,
        /// The error (in the message, so not a `source`).
        reason: std::io::Error,
    },
    /// The upstream leg failed for good.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    /// Recording failed.
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// No webrtc runtime.
    #[error("no async runtime for webrtc")]
    NoRuntime,
    /// The gossip overlay could not start.
    #[error("gossip overlay: {0}")]
    Gossip(String),
}

/// Runs a node until `shutdown` completes (or, for a viewer with `--frames`, until enough frames
/// are recorded). Prints `http listening on ADDR` on stdout once the HTTP server is bound, so a
/// script that asked for port 0 learns the port.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let (observer, _) = tokio::sync::oneshot::channel();
    run_with(
        config,
        async move {
            shutdown.await;
            Stop::Leave
        },
        observer,
    )
    .await
}

/// How a node run by [`run_with`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Cleanly: tell parent and children, close every connection.
    Leave,
    /// Like a crash: no goodbye; the overlay and the driver stop dead, the media connections
    /// are dropped (`treecast swarm`'s kills).
    Crash,
}

/// Like [`run`], for a harness running many nodes in one process: hands the node's shared
/// state to `observer` once it exists, and ends as `stop` says.
pub async fn run_with(
    config: Config,
    stop: impl Future<Output = Stop> + Send + 'static,
    observer: tokio::sync::oneshot::Sender<Arc<NodeState>>,
) -> Result<(), NodeError> {
    let span = tracing::info_span!("node", id = &config.node_id.as_str()[..8]);
    run_node(config, stop, observer).instrument(span).await
}

async fn run_node(
    config: Config,
    shutdown: impl Future<Output = Stop> + Send + 'static,
    observer: tokio::sync::oneshot::Sender<Arc<NodeState>>,
) -> Result<(), NodeError> {
    let runtime = match config.impairment {
        Some(spec) => impaired_runtime::runtime(spec).ok_or(NodeError::NoRuntime)?,
        None => webrtc::runtime::default_runtime().ok_or(NodeError::NoRuntime)?,
    };
    let parent = match &config.role {
        Role::Relay { pull } | Role::View { pull, .. } => pull.clone(),
        Role::Broadcast { .. } => None,
    };
    let mut config = config;
    let mut overlay_task = None;
    let mut overlay_addr = None;
    let overlay = match &config.tree {
        Some(tree) => {
            let (client, events, task) = start_overlay(tree, config.quiet).await?;
            overlay_addr = client
                .listen_addrs()
                .await
                .ok()
                .and_then(|a| a.first().map(|a| a.to_string()));
            config.node_id = config::NodeId::from_string(client.node_id().to_string());
            overlay_task = Some(task);
            Some((client, events))
        }
        None => None,
    };
    let payload_types = match config.role {
        Role::View { .. } => PayloadTypes::Viewer,
        _ => PayloadTypes::Node,
    };
    let mut factory = PeerFactory::new(config.ice_ip, runtime.clone(), payload_types)
        .with_ice(config.ice.clone());
    if let ice::MediaPorts::Shared(port) = config.ice.ports {
        let addr = SocketAddr::new(config.ice_ip, port);
        let mux = udp_mux::UdpMux::bind(addr, &runtime)
            .map_err(|reason| NodeError::UdpPort { addr, reason })?;
        if !config.quiet {
            println!("media udp listening on {}", mux.local_addr());
        }
        tracing::info!(addr = %mux.local_addr(), "every media connection shares one UDP port");
        factory = factory.with_mux(Arc::new(mux));
    }
    let node = Arc::new(
        NodeState::new(
            config.node_id.clone(),
            config.stream.clone(),
            config.role.name(),
            parent.clone(),
            config.max_children,
            factory,
            match &config.role {
                Role::Broadcast {
                    source: Source::Whip { token },
                } => Some(whip::WhipIngest::new(token.clone())),
                _ => None,
            },
        )
        .with_fast_start(config.fast_start)
        .with_overlay_addr(overlay_addr),
    );
    let _ = observer.send(node.clone());
    tracing::info!(role = ?node.role, stream = node.stream.as_str(), "starting");
    if config.ice_ip.is_loopback() && config.http.is_some_and(|a| a.ip().is_unspecified()) {
        tracing::warn!(
            "HTTP listens on all interfaces but WebRTC binds {} (pitfall 4: never the \
             wildcard); pass --ice-ip with a reachable address for remote peers",
            config.ice_ip
        );
    }
    if let Role::Relay { pull: Some(url) }
    | Role::View {
        pull: Some(url), ..
    } = &config.role
        && config.ice_ip.is_loopback()
        && let Some(host) = pull_host(url)
        && !host.is_loopback()
    {
        tracing::warn!(
            "pulling from {host} but WebRTC binds {}: the media cannot flow; pass --ice-ip \
             with this machine's address on the way to {host}",
            config.ice_ip
        );
    }

    if let Role::Broadcast {
        source: Source::Files { video, audio, fps },
    } = &config.role
    {
        let mut clips = vec![Clip::load_video(video, *fps)?];
        if let Some(audio) = audio {
            clips.push(Clip::load_audio(audio)?);
        }
        let mut tracks = Tracks::default();
        for clip in clips {
            let (feed, requests) =
                Feed::with_fast_start(clip.codec, clip.codec.rtp_codec(), node.fast_start);
            tracks.insert(feed.clone());
            tokio::spawn(source::play(node.clone(), clip, feed, requests).in_current_span());
        }
        node.set_tracks(tracks);
    }

    if let Role::Broadcast {
        source:
            Source::Rtp {
                video,
                codec,
                audio,
                video_pt,
                audio_pt,
                video_fmtp,
            },
    } = &config.role
    {
        let mut tracks = Tracks::default();
        let inputs = [
            (Some(*video), *codec, *video_pt, "video"),
            (*audio, Codec::Opus, *audio_pt, "audio"),
        ];
        for (addr, codec, payload_type, what) in inputs {
            let Some(addr) = addr else { continue };
            let (socket, bound) = rtp_in::bind(addr)
                .await
                .map_err(|reason| NodeError::Bind { addr, reason })?;
            if !config.quiet {
                println!("rtp {what} in listening on {bound}");
            }
            let mut rtp_codec = codec.rtp_codec();
            // H.264: the sender's profile and parameter sets, not our default (pitfall 9).
            if let (Some(fmtp), Codec::H264) = (video_fmtp, codec) {
                rtp_codec.sdp_fmtp_line = fmtp.clone();
            }
            let (feed, requests) = Feed::with_fast_start(codec, rtp_codec, node.fast_start);
            tracks.insert(feed.clone());
            let input = rtp_in::run(node.clone(), socket, feed, requests, payload_type);
            tokio::spawn(input.in_current_span());
        }
        node.set_tracks(tracks);
    }

    if let Some(addr) = config.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|reason| NodeError::Bind { addr, reason })?;
        let bound = listener
            .local_addr()
            .map_err(|reason| NodeError::Bind { addr, reason })?;
        if !config.quiet {
            println!("http listening on {bound}");
        }
        tracing::info!(%bound, "serving WHEP at /whep/{} and /api/status", node.stream.as_str());
        let app = http::router(node.clone());
        tokio::spawn(
            async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            }
            .in_current_span(),
        );
    }

    tokio::spawn(upstream_bitrate(node.clone()));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let driver = overlay.map(|(client, events)| {
        let settings = driver::Settings {
            role: match config.role.name() {
                config::RoleName::Broadcast => treecast_tree::Role::Broadcaster,
                config::RoleName::Relay => treecast_tree::Role::Relay,
                config::RoleName::View => treecast_tree::Role::Viewer,
            },
            max_children: config.max_children.min(treecast_tree::MAX_CHILDREN) as u8,
            upload_kbps: config.tree.as_ref().and_then(|t| t.upload_kbps),
            overstate_capacity: config.tree.as_ref().is_some_and(|t| t.overstate_capacity),
        };
        // A node pulling by URL keeps its overlay (others may bootstrap through it) but
        // stays out of the tree.
        let in_tree = parent.is_none();
        let (node, stop_rx) = (node.clone(), stop_rx.clone());
        tokio::spawn(
            async move {
                if in_tree {
                    driver::run(node, client, events, settings, stop_rx).await;
                } else {
                    let mut events = events;
                    while events.recv().await.is_some() {}
                    drop(client);
                }
            }
            .in_current_span(),
        )
    });
    let mut upstream = tokio::spawn(
        {
            let node = node.clone();
            async move {
                match parent {
                    Some(url) => upstream::run(node, url, stop_rx).await,
                    None => Ok(()),
                }
            }
        }
        .in_current_span(),
    );
    let (finish_recording, finish_rx) = tokio::sync::watch::channel(false);
    let work = async {
        match &config.role {
            Role::View { recording, .. } => {
                let tracks = node.wait_tracks().await;
                let frames = record::record(tracks, recording.clone(), finish_rx).await?;
                if !config.quiet {
                    println!("recorded {frames} video frames");
                }
                Ok(())
            }
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(work);
    let mut how = Stop::Leave;
    let result = tokio::select! {
        stop = shutdown => {
            tracing::info!(?stop, "shutting down");
            how = stop;
            // Let the recorder finish its files (IVF frame count) before the connections go;
            // only a recording viewer has any, and a crash finishes nothing (this used to hold
            // every stopped node for a second, still forwarding, before it died).
            finish_recording.send_replace(true);
            if matches!(config.role, Role::View { .. }) && stop != Stop::Crash {
                tokio::time::timeout(CLOSE_TIMEOUT, &mut work).await.unwrap_or(Ok(()))
            } else {
                Ok(())
            }
        }
        r = &mut upstream, if node.parent.is_some() => match r {
            Ok(r) => r.map_err(NodeError::from),
            Err(_) => Ok(()),
        },
        r = &mut work => r,
    };
    // Close every connection so parent and children notice at once (a DTLS close, not an ICE
    // timeout seconds later) and webrtc stops delivering into tracks nobody drains.
    if how == Stop::Crash {
        // No goodbye: the overlay's connections drop, the agent says nothing, and the
        // children's media stops at once.
        if let Some(driver) = &driver {
            driver.abort();
        }
        if let Some(task) = &overlay_task {
            task.abort();
        }
        for child in node.children() {
            tokio::spawn(async move { child.close().await });
        }
    }
    stop.send_replace(true);
    if let Some(driver) = driver {
        // The driver tells parent and children we leave before the connections go.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, driver).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, upstream).await;
    for child in node.children() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, child.close()).await;
    }
    result
}

/// Starts the gossip overlay and prints its listen addresses (`p2p listening on
/// MULTIADDR/p2p/PEER-ID`, what other nodes pass to `--bootstrap`).
async fn start_overlay(
    tree: &TreeConfig,
    quiet: bool,
) -> Result<
    (
        gossip::Client,
        tokio::sync::mpsc::Receiver<gossip::Event>,
        tokio::task::JoinHandle<()>,
    ),
    NodeError,
> {
    let config = tree
        .gossip
        .config()
        .build()
        .map_err(|e| NodeError::Gossip(e.to_string()))?;
    // Built and run on the overlay runtime, so that its sockets and tasks live there
    // (`overlay_runtime`: below the media path's priority); the current one if none.
    let rt = overlay_runtime::handle().unwrap_or_else(tokio::runtime::Handle::current);
    let (client, events, event_loop) = rt
        .spawn(gossip::new(config).in_current_span())
        .await
        .map_err(|e| NodeError::Gossip(e.to_string()))?
        .map_err(|e| NodeError::Gossip(e.to_string()))?;
    let task = rt.spawn(event_loop.run().in_current_span());
    // Listeners come up within milliseconds; print what is there after a short wait.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut addrs = Vec::new();
    while addrs.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        addrs = client.listen_addrs().await.unwrap_or_default();
    }
    for addr in &addrs {
        if !quiet {
            println!("{}", gossip::announce(addr, client.peer_id()));
        }
    }
    tracing::info!(node = %client.node_id(), "gossip overlay up");
    Ok((client, events, task))
}

/// Keeps the upstream link's `bitrate_bps` current (bits over the last second), as each child
/// leg's forwarding task does for its link.
async fn upstream_bitrate(node: Arc<NodeState>) {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let c = &node.upstream;
        let bytes = c.bytes.load(Ordering::Relaxed);
        c.bitrate_bps
            .store(bytes.saturating_sub(last) * 8, Ordering::Relaxed);
        last = bytes;
    }
}

/// How long closing one connection may take at exit.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The IP of `http://IP[:PORT]/...`, if the URL names one (a host name is not resolved here).
fn pull_host(url: &str) -> Option<std::net::IpAddr> {
    let authority = url.strip_prefix("http://")?.split('/').next()?;
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    authority.parse().ok()
}

/// What a failed `--udp-port` bind means and what to do.
fn udp_port_advice(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "the port is already in use (another treecast, or \
            another program): choose another --udp-port and forward that one"
            .to_owned(),
        _ => bind_advice(e),
    }
}

/// What a failed bind means and what to do, for the usual causes.
fn bind_advice(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "the port is already in use (another treecast, or \
            another program): stop it or choose another port (--http ADDR:PORT, or port 0 for \
            any free one)"
            .to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "this machine has no such address: use one of \
            its own IPs (ip -br addr) or 0.0.0.0"
            .to_owned(),
        std::io::ErrorKind::PermissionDenied => "ports below 1024 need root or \
            CAP_NET_BIND_SERVICE: use a port above 1024"
            .to_owned(),
        _ => e.to_string(),
    }
}
