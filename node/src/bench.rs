//! `treecast bench`: one treecast relay hop against a plain UDP relay of the same packets, side
//! by side in one run.
//!
//! The bench process is the root (a generator feeding one video feed, served over WHEP) and
//! every sink. Two relays run as their own processes so their CPU time can be read from
//! `/proc`: a real `treecast relay` and `treecast udp-relay` (a blocking recv/send loop).
//! Every packet carries its send time (wall clock, nanoseconds) in its payload, which every
//! hop forwards untouched. Four paths are measured at once:
//!
//! - WebRTC direct: root -> sink, and via the relay: root -> relay -> sink;
//! - UDP direct: generator -> sink, and via the UDP relay: generator -> relay -> sink.
//!
//! Added latency per hop is the percentile of the relayed path minus the same percentile of
//! the direct path. CPU per packet is the relay process's time on a CPU over the window
//! (nanoseconds, summed over its threads from `/proc/PID/task/*/schedstat`; the clock-tick
//! counters of `/proc/PID/stat` moved in 10 ms steps, a tenth of the plain relay's whole
//! budget in a 10 s run) divided by the packets it forwarded. Memory per child is the relay's RSS growth when three
//! more children attach, divided by three.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::codec::{Codec, CodecExt, PayloadTypes};
use crate::config::{NodeId, RoleName, StreamId};
use crate::fanout::{Feed, Tracks};
use crate::node::NodeState;
use crate::peer::PeerFactory;

pub mod join;
mod proc;

use proc::Proc;

/// Benchmark settings.
#[derive(Debug, Clone, Copy)]
pub struct BenchConfig {
    /// Packets per second sent on every path.
    pub rate: u32,
    /// Payload bytes per packet.
    pub size: usize,
    /// Measured seconds (after a 2 s warm-up).
    pub seconds: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting a process, binding a socket or reading /proc failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something did not come up.
    #[error("{0}")]
    Setup(String),
}

