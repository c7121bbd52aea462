//! `treecast demo`: a live broadcast to watch in a browser, from one command, on loopback.
//!
//! In this process: a broadcaster looping the bundled clip, a few relays and `--viewers N`
//! headless viewers, all in one gossiped tree. Beside it, as a child process: the signal
//! server (`treecast-signal`, found next to this binary), a gossip peer of the tree, which
//! serves the watch page (browsers join the same tree) and the live tree page. Ctrl-C stops
//! everything: the nodes leave the tree, the signal server gets SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::config::{Role, Source};
use crate::record::Recording;
use crate::swarm::{Running, root_overlay_addr, start_on_loopback};
use crate::{NodeError, Stop};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where the signal server serves the pages (`--port`).
    pub port: u16,
    /// The stream name.
    pub stream: String,
    /// Native relays at least (more when the viewers need the slots).
    pub relays: usize,
    /// Headless native viewers.
    pub viewers: usize,
    /// The looped video clip.
    pub video: PathBuf,
    /// The looped audio clip.
    pub audio: Option<PathBuf>,
    /// The signal server's binary.
    pub signal_bin: PathBuf,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The signal server binary is not there.
    #[error(
        "the signal server is not built: no {0}. Build both binaries with \
         `cargo build --release -p treecast-node -p treecast-signal` (scripts/demo does)"
    )]
    NoSignal(PathBuf),
    /// The signal server did not come up.
    #[error("the signal server did not start: {0}")]
    Signal(String),
    /// A node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Runs the demo until `stop` resolves (the binary passes Ctrl-C, SIGTERM and SIGHUP).
pub async fn run(
    cfg: DemoConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    if !cfg.signal_bin.is_file() {
        return Err(DemoError::NoSignal(cfg.signal_bin));
    }
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // The signal server's port first: a port in use should fail before anything starts.
    let page_addr = SocketAddr::new(lo, cfg.port);
    if let Err(e) = std::net::TcpListener::bind(page_addr) {
        return Err(DemoError::Signal(format!(
            "cannot listen on {page_addr}: {e} (pick another with --port)"
        )));
    }

    let source = Source::Files {
        video: cfg.video.clone(),
        audio: cfg.audio.clone(),
        fps: 30,
    };
    let mut nodes: Vec<Running> =
        vec![start_on_loopback(&cfg.stream, Role::Broadcast { source }, None).await?];
    let bootstrap = root_overlay_addr(&nodes[0].state).await?;

    let mut signal = tokio::process::Command::new(&cfg.signal_bin)
        .args(["--http", &page_addr.to_string(), "--bootstrap", &bootstrap])
        .args(["--stream", &cfg.stream, "--ice-server", "none", "--no-mdns"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DemoError::Signal(format!("{}: {e}", cfg.signal_bin.display())))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(page_addr).await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = signal.try_wait() {
            return Err(DemoError::Signal(format!("it exited ({status})")));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(DemoError::Signal(format!("nothing listens on {page_addr}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Viewers are leaves: enough relays to carry them and a few browser tabs. With R >= 4
    // relays under a root of 4 slots there are 3R + 4 slots for leaves.
    let relays = cfg
        .relays
        .max((cfg.viewers + 8).saturating_sub(4).div_ceil(3));
    for _ in 0..relays {
        let relay = Role::Relay { pull: None };
        nodes.push(start_on_loopback(&cfg.stream, relay, Some(&bootstrap)).await?);
    }
    println!("watch the stream in a browser (any number of tabs; each joins the tree):");
    println!("http://{page_addr}/watch/{}", cfg.stream);
    println!("the live tree: http://{page_addr}/tree/{}", cfg.stream);
    println!(
        "running: a broadcaster, {relays} relays{}. Ctrl-C stops the demo.",
        if cfg.viewers > 0 {
            format!(", {} headless viewers joining", cfg.viewers)
        } else {
            String::new()
        }
    );
    for _ in 0..cfg.viewers {
        let recording = Recording {
            video: PathBuf::from("/dev/null"),
            audio: None,
            frames: None,
            keyframe_request_every: None,
            announce: false,
        };
        let role = Role::View {
            pull: None,
            recording,
        };
        nodes.push(start_on_loopback(&cfg.stream, role, Some(&bootstrap)).await?);
        // Spread the arrivals, so the tree page shows them join one by one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    tokio::select! {
        () = stop => {}
        status = signal.wait() => {
            tracing::warn!(?status, "the signal server stopped");
        }
    }
    println!("stopping…");
    // Viewers and relays first, the broadcaster last: each leaves the tree cleanly.
    for mut n in nodes.into_iter().rev() {
        if let Some(s) = n.stop.take() {
            let _ = s.send(Stop::Leave);
        }
    }
    #[cfg(unix)]
    if let Some(pid) = signal.id() {
        // SIGTERM: the signal server closes its WebSockets and exits.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), signal.wait()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}
