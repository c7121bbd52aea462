//! Independent peers against treecast nodes: headless Chromium plays over WHEP (a standard
//! player: `tests/assets/whep_player.html`) and keeps decoding frames.
//!
//! Skipped, loudly, when Chromium is not installed (`scripts/install-test-deps` installs it).

// Helpers below the tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Node, media, tmp_dir};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium in its own process group, killed with its helpers on drop.
struct Chromium {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Chromium {
    fn play(whep_url: &str, dir: &Path) -> Chromium {
        let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/whep_player.html");
        let profile = dir.join("chromium-profile");
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                // Plain host candidates, not mDNS names webrtc-rs would have to resolve.
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("file://{}?whep={whep_url}", page.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("CONSOLE") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        Chromium { child, lines }
    }

    /// Waits (bounded) until the player reports at least `frames` decoded frames; returns the
    /// last stats line.
    fn wait_decoded(&self, frames: u64, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no stats)");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("Chromium did not decode {frames} frames in {timeout:?}; last: {last}");
            };
            if line.contains("ERROR") {
                panic!("player error: {line}");
            }
            if let Some(n) = field(&line, "framesDecoded=") {
                last = line.clone();
                if n >= frames {
                    return line;
                }
            }
        }
    }
}

impl Chromium {
    /// Waits (bounded) for the player's `FIRST_FRAME` line: milliseconds from the WHEP answer
    /// to the first decoded video frame.
    fn first_frame_ms(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("Chromium decoded no frame in {timeout:?}");
            };
            if line.contains("ERROR") {
                panic!("player error: {line}");
            }
            if line.contains("FIRST_FRAME") {
                return field(&line, "ms=").unwrap();
            }
        }
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn chromium_plays_through_a_relay(video: &str, test: &str) {
    if !Path::new(CHROMIUM).exists() {
        skip(&format!(
            "{CHROMIUM} not installed (run scripts/install-test-deps)"
        ));
        return;
    }
    let dir = tmp_dir(test);
    let video = media(video);
    let audio = media("test.ogg");
    let root = Node::broadcast("root", &dir, &video, Some(&audio), &[]);
    let relay = Node::relay("relay", &dir, &root, &[]);
    let browser = Chromium::play(&relay.whep_url("demo"), &dir);
    let first = browser.wait_decoded(30, Duration::from_secs(20));
    // Frames keep rising: two more seconds of video decoded.
    let later = browser.wait_decoded(
        field(&first, "framesDecoded=").unwrap() + 60,
        Duration::from_secs(10),
    );
    println!("Chromium: {later}");
    assert!(field(&later, "keyFramesDecoded=").unwrap() >= 1, "{later}");
    assert_eq!(field(&later, "frameWidth="), Some(320), "{later}");
    let s = relay.status();
    assert_eq!(s["children"].as_array().unwrap().len(), 1, "{s}");
}

