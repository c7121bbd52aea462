//! The WHEP endpoint against bad and hostile input, a full node and a relay without media:
//! a clear HTTP error, never a panic, never a disturbance to the child already attached.

// Helpers below the tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Node, http, http_full, media, tmp_dir};

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn bad_requests_get_clear_errors_and_a_full_node_says_retry_after() {
    let dir = tmp_dir("http");
    let video = media("test.ivf");
    let root = Node::spawn(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            "demo",
            "--video",
            video.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--max-children",
            "1",
        ],
        &[],
    );
    let addr = root.http.unwrap();

    // Unknown stream, wrong content type, not SDP at all, SDP that webrtc cannot use.
    let (code, body) = http(addr, "POST", "/whep/other", &[SDP], b"v=0\r\n");
    assert_eq!(code, 404, "{body}");
    let (code, body) = http(
        addr,
        "POST",
        "/whep/demo",
        &[("Content-Type", "text/plain")],
        b"v=0",
    );
    assert_eq!(code, 415, "{body}");
    let (code, body) = http(addr, "POST", "/whep/demo", &[SDP], b"\xff\xfe garbage");
    assert_eq!(code, 400, "{body}");
    let hostile = b"v=0\r\no=- 1 1 IN IP4 0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96\r\na=fingerprint:sha-256 zz\r\n";
    let (code, body) = http(addr, "POST", "/whep/demo", &[SDP], hostile);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("SDP"),
        "the message says what was wrong: {body}"
    );
    // Oversized body.
    let big = vec![b'a'; 200 * 1024];
    let (code, _) = http(addr, "POST", "/whep/demo", &[SDP], &big);
    assert_eq!(code, 413);
    // Unknown session.
    let (code, _) = http(addr, "DELETE", "/whep/demo/nope", &[], b"");
    assert_eq!(code, 404);

    // One real child fills the node...
    let out = dir.join("out.ivf");
    let mut viewer = Node::spawn(
        "view",
        &dir,
        &[
            "view",
            "--pull",
            &root.whep_url("demo"),
            "--record",
            out.to_str().unwrap(),
            "--frames",
            "100000",
        ],
        &[],
    );
    viewer.expect_line("recording started");
    // ...so the next one is told to come back later.
    let (code, headers, body) = http_full(addr, "POST", "/whep/demo", &[SDP], b"v=0\r\n");
    assert_eq!(code, 503, "{body}");
    assert!(header(&headers, "retry-after").is_some(), "{headers:?}");

    // None of this disturbed the node or its child.
    let s = root.status();
    assert_eq!(s["receiving"], true);
    assert_eq!(s["children"].as_array().unwrap().len(), 1, "{s}");
    assert!(s["children"][0]["packets"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn a_relay_without_its_parent_answers_503_retry_after() {
    let dir = tmp_dir("orphan");
    // Nothing listens on port 9 of 127.0.0.1 (discard, never served here).
    let relay = Node::spawn(
        "relay",
        &dir,
        &[
            "relay",
            "--stream",
            "demo",
            "--pull",
            "http://127.0.0.1:9/whep/demo",
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    let (code, headers, _) = http_full(
        relay.http.unwrap(),
        "POST",
        "/whep/demo",
        &[SDP],
        b"v=0\r\n",
    );
    assert_eq!(code, 503);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let s = relay.status();
    assert_eq!(s["role"], "relay");
    assert_eq!(s["receiving"], false);
    assert_eq!(s["parent"], "http://127.0.0.1:9/whep/demo");
}

#[test]
fn keyframe_requests_from_many_leaves_reach_the_root_at_most_twice_per_second() {
    let dir = tmp_dir("pli");
    let video = media("test.ivf");
    let root = Node::broadcast("root", &dir, &video, None, &[]);
    let relay = Node::relay("relay", &dir, &root, &[]);
    // Four leaves, each asking for a keyframe every 50 ms for 4 s.
    let mut leaves: Vec<Node> = (0..4)
        .map(|i| {
            let out = dir.join(format!("leaf{i}.ivf"));
            Node::spawn(
                &format!("leaf{i}"),
                &dir,
                &[
                    "view",
                    "--pull",
                    &relay.whep_url("demo"),
                    "--record",
                    out.to_str().unwrap(),
                    "--frames",
                    "120",
                    "--keyframe-request-every-ms",
                    "50",
                ],
                &[],
            )
        })
        .collect();
    for leaf in &mut leaves {
        assert!(
            leaf.wait_success(std::time::Duration::from_secs(30)),
            "{}",
            leaf.log_tail()
        );
    }

    let r = relay.status();
    let plis = |v: &serde_json::Value| v["plis"].as_u64().unwrap_or(0);
    let asked: u64 = r["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(plis)
        .sum::<u64>()
        + plis(&r["departed_children"]);
    let s = root.status();
    let link = &s["children"][0];
    let reached = plis(link);
    let seconds = link["age_s"].as_u64().unwrap() + 1;
    println!("leaves sent {asked} PLIs to the relay; {reached} reached the root in {seconds} s");
    assert!(
        reached <= 2 * seconds + 1,
        "{reached} PLIs in {seconds} s: {s}"
    );
    assert!(
        asked >= 3 * reached.max(1),
        "the relay merged nothing? {asked} vs {reached}"
    );
}

/// A real offer, as Chromium sends it (trimmed), mutated many ways: every answer is an HTTP
/// status, the node never falls over, and garbage on the plain RTP port is dropped.
#[test]
fn mutated_offers_and_garbage_rtp_never_take_the_node_down() {
    let dir = tmp_dir("fuzz");
    let mut root = Node::spawn(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            "demo",
            "--rtp-in",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--max-children",
            "16",
        ],
        &[],
    );
    let rtp: std::net::SocketAddr = root
        .expect_line("rtp video in listening on ")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let addr = root.http.unwrap();
    let offer = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n\
        a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
        a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n";
    // Deterministic mutations: truncations, byte flips, duplicated and dropped lines.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let lines: Vec<&str> = offer.split("\r\n").collect();
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..120 {
        let mut body: Vec<u8> = match i % 4 {
            0 => offer.as_bytes()[..(next() as usize % offer.len())].to_vec(),
            1 => {
                let mut b = offer.as_bytes().to_vec();
                for _ in 0..4 {
                    let at = next() as usize % b.len();
                    b[at] = next() as u8;
                }
                b
            }
            2 => {
                let skip = next() as usize % lines.len();
                let l: Vec<&str> = lines
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != skip)
                    .map(|(_, l)| *l)
                    .collect();
                l.join("\r\n").into_bytes()
            }
            _ => {
                let dup = next() as usize % lines.len();
                let mut l = lines.clone();
                l.insert(dup, lines[dup]);
                l.join("\r\n").into_bytes()
            }
        };
        if body.is_empty() {
            body.push(b'v');
        }
        let (code, _) = http(addr, "POST", "/whep/demo", &[SDP], &body);
        assert!(
            matches!(code, 201 | 400 | 503),
            "mutation {i} got {code}: {}",
            String::from_utf8_lossy(&body)
        );
        *codes.entry(code).or_insert(0) += 1;
    }
    println!("answers to 120 mutated offers: {codes:?}");
    assert!(codes.get(&400).is_some_and(|n| *n > 10), "{codes:?}");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500u32 {
        let len = (i as usize * 7) % 1400;
        let datagram: Vec<u8> = (0..len)
            .map(|j| (j as u32 ^ i.wrapping_mul(2654435761)) as u8)
            .collect();
        socket.send_to(&datagram, rtp).unwrap();
    }
    let s = root.status();
    assert_eq!(s["role"], "broadcast", "{s}");
}
