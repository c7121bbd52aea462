//! End-to-end: real `treecast` processes on 127.0.0.1, real WebRTC between them.
//! broadcast -> relay -> relay -> relay -> view --record; the recorded frames must be the
//! source frames, byte for byte, none missing after the first keyframe.

// Helpers below the tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Node, annexb_access_units, assert_contiguous_run, ivf_frames, media, tmp_dir};

const STREAM: &str = "demo";
const FRAMES: &str = "90";

/// Starts a root playing `video` (+ `audio`) and three chained relays; returns them root first.
fn chain(dir: &Path, video: &str, audio: &str, env: &[(&str, &str)]) -> Vec<Node> {
    let video = media(video);
    let audio = media(audio);
    let root = Node::spawn(
        "root",
        dir,
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
        ],
        env,
    );
    let mut nodes = vec![root];
    for i in 1..=3 {
        let parent = nodes.last().unwrap().whep_url(STREAM);
        let relay = Node::spawn(
            &format!("relay{i}"),
            dir,
            &[
                "relay",
                "--stream",
                STREAM,
                "--pull",
                &parent,
                "--http",
                "127.0.0.1:0",
            ],
            env,
        );
        nodes.push(relay);
    }
    nodes
}

fn view(
    dir: &Path,
    parent: &Node,
    video_out: &Path,
    audio_out: &Path,
    env: &[(&str, &str)],
) -> Node {
    Node::spawn(
        "view",
        dir,
        &[
            "view",
            "--pull",
            &parent.whep_url(STREAM),
            "--record",
            video_out.to_str().unwrap(),
            "--record-audio",
            audio_out.to_str().unwrap(),
            "--frames",
            FRAMES,
        ],
        env,
    )
}

/// The status of every node of a running chain, as the issue specifies it.
fn assert_chain_status(nodes: &[Node]) {
    for (i, node) in nodes.iter().enumerate() {
        let s = node.status();
        let name = &node.name;
        assert_eq!(s["receiving"], true, "{name}: {s}");
        assert!(
            s["node_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{name}: {s}"
        );
        if i == 0 {
            assert_eq!(s["role"], "broadcast", "{s}");
            assert!(s["parent"].is_null(), "root has no parent: {s}");
        } else {
            assert_eq!(s["role"], "relay", "{s}");
            assert_eq!(s["parent"], nodes[i - 1].whep_url(STREAM), "{s}");
        }
        let children = s["children"].as_array().expect("children array");
        assert_eq!(children.len(), 1, "{name} feeds exactly one child: {s}");
        let c = &children[0];
        assert!(c["packets"].as_u64().unwrap() > 0, "{name}: {s}");
        for key in ["bitrate_bps", "loss", "nacks", "plis"] {
            assert!(c.get(key).is_some(), "{name}: child lacks {key}: {s}");
        }
        assert!(c.get("rtt_ms").is_some(), "{name}: {s}");
    }
}

fn ogg_pages(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap();
    data.windows(4).filter(|w| w == b"OggS").count()
}

#[test]
fn vp8_and_opus_through_three_relays_arrive_byte_identical() {
    let dir = tmp_dir("vp8");
    let nodes = chain(&dir, "test.ivf", "test.ogg", &[]);
    let (video_out, audio_out) = (dir.join("out.ivf"), dir.join("out.ogg"));
    let mut viewer = view(&dir, nodes.last().unwrap(), &video_out, &audio_out, &[]);
    viewer.expect_line("recording started");
    assert_chain_status(&nodes);
    assert!(
        viewer.wait_success(Duration::from_secs(30)),
        "{}",
        viewer.log_tail()
    );

    let source = ivf_frames(&media("test.ivf"));
    let recorded = ivf_frames(&video_out);
    assert_eq!(recorded.len(), 90);
    let start = assert_contiguous_run(&source, &recorded);
    assert_eq!(source[start][0] & 1, 0, "recording starts at a keyframe");
    // 90 frames are 3 s: about 150 pages of 20 ms Opus.
    let pages = ogg_pages(&audio_out);
    assert!(pages > 50, "only {pages} Ogg pages of audio");
}

#[test]
fn h264_and_opus_through_three_relays_arrive_byte_identical() {
    let dir = tmp_dir("h264");
    let nodes = chain(&dir, "test.h264", "test.ogg", &[]);
    let (video_out, audio_out) = (dir.join("out.h264"), dir.join("out.ogg"));
    let mut viewer = view(&dir, nodes.last().unwrap(), &video_out, &audio_out, &[]);
    viewer.expect_line("recording started");
    assert_chain_status(&nodes);
    assert!(
        viewer.wait_success(Duration::from_secs(30)),
        "{}",
        viewer.log_tail()
    );

    let source = annexb_access_units(&media("test.h264"));
    let recorded = annexb_access_units(&video_out);
    assert_eq!(recorded.len(), 90);
    let start = assert_contiguous_run(&source, &recorded);
    assert!(
        source[start].iter().any(|nal| nal[0] & 0x1f == 5),
        "recording starts at an IDR"
    );
    let pages = ogg_pages(&audio_out);
    assert!(pages > 50, "only {pages} Ogg pages of audio");
}
