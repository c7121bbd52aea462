//! A node process for the benchmarks: spawned with its overlay on loopback and off mDNS,
//! killed on drop, its stdout lines awaited by prefix.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BenchError;

/// A child process, killed on drop; its stdout lines arrive on a bounded channel.
pub(super) struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Proc {
    /// Spawns `exe ARGS`. The measured nodes pull by URL; their overlay stays on loopback and
    /// off mDNS.
    pub(super) fn spawn(exe: &Path, args: &[&str]) -> Result<Proc, BenchError> {
        let overlay: &[&str] = if matches!(args.first(), Some(&("relay" | "view" | "broadcast"))) {
            &["--no-mdns", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"]
        } else {
            &[]
        };
        let mut child = Command::new(exe)
            .args(args)
            .args(overlay)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Setup("no stdout".into()))?;
        // A few lines at start-up, then silence: a small bounded channel is plenty.
        let (tx, lines) = mpsc::sync_channel(16);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { child, lines })
    }

    /// The process id.
    pub(super) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and reaps it.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (blocking, at most 10 s) for a line starting with `prefix`; returns the rest.
    pub(super) fn line_after(&mut self, prefix: &str) -> Result<String, BenchError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(_) => {
                    return Err(BenchError::Setup(format!("no line {prefix:?} within 10 s")));
                }
            }
        }
    }
}
