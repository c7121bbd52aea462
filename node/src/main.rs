//! The `treecast` binary: parses arguments, sets up tracing and calls [`treecast_node::run`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use treecast_node::codec::Codec;
use treecast_node::ice::MediaPorts;
use treecast_node::impairment::Impairment;
use treecast_node::record::Recording;
use treecast_node::{Config, Role, Source, TreeConfig};

/// treecast: one live broadcast to many viewers over a tree of WebRTC nodes.
///
/// Every node serves WHEP at http://ADDR/whep/STREAM (at most --max-children children; a full
/// node answers 503 with Retry-After) and its state at http://ADDR/api/status. Logs go to
/// stderr (RUST_LOG=debug for more); stdout prints `http listening on ADDR` once bound.
#[derive(Debug, Parser)]
#[command(name = "treecast", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A live broadcast to watch in a browser, on this machine alone: a broadcaster looping
    /// the bundled clip, a few relays and --viewers N headless viewers in one gossiped tree,
    /// and the signal server (treecast-signal, next to this binary) serving the watch page and
    /// the live tree page. Prints the URLs; Ctrl-C stops everything.
    ///
    /// Example: treecast demo --viewers 20   then open http://127.0.0.1:8080/watch/demo
    Demo {
        /// Headless native viewers joining the tree, one every 0.3 s.
        #[arg(long, default_value_t = 0)]
        viewers: usize,
        /// Native relays, at least: more are started when the viewers need the slots (viewers
        /// are leaves; every relay feeds four).
        #[arg(long, default_value_t = 4)]
        relays: usize,
        /// Port of the pages (the signal server), on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The bundled clip to loop: vp8 (VP8 + Opus) or h264 (H.264 + Opus).
        #[arg(long, default_value = "vp8", value_parser = ["vp8", "h264"])]
        codec: String,
        /// Stream name.
        #[arg(long, default_value = "demo")]
        stream: String,
    },
    /// Measure one treecast relay hop against a plain UDP relay of the same packets.
    ///
    /// Prints added latency per hop (p50, p99), CPU time per forwarded packet, the ratios to the
    /// plain relay, and the relay's memory per child. See docs/media.md.
    Bench {
        /// Packets per second on every path.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Payload bytes per packet.
        #[arg(long, default_value_t = 1000)]
        size: usize,
        /// Measured seconds (after a 2 s warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Instead: time to first decodable frame for this many new viewers per relay, with
        /// and without fast start (a root playing --video, two relays, viewers one by one).
        #[arg(long, value_name = "VIEWERS")]
        join: Option<u32>,
        /// The root's video file for --join.
        #[arg(long, default_value = "examples/media/test.ivf", requires = "join")]
        video: PathBuf,
        /// Seed of the pauses between joins (--join).
        #[arg(long, default_value_t = 1, requires = "join")]
        seed: u64,
    },
    /// A broadcaster and N tree relays in this one process (real libp2p, real WebRTC over
    /// loopback): the load test, and "hundreds of viewers" on one machine.
    ///
    /// Reports join time to first frame, depth, packets per relay, and after --kill K
    /// interior relays are stopped dead: repair times and interruptions elsewhere; plus gossip
    /// bytes per node and memory per node. Example (200 relays, 3 killed):
    ///   treecast swarm --nodes 200 --join-over 40 --kill 3
    Swarm {
        /// Relays besides the broadcaster.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// Stream name.
        #[arg(long, default_value = "swarm")]
        stream: String,
        /// Video file (default: the bundled test clip).
        #[arg(long)]
        video: Option<PathBuf>,
        /// Audio file.
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Start the relays evenly over this many seconds.
        #[arg(long, default_value_t = 10.0)]
        join_over: f64,
        /// Interior relays to stop dead once all have joined.
        #[arg(long, default_value_t = 0)]
        kill: usize,
        /// Seconds between the last join and the kills.
        #[arg(long, default_value_t = 5.0)]
        kill_after: f64,
        /// Seconds to keep measuring after the kills.
        #[arg(long, default_value_t = 10.0)]
        observe: f64,
        /// Which relays are killed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Print every interruption of a relay's media as it ends.
        #[arg(long)]
        show_gaps: bool,
    },
    /// The plain UDP relay the benchmark compares against (internal).
    #[command(hide = true)]
    UdpRelay {
        /// Where datagrams arrive.
        #[arg(long)]
        listen: SocketAddr,
        /// Where they go.
        #[arg(long)]
        to: SocketAddr,
    },
    /// Be the root: play a file in a loop, or take a WHIP publisher, and serve it over WHEP.
    ///
    /// Example: treecast broadcast --stream demo --video examples/media/test.ivf
    ///          --audio examples/media/test.ogg --http 127.0.0.1:8080
    ///
    /// WHIP: treecast broadcast --stream demo --whip-token SECRET --http 127.0.0.1:8080,
    /// then publish (OBS, a browser, aiortc) to http://127.0.0.1:8080/whip/demo with
    /// `Authorization: Bearer SECRET`.
    ///
    /// Plain RTP: treecast broadcast --stream demo --rtp-in 127.0.0.1:5004 --rtp-codec vp8
    /// --http 127.0.0.1:8080, then e.g. ffmpeg -re -i test.ivf -c:v copy -f rtp
    /// rtp://127.0.0.1:5004?pkt_size=1200
    ///
    /// Or with the SDP file ffmpeg writes: ffmpeg -re -i test.ivf -c:v copy -f rtp
    /// rtp://127.0.0.1:5004 -sdp_file in.sdp, and treecast broadcast --stream demo
    /// --rtp-in-sdp in.sdp --http 127.0.0.1:8080
    #[command(group(clap::ArgGroup::new("source").required(true).args(["video", "whip_token", "rtp_in", "rtp_in_sdp"])))]
    Broadcast {
        /// Stream name (A-Z a-z 0-9 - _), the last segment of the WHEP URL.
        #[arg(long)]
        stream: String,
        /// Video file: VP8 in IVF (.ivf) or H.264 Annex-B (.h264), constrained baseline.
        #[arg(long)]
        video: Option<PathBuf>,
        /// Take the media from a WHIP publisher at /whip/STREAM presenting this bearer token.
        #[arg(long, env = "TREECAST_WHIP_TOKEN", hide_env_values = true, conflicts_with_all = ["audio"])]
        whip_token: Option<String>,
        /// Audio file: Opus in Ogg (.ogg).
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Take video as plain RTP over UDP arriving at this address (port 0: any, printed).
        #[arg(long, conflicts_with = "audio")]
        rtp_in: Option<SocketAddr>,
        /// Codec of the --rtp-in video.
        #[arg(long, value_enum, default_value_t = RtpCodec::Vp8)]
        rtp_codec: RtpCodec,
        /// Take Opus as plain RTP over UDP arriving at this address.
        #[arg(long, requires = "rtp_in")]
        rtp_audio_in: Option<SocketAddr>,
        /// Take plain RTP as this SDP file describes it (ffmpeg -sdp_file): codec, payload
        /// type, address and port of the video and (optional) Opus audio stream.
        #[arg(long, alias = "sdp", value_name = "FILE",
              conflicts_with_all = ["rtp_in", "rtp_codec", "rtp_audio_in", "audio"])]
        rtp_in_sdp: Option<PathBuf>,
        /// Frame rate of an Annex-B file, which carries no timestamps.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Relay a stream to up to --max-children children: join the gossiped tree through a
    /// bootstrap node (it finds its own parent, repairs and moves up by itself), or pull from
    /// a fixed parent's WHEP URL.
    ///
    /// Tree:  treecast relay --stream demo --bootstrap /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
    ///          --http 127.0.0.1:8081 --upload-mbps 20
    /// Fixed: treecast relay --stream demo --pull http://127.0.0.1:8080/whep/demo
    ///          --http 127.0.0.1:8081
    Relay {
        /// Stream name served here (normally the parent's).
        #[arg(long)]
        stream: String,
        /// A fixed parent's WHEP URL (http://HOST:PORT/whep/STREAM), retried until it answers;
        /// the node then stays out of the gossiped tree.
        #[arg(long)]
        pull: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Watch a stream (from the gossiped tree, or a WHEP URL) and record it.
    ///
    /// Video is written as received: VP8 to IVF, H.264 to Annex-B, starting at the first
    /// keyframe. Audio (Opus) goes to --record-audio if given.
    ///
    /// Example: treecast view --pull http://127.0.0.1:8081/whep/demo --record out.ivf
    ///          --record-audio out.ogg --frames 90
    /// Tree:    treecast view --stream demo --bootstrap /ip4/127.0.0.1/tcp/4001 --record out.ivf
    View {
        /// The WHEP URL to play; without it the viewer joins the gossiped tree (a leaf unless
        /// --upload-mbps says it can feed children).
        #[arg(long)]
        pull: Option<String>,
        /// Video output file.
        #[arg(long)]
        record: PathBuf,
        /// Audio output file (Ogg Opus).
        #[arg(long)]
        record_audio: Option<PathBuf>,
        /// Exit after this many video frames (default: record until Ctrl-C).
        #[arg(long)]
        frames: Option<u64>,
        /// Test only: request a keyframe every this many milliseconds.
        #[arg(long, hide = true)]
        keyframe_request_every_ms: Option<u64>,
        /// Stream name; defaults to the last path segment of --pull (required without it).
        #[arg(long, required_unless_present = "pull")]
        stream: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// Video codecs accepted as plain RTP.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RtpCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 packetization-mode 1 (RFC 6184).
    H264,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// TOML file with any of this command's long flags as keys in snake_case
    /// (`upload_mbps = 20`, `bootstrap = ["/ip4/..."]`, `no_mdns = true`); flags on the command
    /// line override it. See docs/operating.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for the HTTP server (WHEP, /api/status); port 0 picks a free port.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// IP the WebRTC sockets bind; defaults to the --http IP, or 127.0.0.1.
    #[arg(long)]
    ice_ip: Option<IpAddr>,
    /// Children this node feeds at most.
    #[arg(long, default_value_t = 4)]
    max_children: usize,
    /// Give a new child the packets since the last keyframe at once (it starts up to one GOP
    /// behind live) instead of waiting for the next keyframe. On by default.
    #[arg(long, overrides_with = "no_fast_start")]
    fast_start: bool,
    /// Turn fast start off: a new child waits for the next keyframe (starts at live, later).
    #[arg(long, overrides_with = "fast_start")]
    no_fast_start: bool,
    /// Test only: impair every datagram sent, e.g. loss=0.05,delay=5,jitter=2,seed=7 (add
    /// only=rtp to impair RTP packets alone).
    #[arg(long, hide = true, env = "TREECAST_IMPAIR")]
    impair: Option<Impairment>,
    /// Upload bandwidth this node may use, in Mbit/s: the child slots it offers are what this
    /// carries of the stream's bitrate (keeping a fifth in reserve), at most --max-children.
    /// Measured delivery (the children's loss reports) can only lower it.
    #[arg(long, value_name = "MBPS")]
    upload_mbps: Option<f64>,
    /// Test only: never lower the declared capacity on the children's loss reports, as a node
    /// that overstates its upload would (the others must find it out).
    #[arg(long, hide = true)]
    overstate_capacity: bool,
    /// STUN server for the media connections (repeatable), e.g. stun:stun.l.google.com:19302:
    /// lets peers behind NAT learn their public address. Default: none (host candidates only).
    #[arg(long, value_name = "URL")]
    stun: Vec<String>,
    /// TURN server for the media connections (repeatable), e.g. turn:turn.example.org:3478,
    /// with --turn-user and --turn-password: relays media when no direct path exists.
    #[arg(long, value_name = "URL", requires_all = ["turn_user", "turn_password"])]
    turn: Vec<String>,
    /// TURN user name (for every --turn).
    #[arg(long, value_name = "USER")]
    turn_user: Option<String>,
    /// TURN password (for every --turn).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "TREECAST_TURN_PASSWORD",
        hide_env_values = true
    )]
    turn_password: Option<String>,
    /// Public IP of a 1:1 NAT (the router forwards the media port to this machine):
    /// advertised in ICE candidates in place of the --ice-ip address. Use with --udp-port.
    #[arg(long, value_name = "IP")]
    nat_ip: Option<IpAddr>,
    /// One UDP port for all media: the parent, every child and every WHEP viewer share one
    /// socket on --ice-ip:PORT, so the router forwards just this port. 0 lets the system pick
    /// one (logged). Not with --turn (use --udp-ports). Default: one free port per connection.
    #[arg(long, value_name = "PORT", conflicts_with = "udp_ports")]
    udp_port: Option<u16>,
    /// UDP ports the media connections bind, MIN-MAX, one port per connection (a relay with
    /// 4 children and a parent needs 5). Prefer --udp-port; this is for --turn, whose
    /// allocations need a port each. Default: any free port.
    #[arg(long, value_name = "MIN-MAX")]
    udp_ports: Option<treecast_node::ice::PortRange>,
    #[command(flatten)]
    gossip: treecast_node::gossip::Args,
}