/// Fast start, seen from a browser: a new Chromium viewer of a relay shows its first frame
/// sooner with fast start than without. The clip has one keyframe per 4 s (the root cannot
/// honour keyframe requests from a file), so without fast start a viewer waits 2 s on average;
/// three viewers per relay, alternating.
#[test]
fn chromium_shows_its_first_frame_sooner_with_fast_start() {
    if !Path::new(CHROMIUM).exists() || Command::new("ffmpeg").arg("-version").output().is_err() {
        skip("Chromium or ffmpeg not installed (run scripts/install-test-deps)");
        return;
    }
    let dir = tmp_dir("chromium-first-frame");
    let clip = dir.join("gop4s.ivf");
    let encoded = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=30")
        .args([
            "-t",
            "8",
            "-c:v",
            "libvpx",
            "-b:v",
            "300k",
            "-deadline",
            "realtime",
        ])
        .args([
            "-cpu-used",
            "8",
            "-g",
            "120",
            "-keyint_min",
            "120",
            "-auto-alt-ref",
            "0",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(encoded.success());
    let root = Node::broadcast("root", &dir, &clip, None, &[]);
    let relay = |name: &str, flag: &str| {
        let parent = root.whep_url("demo");
        let args = [
            "relay",
            "--stream",
            "demo",
            "--pull",
            &parent,
            "--http",
            "127.0.0.1:0",
            flag,
        ];
        Node::spawn(name, &dir, &args, &[])
    };
    let (fast, slow) = (
        relay("fast", "--fast-start"),
        relay("slow", "--no-fast-start"),
    );
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..3 {
        for (relay, times) in [(&fast, &mut with), (&slow, &mut without)] {
            let profile = dir.join(format!("{}-{round}", relay.name));
            std::fs::create_dir_all(&profile).unwrap();
            let browser = Chromium::play(&relay.whep_url("demo"), &profile);
            times.push(browser.first_frame_ms(Duration::from_secs(20)));
        }
    }
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
    println!(
        "Chromium, answer to first decoded frame: fast start {with:?} ms (mean {}), \
         without {without:?} ms (mean {})",
        mean(&with),
        mean(&without)
    );
    assert!(mean(&with) < mean(&without), "{with:?} vs {without:?}");
}

#[test]
fn chromium_plays_vp8_over_whep_from_a_relay() {
    chromium_plays_through_a_relay("test.ivf", "chromium-vp8");
}

#[test]
fn chromium_plays_h264_over_whep_from_a_relay() {
    chromium_plays_through_a_relay("test.h264", "chromium-h264");
}

/// A Python helper process (aiortc), killed on drop.
struct Script {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Script {
    fn python() -> Option<std::path::PathBuf> {
        let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        py.exists().then_some(py)
    }

    fn spawn(script: &str, args: &[&str]) -> Script {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/assets")
            .join(script);
        let mut child = Command::new(Self::python().unwrap())
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Script { child, lines }
    }

    fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => println!("script: {line}"),
                Err(_) => panic!("no line {prefix:?} from the script within {timeout:?}"),
            }
        }
    }
}

#[test]
fn aiortc_publishes_over_whip_and_plays_over_whep_through_a_relay() {
    if Script::python().is_none() {
        skip(".venv with aiortc missing (run scripts/install-test-deps)");
        return;
    }
    let dir = tmp_dir("aiortc");
    let root = Node::spawn(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            "demo",
            "--whip-token",
            "s3cret",
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    let addr = root.http.unwrap();
    let whip = format!("http://{addr}/whip/demo");
    let sdp = ("Content-Type", "application/sdp");
    let (code, _) = support::http(addr, "POST", "/whip/demo", &[sdp], b"v=0\r\n");
    assert_eq!(code, 401, "no token");
    let wrong = ("Authorization", "Bearer guess");
    let (code, _) = support::http(addr, "POST", "/whip/demo", &[sdp, wrong], b"v=0\r\n");
    assert_eq!(code, 401, "wrong token");

    let publisher = Script::spawn(
        "aiortc_whip.py",
        &[&whip, "s3cret", media("test.ivf").to_str().unwrap(), "12"],
    );
    let line = publisher.expect_line("publishing ", Duration::from_secs(20));
    let session = line["publishing ".len()..].trim().to_owned();
    let path = &session[session.find("/whip/").unwrap()..];

    // The session resource: ICE restart unsupported (422), stale ETag (412), trickle (204).
    let auth = ("Authorization", "Bearer s3cret");
    let frag = ("Content-Type", "application/trickle-ice-sdpfrag");
    let candidate = b"a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let (code, _) = support::http(
        addr,
        "PATCH",
        path,
        &[auth, frag, ("If-Match", "*")],
        candidate,
    );
    assert_eq!(code, 422);
    let (code, _) = support::http(
        addr,
        "PATCH",
        path,
        &[auth, frag, ("If-Match", "\"x\"")],
        candidate,
    );
    assert_eq!(code, 412);
    let (code, body) = support::http(addr, "PATCH", path, &[auth, frag], candidate);
    assert_eq!(code, 204, "{body}");

    // A relay below the root, and two independent viewers below the relay.
    let relay = Node::relay("relay", &dir, &root, &[]);
    let viewer = Script::spawn("aiortc_whep.py", &[&relay.whep_url("demo"), "60", "20"]);
    let decoded = viewer.expect_line("decoded ", Duration::from_secs(30));
    println!("aiortc viewer: {decoded}");
    assert!(decoded.ends_with("320x240"), "{decoded}");

    let out = dir.join("out.ivf");
    let mut recorder = Node::spawn(
        "view",
        &dir,
        &[
            "view",
            "--pull",
            &relay.whep_url("demo"),
            "--record",
            out.to_str().unwrap(),
            "--frames",
            "60",
        ],
        &[],
    );
    assert!(
        recorder.wait_success(Duration::from_secs(30)),
        "{}",
        recorder.log_tail()
    );
    let frames = support::ivf_frames(&out);
    assert_eq!(frames.len(), 60);
    assert_eq!(frames[0][0] & 1, 0, "starts at a keyframe");
    let s = root.status();
    assert_eq!(s["role"], "broadcast");
    assert!(s["parent"].is_null());
    assert_eq!(s["tracks"][0]["codec"], "video/VP8", "{s}");
}

