//! The operator's side of the binary (docs/operating.md): the usual mistakes end in a message
//! saying what is wrong and what to do, and the home-relay network options reach the SDP.

// Helpers below the tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Node, media, tmp_dir};

/// Runs `treecast ARGS` to its end (at most 20 s) and returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_treecast"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "treecast {args:?} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let (ok, stderr) = run(args);
    assert!(!ok, "treecast {args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "{needle:?} missing from:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const OVERLAY: [&str; 3] = ["--no-mdns", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"];

#[test]
fn ports_in_use_are_named() {
    let video = media("low.ivf");
    let video = video.to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = vec![
        "broadcast",
        "--stream",
        "demo",
        "--video",
        video,
        "--http",
        &addr,
    ];
    args.extend(OVERLAY);
    assert_fails_with(
        &args,
        &format!("cannot listen on {addr}: the port is already in use"),
    );

    let p2p = format!("/ip4/127.0.0.1/tcp/{}", taken.local_addr().unwrap().port());
    assert_fails_with(
        &[
            "broadcast",
            "--stream",
            "demo",
            "--video",
            video,
            "--http",
            "127.0.0.1:0",
            "--no-mdns",
            "--p2p-listen",
            &p2p,
        ],
        &format!("gossip overlay: cannot listen on {p2p}: the port is already in use"),
    );
}

#[test]
fn bad_bootstrap_addresses_are_refused_and_unreachable_ones_reported() {
    assert_fails_with(
        &[
            "relay",
            "--stream",
            "demo",
            "--http",
            "127.0.0.1:0",
            "--bootstrap",
            "127.0.0.1:4001",
        ],
        "invalid bootstrap address \"127.0.0.1:4001\"",
    );
    // A port nobody listens on: the relay runs on and says why it stays alone.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let bootstrap = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut args = vec!["relay", "--stream", "demo", "--http", "127.0.0.1:0"];
    args.extend(OVERLAY);
    args.extend(["--bootstrap", &bootstrap]);
    warns(&args, "cannot reach the bootstrap node (--bootstrap)");
}

#[test]
fn pulling_from_another_machine_over_loopback_is_flagged() {
    let mut args = vec![
        "view",
        "--pull",
        "http://192.0.2.1:8081/whep/demo",
        "--record",
        "/dev/null",
    ];
    args.extend(OVERLAY);
    warns(&args, "pulling from 192.0.2.1 but WebRTC binds 127.0.0.1");
}

/// Runs `treecast ARGS` until a stderr line contains `needle` (at most 15 s), then kills it.
fn warns(args: &[&str], needle: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_treecast"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "{needle:?} not in:\n{}", seen.join("\n"));
}

#[test]
fn config_file_mistakes_name_the_file() {
    let dir = tmp_dir("operating-config");
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "stream = \"demo\"\nuplod_mbps = 5\n").unwrap();
    let invalid = dir.join("invalid.toml");
    std::fs::write(&invalid, "stream = demo\n").unwrap();
    let bad_value = dir.join("bad-value.toml");
    std::fs::write(&bad_value, "stream = \"demo\"\nhttp = \"localhost\"\n").unwrap();
    let missing = dir.join("missing.toml");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    assert_fails_with(
        &["relay", "--config", &path(&unknown)],
        &format!("config file {}: unknown key `uplod_mbps`", path(&unknown)),
    );
    assert_fails_with(
        &["relay", "--config", &path(&invalid)],
        &format!("config file {} is not valid TOML", path(&invalid)),
    );
    assert_fails_with(
        &["relay", "--config", &path(&bad_value)],
        &format!(
            "config file {}: key `http`: invalid value 'localhost'",
            path(&bad_value)
        ),
    );
    assert_fails_with(
        &["relay", "--config", &path(&missing)],
        &format!("cannot read config file {}", path(&missing)),
    );
    assert_fails_with(
        &["relay", "--config", &path(&dir)],
        &format!("cannot read config file {}", path(&dir)),
    );
}

#[test]
fn the_answer_carries_the_nat_ip_and_a_port_of_the_range() {
    let dir = tmp_dir("operating-nat");
    let video = media("low.ivf");
    let config = dir.join("root.toml");
    // A free range: the first port of a block the OS just handed out, and the next few.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let min = probe.local_addr().unwrap().port().min(65_000);
    drop(probe);
    let max = min + 9;
    std::fs::write(
        &config,
        format!(
            "stream = \"demo\"\nvideo = {:?}\nhttp = \"127.0.0.1:1\"\nnat_ip = \"203.0.113.9\"\n\
             udp_ports = \"{min}-{max}\"\n",
            video.to_str().unwrap()
        ),
    )
    .unwrap();
    let root = Node::spawn(
        "root",
        &dir,
        // --http on the command line too: it overrides the file's (and tells the helper to
        // wait for the bound address).
        &[
            "broadcast",
            "--config",
            config.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
        let runtime = webrtc::runtime::default_runtime().unwrap();
        let factory = treecast_node::peer::PeerFactory::new(
            "127.0.0.1".parse().unwrap(),
            runtime,
            treecast_node::codec::PayloadTypes::Viewer,
        );
        let counters = std::sync::Arc::new(treecast_node::rtcp_tap::LinkCounters::default());
        let mut peer = factory
            .build(counters, treecast_node::peer::Direction::Receive)
            .await
            .unwrap();
        peer.pc
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        let offer = peer.pc.create_offer(None).await.unwrap();
        let offer = peer.finish_local(offer).await.unwrap();
        let answer = treecast_node::whep_client::post_offer(&root.whep_url("demo"), offer)
            .await
            .unwrap();
        let _ = peer.pc.close().await;
        answer.sdp
    });
    let candidates: Vec<(String, u16)> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            (f[4].to_owned(), f[5].parse().unwrap())
        })
        .collect();
    assert!(!candidates.is_empty(), "no candidates in:\n{answer}");
    for (ip, port) in candidates {
        assert_eq!(ip, "203.0.113.9", "{answer}");
        assert!((min..=max).contains(&port), "{port} not in {min}-{max}");
    }
}