const STREAM: &str = "bench";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs the benchmark and prints the report.
pub async fn run(cfg: BenchConfig) -> Result<(), BenchError> {
    let exe = std::env::current_exe()?;
    let runtime = webrtc::runtime::default_runtime()
        .ok_or_else(|| BenchError::Setup("no webrtc runtime".into()))?;
    let factory = PeerFactory::new(LOCALHOST, runtime, PayloadTypes::Node);

    // The root: one video feed served over WHEP.
    let root = Arc::new(NodeState::new(
        NodeId::random(),
        stream(),
        RoleName::Broadcast,
        None,
        4,
        factory.clone(),
        None,
    ));
    let (feed, _requests) = Feed::new(Codec::Vp8, Codec::Vp8.rtp_codec());
    root.set_tracks(Tracks {
        video: Some(feed.clone()),
        audio: None,
    });
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await?;
    let root_url = format!("http://{}/whep/{STREAM}", listener.local_addr()?);
    let app = crate::http::router(root.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // The two relays, as processes.
    let relay = Proc::spawn(
        &exe,
        &[
            "relay",
            "--stream",
            STREAM,
            "--pull",
            &root_url,
            "--http",
            "127.0.0.1:0",
        ],
    )?;
    let (mut relay, relay_http) = line_after(relay, "http listening on ").await?;
    let relay_url = format!("http://{relay_http}/whep/{STREAM}");
    let udp_via_sink = UdpSocket::bind((LOCALHOST, 0)).await?;
    let udp_direct_sink = UdpSocket::bind((LOCALHOST, 0)).await?;
    let udp_relay = Proc::spawn(
        &exe,
        &[
            "udp-relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &udp_via_sink.local_addr()?.to_string(),
        ],
    )?;
    let (mut udp_relay, udp_relay_addr) = line_after(udp_relay, "udp relay listening on ").await?;
    let udp_relay_addr: SocketAddr = udp_relay_addr
        .parse()
        .map_err(|_| BenchError::Setup("bad udp relay address".into()))?;

    // Generator: the same packets into the feed and over UDP.
    let (stop, stop_rx) = watch::channel(false);
    let udp_out = UdpSocket::bind((LOCALHOST, 0)).await?;
    let direct_addr = udp_direct_sink.local_addr()?;
    tokio::spawn(generate(
        cfg,
        feed.clone(),
        udp_out,
        udp_relay_addr,
        direct_addr,
        stop_rx.clone(),
    ));

    // Sinks. The measurement window opens after the warm-up.
    let warmup = Duration::from_secs(2);
    let window = Duration::from_secs(cfg.seconds);
    let direct = tokio::spawn(webrtc_sink(
        factory.clone(),
        root_url.clone(),
        warmup,
        window,
    ));
    let via = tokio::spawn(webrtc_sink(
        factory.clone(),
        relay_url.clone(),
        warmup,
        window,
    ));
    let udp_direct = tokio::spawn(udp_sink(udp_direct_sink, warmup, window));
    let udp_via = tokio::spawn(udp_sink(udp_via_sink, warmup, window));
    eprintln!(
        "bench: {} packets/s of {} bytes, {} s warm-up, {} s measured",
        cfg.rate,
        cfg.size,
        warmup.as_secs(),
        cfg.seconds
    );

    tokio::time::sleep(warmup).await;
    let cpu0 = (cpu_ns(relay.id())?, cpu_ns(udp_relay.id())?);
    tokio::time::sleep(window).await;
    let cpu1 = (cpu_ns(relay.id())?, cpu_ns(udp_relay.id())?);

    let join = |r: Result<Vec<u64>, tokio::task::JoinError>| r.unwrap_or_default();
    let (direct, via) = (join(direct.await), join(via.await));
    let (udp_direct, udp_via) = (join(udp_direct.await), join(udp_via.await));

    // Memory per child: three more children on the relay.
    let rss1 = rss_kib(relay.id())?;
    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(tokio::spawn(webrtc_sink(
            factory.clone(),
            relay_url.clone(),
            Duration::ZERO,
            Duration::from_secs(3),
        )));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss4 = rss_kib(relay.id())?;
    for e in extra {
        let _ = e.await;
    }
    stop.send_replace(true);

    let report = Report {
        cfg,
        webrtc_direct: Stats::of(direct),
        webrtc_via: Stats::of(via.clone()),
        udp_direct: Stats::of(udp_direct),
        udp_via: Stats::of(udp_via.clone()),
        relay_cpu_s: cpu1.0.saturating_sub(cpu0.0) as f64 / 1e9,
        udp_relay_cpu_s: cpu1.1.saturating_sub(cpu0.1) as f64 / 1e9,
        relay_packets: via.len(),
        udp_relay_packets: udp_via.len(),
        rss_per_child_kib: rss4.saturating_sub(rss1) as f64 / 3.0,
        rss_kib: rss1,
    };
    report.print();
    relay.kill();
    udp_relay.kill();
    Ok(())
}

/// The plain UDP relay: forwards every datagram arriving at `listen` to `to`, unchanged.
/// Blocking std sockets, one thread: the cheapest relay there is, as the baseline.
pub fn udp_relay(listen: SocketAddr, to: SocketAddr) -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind(listen)?;
    println!("udp relay listening on {}", socket.local_addr()?);
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], to)?;
    }
}

fn stream() -> StreamId {
    // A constant that satisfies the stream-name rules.
    StreamId::new(STREAM).unwrap_or_else(|_| unreachable!("constant stream name"))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// A VP8-shaped payload (S=1, PID=0, keyframe) carrying its send time at bytes 2..10.
fn payload(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(10));
    b.put_u8(0x10);
    b.put_u8(0x00);
    b.put_u64(now_ns());
    b.resize(size.max(10), 0xab);
    b.freeze()
}

