//! End-to-end: `--udp-port`, every media connection of a node on one UDP socket, with real
//! `treecast` processes on 127.0.0.1. A broadcaster on one port feeds a relay on one port that
//! feeds four children (two recording viewers, one of them on a shared port too, a plain
//! viewer and a relay); the relay's UDP sockets, read from /proc, hold exactly one on its media
//! address while five connections run over it; a stranger's datagrams are dropped and
//! counted; the recordings are the source, byte for byte.

// Helpers below the tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Node, assert_contiguous_run, ivf_frames, media, tmp_dir};

const STREAM: &str = "demo";

/// Spawns a node and reads the shared port it printed.
fn spawn_on_port(name: &str, dir: &Path, args: &[&str]) -> (Node, SocketAddr) {
    let mut node = Node::spawn(name, dir, args, &[]);
    let line = node.expect_line("media udp listening on ");
    let addr = line["media udp listening on ".len()..].parse().unwrap();
    (node, addr)
}

/// The local addresses of the UDP sockets process `pid` holds (its fds matched against
/// /proc/net/udp and udp6 by inode).
fn udp_sockets(pid: u32) -> Vec<String> {
    let mut inodes = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut found = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (f.get(1), f.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            let (ip, port) = local.split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            // The kernel prints the address as the native-endian u32 of its network bytes.
            let ip = match u32::from_str_radix(ip, 16) {
                Ok(v) if ip.len() == 8 => Ipv4Addr::from(v.to_ne_bytes()).to_string(),
                _ => format!("[{ip}]"),
            };
            found.push(format!("{ip}:{port}"));
        }
    }
    found.sort();
    found
}