/// Parses the command line with the `--config` file's settings merged in (`config_file`).
fn parse_cli() -> anyhow::Result<Cli> {
    use clap::CommandFactory;
    let merged = treecast_node::config_file::merge(&Cli::command(), std::env::args_os().collect())?;
    match <Cli as clap::Parser>::try_parse_from(&merged.args) {
        Ok(cli) => Ok(cli),
        Err(e) => match merged.explain(e) {
            // clap's own errors (and --help) print and exit as usual.
            Ok(e) => e.exit(),
            Err(e) => Err(e.into()),
        },
    }
}

fn main() -> anyhow::Result<()> {
    let cli = parse_cli()?;
    // The benchmark's own nodes stay quiet: its report is the output.
    let default_filter = match cli.command {
        Command::Bench { .. } | Command::UdpRelay { .. } | Command::Swarm { .. } => "warn",
        // webrtc-rs warns about normal events of ICE and DTLS; the demo's reader wants quiet.
        Command::Demo { .. } => "warn,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error",
        _ => "info,webrtc=warn,rtc=warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    let (stream, role, common) = match cli.command {
        Command::Bench {
            join: Some(viewers),
            video,
            seed,
            ..
        } => {
            let cfg = treecast_node::bench::join::JoinConfig {
                viewers,
                video,
                seed,
            };
            treecast_node::bench::join::run(&cfg)?;
            return Ok(());
        }
        Command::Bench {
            rate,
            size,
            seconds,
            ..
        } => {
            let cfg = treecast_node::bench::BenchConfig {
                rate,
                size,
                seconds,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(treecast_node::bench::run(cfg))?;
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            return Ok(());
        }
        Command::Swarm {
            nodes,
            stream,
            video,
            audio,
            join_over,
            kill,
            kill_after,
            observe,
            seed,
            json,
            show_gaps,
        } => {
            let secs = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.0, 3600.0));
            let clip = |name: &str| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/media")
                    .join(name)
            };
            let cfg = treecast_node::swarm::SwarmConfig {
                nodes,
                stream,
                video: video.unwrap_or_else(|| clip("test.ivf")),
                audio,
                join_over: secs(join_over),
                kill,
                kill_after: secs(kill_after),
                observe: secs(observe),
                seed,
                show_gaps,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = rt.block_on(treecast_node::swarm::run(cfg))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            return Ok(());
        }
        Command::Demo {
            viewers,
            relays,
            port,
            codec,
            stream,
        } => {
            let clip = |name: &str| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/media")
                    .join(name)
            };
            let exe = std::env::current_exe().context("locating this binary")?;
            let cfg = treecast_node::demo::DemoConfig {
                port,
                stream,
                relays,
                viewers,
                video: clip(if codec == "h264" {
                    "test.h264"
                } else {
                    "test.ivf"
                }),
                audio: Some(clip("test.ogg")),
                signal_bin: exe.with_file_name("treecast-signal"),
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let result = rt.block_on(treecast_node::demo::run(cfg, stop_signal()));
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
            result?;
            return Ok(());
        }
        Command::UdpRelay { listen, to } => {
            treecast_node::bench::udp_relay(listen, to)?;
            return Ok(());
        }
        Command::Broadcast {
            stream,
            video,
            whip_token,
            audio,
            rtp_in,
            rtp_codec,
            rtp_audio_in,
            rtp_in_sdp,
            fps,
            common,
        } => {
            let source = match (video, whip_token, rtp_in) {
                (Some(video), _, _) => Source::Files { video, audio, fps },
                (None, Some(token), _) => Source::Whip { token },
                (None, None, None) if let Some(sdp) = rtp_in_sdp => {
                    treecast_node::rtp_in::source_from_sdp_file(&sdp)?
                }
                (None, None, Some(video)) => Source::Rtp {
                    video,
                    codec: match rtp_codec {
                        RtpCodec::Vp8 => Codec::Vp8,
                        RtpCodec::H264 => Codec::H264,
                    },
                    audio: rtp_audio_in,
                    video_pt: None,
                    audio_pt: None,
                    video_fmtp: None,
                },
                // clap's "source" group requires one of them.
                _ => anyhow::bail!("give --video FILE, --whip-token TOKEN or --rtp-in ADDR"),
            };
            (stream, Role::Broadcast { source }, common)
        }
        Command::Relay {
            stream,
            pull,
            common,
        } => (stream, Role::Relay { pull }, common),
        Command::View {
            pull,
            record,
            record_audio,
            frames,
            keyframe_request_every_ms,
            stream,
            common,
        } => {
            let stream = stream
                .or_else(|| {
                    pull.as_deref()
                        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "stream".to_owned());
            let recording = Recording {
                video: record,
                audio: record_audio,
                frames,
                announce: true,
                keyframe_request_every: keyframe_request_every_ms
                    .map(std::time::Duration::from_millis),
            };
            (stream, Role::View { pull, recording }, common)
        }
    };
    if let Some(file) = &common.config {
        tracing::info!(file = %file.display(), "settings from the config file (flags override them)");
    }
    let upload_kbps = match common.upload_mbps {
        Some(m) if !(0.0..=100_000.0).contains(&m) || m.is_nan() => {
            anyhow::bail!("--upload-mbps must be between 0 and 100000, got {m}")
        }
        Some(m) => Some((m * 1000.0) as u32),
        None => None,
    };
    let tree = TreeConfig {
        gossip: common.gossip,
        upload_kbps,
        overstate_capacity: common.overstate_capacity,
    };
    let config = Config::new(&stream, role, common.http, common.ice_ip)?
        .with_max_children(common.max_children)?
        .with_impairment(common.impair)
        // The later of --fast-start / --no-fast-start wins (clap overrides); on by default.
        .with_fast_start(common.fast_start || !common.no_fast_start)
        .with_ice(treecast_node::ice::IceConfig::new(
            &common.stun,
            &common.turn,
            common.turn_user.as_deref(),
            common.turn_password.as_deref(),
            common.nat_ip,
            match (common.udp_port, common.udp_ports) {
                (Some(port), _) => MediaPorts::Shared(port),
                (None, Some(range)) => MediaPorts::Range(range),
                (None, None) => MediaPorts::Any,
            },
        )?)
        .with_tree(Some(tree))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = rt.block_on(async { treecast_node::run(config, stop_signal()).await });
    // The connections are closed; do not wait for webrtc's background work to wind down.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(result?)
}

/// Ctrl-C, SIGTERM (systemd, `kill`, `timeout`) or SIGHUP (the terminal closed).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