fn sent_at(payload: &[u8]) -> Option<u64> {
    payload
        .get(2..10)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

async fn generate(
    cfg: BenchConfig,
    feed: Arc<Feed>,
    udp: UdpSocket,
    via: SocketAddr,
    direct: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / cfg.rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u16;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let body = payload(cfg.size);
        let mut packet = rtp::Packet::default();
        packet.header.version = 2;
        packet.header.marker = true;
        packet.header.payload_type = 96;
        packet.header.sequence_number = seq;
        packet.header.timestamp = u32::from(seq).wrapping_mul(90);
        packet.header.ssrc = 0x7ee_cafe;
        packet.payload = body.clone();
        seq = seq.wrapping_add(1);
        feed.push(packet);
        let _ = udp.send_to(&body, via).await;
        let _ = udp.send_to(&body, direct).await;
    }
}

/// Pulls from `url` and returns the one-way latencies (ns) of the packets that arrive during
/// the window.
async fn webrtc_sink(
    factory: PeerFactory,
    url: String,
    warmup: Duration,
    window: Duration,
) -> Vec<u64> {
    let node = Arc::new(NodeState::new(
        NodeId::random(),
        stream(),
        RoleName::View,
        Some(url.clone()),
        1,
        factory,
        None,
    ));
    let (stop, stop_rx) = watch::channel(false);
    let up = tokio::spawn(crate::upstream::run(node.clone(), url, stop_rx));
    let Some(video) = node.wait_tracks().await.video else {
        return Vec::new();
    };
    let mut rx = video.subscribe();
    let start = tokio::time::Instant::now() + warmup;
    let end = start + window;
    let mut out = Vec::new();
    loop {
        let r = tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            r = rx.recv() => r,
        };
        let now = now_ns();
        if let Ok(f) = r
            && tokio::time::Instant::now() >= start
            && let Some(t) = sent_at(&f.packet.payload)
        {
            out.push(now.saturating_sub(t));
        }
    }
    stop.send_replace(true);
    let _ = up.await;
    out
}

async fn udp_sink(socket: UdpSocket, warmup: Duration, window: Duration) -> Vec<u64> {
    let start = tokio::time::Instant::now() + warmup;
    let end = start + window;
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    loop {
        let r = tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let now = now_ns();
        if let Ok((n, _)) = r
            && tokio::time::Instant::now() >= start
            && let Some(t) = sent_at(&buf[..n])
        {
            out.push(now.saturating_sub(t));
        }
    }
    out
}