/// `--udp-port`: independent players (aiortc and Chromium, whichever is installed) play over
/// WHEP from a relay whose media all goes through one UDP port, at the same time, and the
/// relay counts them on that port.
#[test]
fn independent_players_play_from_a_relay_on_one_udp_port() {
    let chromium = Path::new(CHROMIUM).exists();
    let aiortc = Script::python().is_some();
    if !chromium || !aiortc {
        skip("Chromium or the .venv with aiortc missing (run scripts/install-test-deps)");
        if !chromium && !aiortc {
            return;
        }
    }
    let dir = tmp_dir("interop-udp-port");
    let (video, audio) = (media("test.ivf"), media("test.ogg"));
    let (video, audio) = (video.to_str().unwrap(), audio.to_str().unwrap());
    let one_port = ["--udp-port", "0"];
    let mut args = vec![
        "broadcast",
        "--stream",
        "demo",
        "--video",
        video,
        "--audio",
        audio,
    ];
    args.extend(["--http", "127.0.0.1:0"]);
    args.extend(one_port);
    let root = Node::spawn("root", &dir, &args, &[]);
    let pull = root.whep_url("demo");
    let mut args = vec![
        "relay",
        "--stream",
        "demo",
        "--pull",
        &pull,
        "--http",
        "127.0.0.1:0",
    ];
    args.extend(one_port);
    let mut relay = Node::spawn("relay", &dir, &args, &[]);
    let line = relay.expect_line("media udp listening on ");
    let port = &line["media udp listening on ".len()..];
    let whep = relay.whep_url("demo");

    let viewer = aiortc.then(|| Script::spawn("aiortc_whep.py", &[&whep, "300", "40"]));
    let browser = chromium.then(|| Chromium::play(&whep, &dir));
    // Both players on the relay's port at once (aiortc decodes for 10 s, so it is still there).
    let players = usize::from(chromium) + usize::from(aiortc);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = relay.status();
        if s["children"].as_array().map(Vec::len) == Some(players)
            && s["udp_port"]["connections"] == players + 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "players not on the port: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(browser) = &browser {
        let first = browser.wait_decoded(30, Duration::from_secs(20));
        let later = browser.wait_decoded(
            field(&first, "framesDecoded=").unwrap() + 60,
            Duration::from_secs(10),
        );
        println!("Chromium via {port}: {later}");
        assert!(field(&later, "keyFramesDecoded=").unwrap() >= 1, "{later}");
    }
    if let Some(viewer) = &viewer {
        let decoded = viewer.expect_line("decoded ", Duration::from_secs(40));
        println!("aiortc via {port}: {decoded}");
        assert!(decoded.ends_with("320x240"), "{decoded}");
    }
}

