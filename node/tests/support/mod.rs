//! Helpers for the end-to-end tests: spawn real `treecast` processes (killed on drop), read
//! the lines they print, fetch `/api/status`, compare recorded media with the source.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A node in [`Node::tree_map`]: (parent, children, one numeric field).
pub type TreeEntry = (Option<String>, Vec<String>, u64);

/// Serialises the tests of one test binary that each start many processes: hold the guard for
/// the whole test (a panicking test does not poison it for the others).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long any one process may take to reach an expected line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `treecast` process; killed when dropped.
pub struct Node {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for another one, kept for a later `expect_line`.
    backlog: Vec<String>,
    pub http: Option<SocketAddr>,
    /// The overlay address (`MULTIADDR/p2p/PEER-ID`) of a node that printed one.
    pub p2p: Option<String>,
    stderr_path: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn media(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/media")
        .join(name)
}

pub fn tmp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("treecast-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Node {
    /// Spawns `treecast ARGS`; when `serves_http`, waits for its bound address.
    pub fn spawn(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        let stderr_path = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_treecast"));
        // Every node runs the gossip overlay: on loopback only, and without mDNS so that
        // tests running at the same time never see each other's nodes.
        let node_command = matches!(args.first(), Some(&("broadcast" | "relay" | "view")));
        let overlay = node_command && !args.contains(&"--p2p-listen");
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env("RUST_LOG", "info,webrtc=warn,rtc=error,treecast_node=debug");
        if overlay {
            cmd.args(["--no-mdns", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn treecast");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let serves_http = args.contains(&"--http");
        let mut node = Node {
            name: name.to_owned(),
            child,
            lines,
            backlog: Vec::new(),
            http: None,
            p2p: None,
            stderr_path,
        };
        if node_command {
            let line = node.expect_line("p2p listening on ");
            node.p2p = Some(line["p2p listening on ".len()..].to_owned());
        }
        if serves_http {
            let line = node.expect_line("http listening on ");
            node.http = Some(line["http listening on ".len()..].parse().unwrap());
        }
        node
    }

    /// `treecast broadcast --stream demo --video VIDEO [--audio AUDIO] --http 127.0.0.1:0`.
    pub fn broadcast(
        name: &str,
        dir: &Path,
        video: &Path,
        audio: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Node {
        let (video, audio) = (video.to_str().unwrap(), audio.map(|a| a.to_str().unwrap()));
        let mut args = vec!["broadcast", "--stream", "demo", "--video", video];
        if let Some(audio) = audio {
            args.extend(["--audio", audio]);
        }
        args.extend(["--http", "127.0.0.1:0"]);
        Node::spawn(name, dir, &args, env)
    }

    /// `treecast relay --stream demo --pull PARENT --http 127.0.0.1:0`.
    pub fn relay(name: &str, dir: &Path, parent: &Node, env: &[(&str, &str)]) -> Node {
        let pull = parent.whep_url("demo");
        let args = [
            "relay",
            "--stream",
            "demo",
            "--pull",
            &pull,
            "--http",
            "127.0.0.1:0",
        ];
        Node::spawn(name, dir, &args, env)
    }

    /// `treecast relay --stream demo --bootstrap ADDR --http 127.0.0.1:0 [EXTRA]`: a relay that
    /// finds its place in the gossiped tree.
    pub fn tree_relay(name: &str, dir: &Path, bootstrap: &str, extra: &[&str]) -> Node {
        let mut args = vec![
            "relay",
            "--stream",
            "demo",
            "--bootstrap",
            bootstrap,
            "--http",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        Node::spawn(name, dir, &args, &[])
    }

    /// The gossiped tree as this node sees it (`GET /api/streams/demo/tree`).
    pub fn tree(&self) -> serde_json::Value {
        let (code, body) = http(
            self.http.unwrap(),
            "GET",
            "/api/streams/demo/tree",
            &[],
            b"",
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The attached nodes of [`Node::tree`]: id -> (parent, children, the number under
    /// `field`, such as "depth" or "capacity").
    pub fn tree_map(&self, field: &str) -> std::collections::BTreeMap<String, TreeEntry> {
        self.tree()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let children = n["children"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect();
                (
                    n["id"].as_str().unwrap().to_owned(),
                    (
                        n["parent"].as_str().map(str::to_owned),
                        children,
                        n[field].as_u64().unwrap(),
                    ),
                )
            })
            .collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or a power cut would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for a stdout line starting with `prefix`.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        if let Some(i) = self.backlog.iter().position(|l| l.starts_with(prefix)) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => self.backlog.push(line),
                Err(_) => panic!(
                    "{}: no line {prefix:?} within {LINE_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                ),
            }
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the process to exit and returns whether it succeeded.
    pub fn wait_success(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not exit within {timeout:?}; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    pub fn whep_url(&self, stream: &str) -> String {
        format!("http://{}/whep/{stream}", self.http.unwrap())
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http(self.http.unwrap(), "GET", "/api/status", &[], b"");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A minimal HTTP/1.0 request; returns the status code and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let (code, _, body) = http_full(addr, method, path, headers, body);
    (code, body)
}

/// Like [`http`], also returning the response headers (lowercased names).
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (code, headers, body.to_owned())
}

/// The frames of an IVF file.
pub fn ivf_frames(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    assert!(
        data.len() >= 32 && &data[..4] == b"DKIF",
        "{path:?} is not IVF"
    );
    let mut i = 32;
    let mut frames = Vec::new();
    while i + 12 <= data.len() {
        let n = u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as usize;
        frames.push(data[i + 12..i + 12 + n].to_vec());
        i += 12 + n;
    }
    frames
}

/// The NAL units of an Annex-B file, grouped into access units (pictures), without start
/// codes; SEI, AUD and filler are left out (WebRTC senders may drop them).
pub fn annexb_access_units(path: &Path) -> Vec<Vec<Vec<u8>>> {
    let data = std::fs::read(path).unwrap();
    let mut nals = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            if let Some(s) = start {
                nals.push(trim_zeros(&data[s..i]).to_vec());
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        nals.push(trim_zeros(&data[s..]).to_vec());
    }
    // Access units as H.264 section 7.4.1.2.3 delimits them: a new one at a parameter set or
    // AUD after a slice, or at a slice with first_mb_in_slice == 0 after a slice.
    let mut aus = Vec::new();
    let mut au: Vec<Vec<u8>> = Vec::new();
    let mut au_has_slice = false;
    for nal in nals {
        let Some(&h) = nal.first() else { continue };
        let t = h & 0x1f;
        let is_slice = matches!(t, 1 | 5);
        let first_slice = is_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if au_has_slice && (matches!(t, 6..=9) || first_slice) {
            aus.push(std::mem::take(&mut au));
            au_has_slice = false;
        }
        au_has_slice |= is_slice;
        if !matches!(t, 6 | 9 | 12) {
            au.push(nal);
        }
    }
    if au_has_slice {
        aus.push(au);
    }
    aus
}

fn trim_zeros(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && b[end - 1] == 0 {
        end -= 1;
    }
    &b[..end]
}

/// Asserts that `recorded` is a contiguous run of the looped `source`, starting at a keyframe:
/// byte-identical, none missing. Returns the index in the source where it started.
pub fn assert_contiguous_run<T: PartialEq + std::fmt::Debug>(
    source: &[T],
    recorded: &[T],
) -> usize {
    assert!(!recorded.is_empty(), "nothing recorded");
    let start = source
        .iter()
        .position(|f| *f == recorded[0])
        .expect("first recorded frame is not a source frame");
    for (j, frame) in recorded.iter().enumerate() {
        let expected = &source[(start + j) % source.len()];
        assert!(
            frame == expected,
            "recorded frame {j} differs from source frame {} (missing or corrupt)",
            (start + j) % source.len()
        );
    }
    start
}
