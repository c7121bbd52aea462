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
        ],
        &[],
    );
    let relay = Node::spawn(
        "relay",
        &dir,
        &[
            "relay",
            "--stream",
            "demo",
            "--pull",
            &root.whep_url("demo"),
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
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