/// [`Proc::line_after`] off the async runtime's threads; hands the process back.
async fn line_after(mut p: Proc, prefix: &'static str) -> Result<(Proc, String), BenchError> {
    let (p, line) = tokio::task::spawn_blocking(move || {
        let line = p.line_after(prefix);
        (p, line)
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok((p, line?))
}

/// Time a process's threads spent on a CPU, in nanoseconds: the first field of
/// `/proc/PID/task/TID/schedstat` (the scheduler's `sum_exec_runtime`), summed over threads.
/// Threads that ended before the call are not counted; the relays keep theirs.
fn cpu_ns(pid: u32) -> std::io::Result<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// Resident set size in KiB (`VmRSS` in `/proc/PID/status`).
fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Latency percentiles of one path.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    packets: usize,
    p50_us: f64,
    p99_us: f64,
}

impl Stats {
    fn of(mut ns: Vec<u64>) -> Stats {
        if ns.is_empty() {
            return Stats::default();
        }
        ns.sort_unstable();
        let at = |q: usize| ns[(ns.len() * q / 100).min(ns.len() - 1)] as f64 / 1000.0;
        Stats {
            packets: ns.len(),
            p50_us: at(50),
            p99_us: at(99),
        }
    }
}

struct Report {
    cfg: BenchConfig,
    webrtc_direct: Stats,
    webrtc_via: Stats,
    udp_direct: Stats,
    udp_via: Stats,
    relay_cpu_s: f64,
    udp_relay_cpu_s: f64,
    relay_packets: usize,
    udp_relay_packets: usize,
    rss_kib: u64,
    rss_per_child_kib: f64,
}

impl Report {
    fn print(&self) {
        let sent = self.cfg.rate as u64 * self.cfg.seconds;
        let per_packet_us = |cpu_s: f64, n: usize| cpu_s * 1e6 / n.max(1) as f64;
        let t_cpu = per_packet_us(self.relay_cpu_s, self.relay_packets);
        let u_cpu = per_packet_us(self.udp_relay_cpu_s, self.udp_relay_packets);
        let added =
            |via: Stats, direct: Stats| (via.p50_us - direct.p50_us, via.p99_us - direct.p99_us);
        let (t50, t99) = added(self.webrtc_via, self.webrtc_direct);
        let (u50, u99) = added(self.udp_via, self.udp_direct);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "treecast bench: {} pkt/s x {} B for {} s (~{sent} packets per path)",
            self.cfg.rate, self.cfg.size, self.cfg.seconds
        );
        println!(
            "{:<28} {:>10} {:>12} {:>12}",
            "path", "packets", "p50 (us)", "p99 (us)"
        );
        for (name, s) in [
            ("webrtc root -> sink", self.webrtc_direct),
            ("webrtc root -> relay -> sink", self.webrtc_via),
            ("udp gen -> sink", self.udp_direct),
            ("udp gen -> relay -> sink", self.udp_via),
        ] {
            println!(
                "{name:<28} {:>10} {:>12.1} {:>12.1}",
                s.packets, s.p50_us, s.p99_us
            );
        }
        println!();
        println!(
            "{:<22} {:>14} {:>14} {:>10}",
            "per hop", "treecast", "plain UDP", "ratio"
        );
        println!(
            "{:<22} {:>14.1} {:>14.1} {:>10.2}",
            "added p50 (us)",
            t50,
            u50,
            ratio(t50, u50)
        );
        println!(
            "{:<22} {:>14.1} {:>14.1} {:>10.2}",
            "added p99 (us)",
            t99,
            u99,
            ratio(t99, u99)
        );
        println!(
            "{:<22} {:>14.2} {:>14.2} {:>10.2}",
            "CPU per packet (us)",
            t_cpu,
            u_cpu,
            ratio(t_cpu, u_cpu)
        );
        println!(
            "{:<22} {:>14.0} {:>14}",
            "relay RSS (KiB)", self.rss_kib as f64, "-"
        );
        println!(
            "{:<22} {:>14.0} {:>14}",
            "RSS per child (KiB)", self.rss_per_child_kib, "-"
        );
        println!(
            "targets: p99 added < 2000 us: {}; CPU within 3x: {}; < 1 MiB per child: {}",
            verdict(t99 < 2000.0),
            verdict(ratio(t_cpu, u_cpu) <= 3.0),
            verdict(self.rss_per_child_kib < 1024.0)
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_send_time_and_looks_like_a_vp8_keyframe() {
        let before = now_ns();
        let p = payload(1000);
        assert_eq!(p.len(), 1000);
        let t = sent_at(&p).unwrap();
        assert!(t >= before && t <= now_ns());
        assert!(Codec::Vp8.is_keyframe_start(&p));
        assert_eq!(sent_at(&[0x10, 0]), None);
    }

    #[test]
    fn percentiles() {
        let s = Stats::of((1..=100).map(|i| i * 1000).collect());
        assert_eq!(s.packets, 100);
        assert_eq!(s.p50_us, 51.0);
        assert_eq!(s.p99_us, 100.0);
        assert_eq!(Stats::of(vec![]).packets, 0);
    }

    #[test]
    fn reads_a_processes_cpu_and_memory() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        // Another process that only burns CPU, as the relays under test are other processes
        // (the test runner's own threads come and go, and a thread's time leaves the sum
        // when it ends).
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh");
        let pid = busy.id();
        let start = std::time::Instant::now();
        let mut counted = 0;
        while counted == 0 && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
            counted = cpu_ns(pid).unwrap_or(0);
        }
        let _ = busy.kill();
        let _ = busy.wait();
        assert!(counted > 0, "no CPU time counted for a busy process in 3 s");
    }
}