/// Polls `f` (bounded) until it holds; panics with `what` and the last value otherwise.
fn eventually<T: std::fmt::Debug>(what: &str, mut f: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, value) = f();
        if ok {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_relay_serves_its_parent_and_four_children_through_one_udp_port() {
    let dir = tmp_dir("udp-port");
    let video = media("test.ivf");
    let audio = media("test.ogg");
    let (root, root_port) = spawn_on_port(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            STREAM,
            "--video",
            video.to_str().unwrap(),
            "--audio",
            audio.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--udp-port",
            "0",
        ],
    );
    let (relay, relay_port) = spawn_on_port(
        "relay",
        &dir,
        &[
            "relay",
            "--stream",
            STREAM,
            "--pull",
            &root.whep_url(STREAM),
            "--http",
            "127.0.0.1:0",
            "--udp-port",
            "0",
        ],
    );
    assert_eq!(relay_port.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let pull = relay.whep_url(STREAM);

    // A stranger sprays the relay's port the whole time: junk, and DTLS-looking records.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spray = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = stranger.send_to(&[22, 0xfe, 0xfd, 0, 0, 1, 2, 3], relay_port);
                let _ = stranger.send_to(&sent.to_be_bytes().repeat(50), relay_port);
                sent += 2;
                std::thread::sleep(Duration::from_millis(10));
            }
            sent
        })
    };

    let (a_out, b_out) = (dir.join("a.ivf"), dir.join("b.ivf"));
    let record = |name: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "view",
            "--pull",
            &pull,
            "--record",
            out.to_str().unwrap(),
            "--frames",
            "150",
        ];
        args.extend(extra);
        let mut node = Node::spawn(name, &dir, &args, &[]);
        if !extra.is_empty() {
            node.expect_line("media udp listening on ");
        }
        node
    };
    let mut view_a = record("view-a", &a_out, &["--udp-port", "0"]);
    let mut view_b = record("view-b", &b_out, &[]);
    let c_out = dir.join("c.ivf");
    let _view_c = Node::spawn(
        "view-c",
        &dir,
        &["view", "--pull", &pull, "--record", c_out.to_str().unwrap()],
        &[],
    );
    let _relay2 = Node::spawn(
        "relay2",
        &dir,
        &[
            "relay",
            "--stream",
            STREAM,
            "--pull",
            &pull,
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );

    // Five connections (the parent and four children) on the one port...
    let status = eventually("the relay's parent and four children on its port", || {
        let s = relay.status();
        let ok = s["children"].as_array().map(Vec::len) == Some(4)
            && s["udp_port"]["connections"] == 5
            && s["receiving"] == true;
        (ok, s)
    });
    assert_eq!(status["udp_port"]["port"], relay_port.port(), "{status}");
    // ...and, by the OS's count, one UDP socket on the media address.
    let sockets = udp_sockets(relay.pid());
    let media_sockets: Vec<&String> = sockets
        .iter()
        .filter(|s| s.starts_with("127.0.0.1:"))
        .collect();
    assert_eq!(
        media_sockets,
        [&relay_port.to_string()],
        "the relay's UDP sockets: {sockets:?}"
    );
    // The broadcaster has one child (the relay), on its one port.
    assert_eq!(root.status()["udp_port"]["connections"], 1);
    assert_eq!(
        udp_sockets(root.pid())
            .iter()
            .filter(|s| s.starts_with("127.0.0.1:"))
            .collect::<Vec<_>>(),
        [&root_port.to_string()]
    );

    assert!(
        view_a.wait_success(Duration::from_secs(60)),
        "{}",
        view_a.log_tail()
    );
    assert!(
        view_b.wait_success(Duration::from_secs(60)),
        "{}",
        view_b.log_tail()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sprayed = spray.join().unwrap();

    let source = ivf_frames(&video);
    for out in [&a_out, &b_out] {
        let recorded = ivf_frames(out);
        assert_eq!(recorded.len(), 150, "{out:?}");
        let start = assert_contiguous_run(&source, &recorded);
        assert_eq!(source[start][0] & 1, 0, "{out:?} starts at a keyframe");
    }
    let s = relay.status();
    let dropped = s["udp_port"]["unknown_source"].as_u64().unwrap();
    assert!(
        dropped >= sprayed.min(100),
        "{sprayed} sprayed, {dropped} dropped: {s}"
    );
    // Every RTP packet from the parent came in through the port (plus RTCP and STUN).
    let delivered = s["udp_port"]["delivered"].as_u64().unwrap();
    let upstream = s["upstream"]["packets"].as_u64().unwrap();
    assert!(upstream > 500 && delivered >= upstream, "{s}");
    println!("relay: {}; sprayed {sprayed}", s["udp_port"]);
}

#[test]
fn the_answer_carries_the_nat_ip_and_the_one_port() {
    let dir = tmp_dir("udp-port-nat");
    let video = media("low.ivf");
    let config = dir.join("root.toml");
    std::fs::write(
        &config,
        format!(
            "stream = \"demo\"\nvideo = {:?}\nnat_ip = \"203.0.113.9\"\nudp_port = 0\n",
            video.to_str().unwrap()
        ),
    )
    .unwrap();
    let (root, port) = spawn_on_port(
        "root",
        &dir,
        &[
            "broadcast",
            "--config",
            config.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers: Vec<String> = rt.block_on(async {
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
        let runtime = webrtc::runtime::default_runtime().unwrap();
        let factory = treecast_node::peer::PeerFactory::new(
            "127.0.0.1".parse().unwrap(),
            runtime,
            treecast_node::codec::PayloadTypes::Viewer,
        );
        let mut answers = Vec::new();
        // Two viewers: both answers name the same port.
        for _ in 0..2 {
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
            answers.push(answer.sdp);
        }
        answers
    });
    for answer in answers {
        let candidates: Vec<(String, u16)> = answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                (f[4].to_owned(), f[5].parse().unwrap())
            })
            .collect();
        assert!(!candidates.is_empty(), "no candidates in:\n{answer}");
        for candidate in candidates {
            assert_eq!(
                candidate,
                ("203.0.113.9".to_owned(), port.port()),
                "{answer}"
            );
        }
    }
}