#[test]
fn ffmpeg_plain_rtp_into_the_root_arrives_byte_identical_through_a_relay() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        skip("ffmpeg not installed (run scripts/install-test-deps)");
        return;
    }
    let dir = tmp_dir("rtp-in");
    let mut root = Node::spawn(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            "demo",
            "--rtp-in",
            "127.0.0.1:0",
            "--rtp-codec",
            "vp8",
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    // The RTP line is printed before the HTTP one, so it is already in the channel.
    let line = root.expect_line("rtp video in listening on ");
    let rtp_addr = line.rsplit(' ').next().unwrap().to_owned();
    let source = media("test.ivf");
    let _ffmpeg = Script {
        child: Command::new("ffmpeg")
            .args(["-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(&source)
            .args(["-c:v", "copy", "-f", "rtp"])
            .arg(format!("rtp://{rtp_addr}?pkt_size=1200"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg"),
        lines: mpsc::channel().1,
    };
    let relay = Node::relay("relay", &dir, &root, &[]);
    let out = dir.join("out.ivf");
    let mut viewer = Node::spawn(
        "view",
        &dir,
        &[
            "view",
            "--pull",
            &relay.whep_url("demo"),
            "--record",
            out.to_str().unwrap(),
            "--frames",
            "90",
        ],
        &[],
    );
    assert!(
        viewer.wait_success(Duration::from_secs(30)),
        "{}",
        viewer.log_tail()
    );
    let recorded = support::ivf_frames(&out);
    assert_eq!(recorded.len(), 90);
    support::assert_contiguous_run(&support::ivf_frames(&source), &recorded);
}

/// RFC 9725 status codes on the WHIP endpoint and the session resource, with a real publisher
/// (aiortc) holding the session: section 4.2 (POST: 201 + Location), 4.3.1 (PATCH: 204 for
/// trickle; 412 on a stale ETag; 422 for an ICE restart, as a session that supports trickle
/// but not restarts must answer), 4.3.3 (a restart is `If-Match: "*"` or a new ice-ufrag; a
/// refused one leaves the session running), 4.5 (DELETE: 200), 4.8 (401 without the bearer
/// token).
#[test]
fn whip_answers_with_the_status_codes_of_rfc_9725() {
    if Script::python().is_none() {
        skip(".venv with aiortc missing (run scripts/install-test-deps)");
        return;
    }
    let dir = tmp_dir("whip-codes");
    let root = Node::spawn(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            "demo",
            "--whip-token",
            "s3cret",
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    let addr = root.http.unwrap();
    let auth = ("Authorization", "Bearer s3cret");
    let sdp = ("Content-Type", "application/sdp");
    // An offer that sends video: enough to reach the publisher check.
    let offer = b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s v\r\na=sendonly\r\n";
    let post =
        |headers: &[(&str, &str)]| support::http(addr, "POST", "/whip/demo", headers, offer).0;
    assert_eq!(
        post(&[auth, ("Content-Type", "text/plain")]),
        415,
        "no SDP type"
    );
    assert_eq!(post(&[sdp]), 401, "no token");
    assert_eq!(
        post(&[sdp, ("Authorization", "Bearer s3cre")]),
        401,
        "wrong token"
    );
    assert_eq!(
        post(&[sdp, ("Authorization", "Basic s3cret")]),
        401,
        "not a bearer token"
    );

    let publisher = Script::spawn(
        "aiortc_whip.py",
        &[
            &format!("http://{addr}/whip/demo"),
            "s3cret",
            media("test.ivf").to_str().unwrap(),
            "60",
        ],
    );
    let created = publisher.expect_line("created ", Duration::from_secs(20));
    assert!(
        created.starts_with("created 201 content-type=application/sdp etag=\"")
            && created.ends_with(" accept-patch=application/trickle-ice-sdpfrag"),
        "{created}"
    );
    let etag = created
        .split("etag=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let ufrag =
        publisher.expect_line("ufrag ", Duration::from_secs(20))["ufrag ".len()..].to_owned();
    let line = publisher.expect_line("publishing ", Duration::from_secs(20));
    let session = line["publishing ".len()..].trim().to_owned();
    let path = &session[session.find("/whip/").unwrap()..];
    assert_eq!(post(&[sdp, auth]), 409, "one publisher at a time");

    let frag = ("Content-Type", "application/trickle-ice-sdpfrag");
    let candidate =
        b"a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let patch = |path: &str, headers: &[(&str, &str)]| {
        support::http(addr, "PATCH", path, headers, candidate)
    };
    assert_eq!(patch(path, &[frag]).0, 401, "PATCH without token");
    assert_eq!(patch(path, &[frag, ("Authorization", "Bearer x")]).0, 401);
    assert_eq!(patch(path, &[auth, sdp]).0, 415, "PATCH with another type");
    let (code, body) = patch(path, &[auth, frag, ("If-Match", "*")]);
    assert_eq!(code, 422, "ICE restart is not supported: {body}");
    // A real restart request (RFC 9725 section 4.3.3): new ice-ufrag and ice-pwd and new
    // candidates, If-Match "*". Refused with 422 (section 4.3.1); and a new ufrag with the
    // session's ETag is a restart too. The session and its ICE session stay as they were.
    let restart = b"a=ice-ufrag:N3wU\r\na=ice-pwd:n3wpassw0rdn3wpassw0rd00\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let (code, body) = support::http(
        addr,
        "PATCH",
        path,
        &[auth, frag, ("If-Match", "*")],
        restart,
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("restart"), "{body}");
    let (code, body) = support::http(
        addr,
        "PATCH",
        path,
        &[auth, frag, ("If-Match", &etag)],
        restart,
    );
    assert_eq!(code, 422, "a new ufrag is a restart: {body}");
    let same =
        format!("a=ice-ufrag:{ufrag}\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n");
    let (code, body) = support::http(
        addr,
        "PATCH",
        path,
        &[auth, frag, ("If-Match", &etag)],
        same.as_bytes(),
    );
    assert_eq!(code, 204, "trickle in the current ICE session: {body}");
    assert_eq!(patch(path, &[auth, frag, ("If-Match", "\"stale\"")]).0, 412);
    let (code, body) = patch(path, &[auth, frag, ("If-Match", &etag)]);
    assert_eq!(code, 204, "trickle with the session's ETag: {body}");
    // The refused restarts ended nothing (section 4.3.3): the publisher's media still flows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while root.status()["receiving"] != true {
        assert!(
            Instant::now() < deadline,
            "the root stopped receiving: {}",
            root.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(patch("/whip/demo/nosuchsession", &[auth, frag]).0, 404);

    let delete =
        |path: &str, headers: &[(&str, &str)]| support::http(addr, "DELETE", path, headers, b"").0;
    assert_eq!(delete(path, &[]), 401, "DELETE without token");
    assert_eq!(delete("/whip/demo/nosuchsession", &[auth]), 404);
    assert_eq!(delete(path, &[auth]), 200, "the publisher ends its session");
    assert_eq!(delete(path, &[auth]), 404, "the session is gone");
    assert_eq!(
        patch(path, &[auth, frag]).0,
        404,
        "no trickle into an ended session"
    );
}

#[test]
fn ffmpeg_writes_an_sdp_file_and_the_root_takes_codec_payload_types_and_ports_from_it() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        skip("ffmpeg not installed (run scripts/install-test-deps)");
        return;
    }
    let dir = tmp_dir("rtp-in-sdp");
    // Two free ports for ffmpeg to send to (it keeps sending while nobody listens yet).
    let free_port = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (video_port, audio_port) = (free_port(), free_port());
    let sdp = dir.join("in.sdp");
    let (video, audio) = (media("test.h264"), media("test.ogg"));
    // H.264 on purpose: --rtp-codec defaults to VP8, so the codec must come from the file.
    // ffmpeg cannot loop a raw Annex-B file ("Seek to start failed"): remux it into Matroska
    // first (stream copy: the NAL units stay the same).
    let mkv = dir.join("test.mkv");
    let remux = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-framerate", "30", "-i"])
        .arg(&video)
        .args(["-c", "copy"])
        .arg(&mkv)
        .status()
        .unwrap();
    assert!(remux.success());
    let _ffmpeg = Script {
        child: Command::new("ffmpeg")
            .args(["-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(&mkv)
            .args(["-re", "-stream_loop", "-1", "-i"])
            .arg(&audio)
            .args(["-map", "0:v", "-c:v", "copy", "-f", "rtp"])
            .arg(format!("rtp://127.0.0.1:{video_port}?pkt_size=1200"))
            .args(["-map", "1:a", "-c:a", "copy", "-f", "rtp"])
            .arg(format!("rtp://127.0.0.1:{audio_port}"))
            .arg("-sdp_file")
            .arg(&sdp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg"),
        lines: mpsc::channel().1,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&sdp).map_or(true, |t| !t.contains("a=rtpmap:97")) {
        assert!(Instant::now() < deadline, "ffmpeg wrote no SDP file");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut root = Node::spawn(
        "root",
        &dir,
        &[
            "broadcast",
            "--stream",
            "demo",
            "--rtp-in-sdp",
            sdp.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    let line = root.expect_line("rtp video in listening on ");
    assert!(line.ends_with(&format!("127.0.0.1:{video_port}")), "{line}");
    let line = root.expect_line("rtp audio in listening on ");
    assert!(line.ends_with(&format!("127.0.0.1:{audio_port}")), "{line}");
    let relay = Node::relay("relay", &dir, &root, &[]);
    let (video_out, audio_out) = (dir.join("out.h264"), dir.join("out.ogg"));
    let mut viewer = Node::spawn(
        "view",
        &dir,
        &[
            "view",
            "--pull",
            &relay.whep_url("demo"),
            "--record",
            video_out.to_str().unwrap(),
            "--record-audio",
            audio_out.to_str().unwrap(),
            "--frames",
            "90",
        ],
        &[],
    );
    assert!(
        viewer.wait_success(Duration::from_secs(30)),
        "{}",
        viewer.log_tail()
    );
    let s = root.status();
    assert_eq!(s["tracks"][0]["codec"], "video/H264", "{s}");
    assert_eq!(s["tracks"][1]["codec"], "audio/opus", "{s}");

    // H.264 fmtp carried over: the file's profile-level-id, packetization-mode and parameter
    // sets reach the relay (the root's answer carried them; the relay's track is what it was
    // told), and the relay's answer to a new child names them on the one payload type whose
    // profile matches among those the child offered.
    let text = std::fs::read_to_string(&sdp).unwrap();
    let file_fmtp = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=fmtp:96 "))
        .expect("ffmpeg writes an fmtp line for H.264");
    let params = |fmtp: &str| -> Vec<String> {
        let mut p: Vec<String> = fmtp
            .split(';')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        p.sort();
        p
    };
    let wanted = params(file_fmtp);
    for key in [
        "profile-level-id=",
        "packetization-mode=1",
        "sprop-parameter-sets=",
    ] {
        assert!(wanted.iter().any(|p| p.starts_with(key)), "{file_fmtp}");
    }
    assert_eq!(
        params(s["tracks"][0]["fmtp"].as_str().unwrap()),
        wanted,
        "{s}"
    );
    let r = relay.status();
    assert_eq!(
        params(r["tracks"][0]["fmtp"].as_str().unwrap()),
        wanted,
        "{r}"
    );
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 100 102 104 106\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
        a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:100 H264/90000\r\na=rtcp-fb:100 nack\r\n\
        a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n\
        a=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
        a=rtpmap:104 H264/90000\r\na=rtcp-fb:104 nack\r\na=rtcp-fb:104 nack pli\r\n\
        a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:106 H264/90000\r\n\
        a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n";
    let (code, answer) = support::http(
        relay.http.unwrap(),
        "POST",
        "/whep/demo",
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(code, 201, "{answer}");
    let lines: Vec<&str> = answer.lines().collect();
    assert!(
        lines.contains(&"m=video 9 UDP/TLS/RTP/SAVPF 104"),
        "only the constrained-baseline, mode-1 payload type: {answer}"
    );
    let answered = lines
        .iter()
        .find_map(|l| l.strip_prefix("a=fmtp:104 "))
        .unwrap_or_else(|| panic!("no fmtp for 104: {answer}"));
    assert_eq!(params(answered), wanted, "{answer}");
    assert!(lines.contains(&"a=rtcp-fb:104 nack pli"), "{answer}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("a=rtpmap:96") || l.starts_with("a=fmtp:102")),
        "{answer}"
    );

    let recorded = support::annexb_access_units(&video_out);
    assert_eq!(recorded.len(), 90);
    support::assert_contiguous_run(&support::annexb_access_units(&video), &recorded);
    let audio = std::fs::read(&audio_out).unwrap();
    let pages = audio.windows(4).filter(|w| w == b"OggS").count();
    assert!(pages > 50, "only {pages} Ogg pages of audio");
}

#[test]
fn a_hostile_sdp_file_stops_the_root_with_a_clear_error() {
    let dir = tmp_dir("rtp-in-sdp-bad");
    let sdp = dir.join("bad.sdp");
    std::fs::write(
        &sdp,
        "v=0\nc=IN IP4 127.0.0.1\nm=video 5004 RTP/SAVP 96\na=rtpmap:96 VP8/90000\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_treecast"))
        .args(["broadcast", "--stream", "demo", "--rtp-in-sdp"])
        .arg(&sdp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.sdp: line 3: transport \"RTP/SAVP\" not supported"),
        "{err}"
    );
}

/// Skips a test whose independent peer is not installed, loudly; in CI (`CI` set) a missing
/// peer is a failure, so a broken install step cannot pass as a skip.
fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is missing a test dependency: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
}
