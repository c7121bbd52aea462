//! `treecast bench --join N`: how long a new viewer waits for its first decodable frame, with
//! and without fast start, side by side in one run.
//!
//! A root plays a video file (its keyframe interval is the file's: the root cannot honour a
//! keyframe request, as with any file or plain RTP source). Two relays pull from it, one with
//! `--fast-start`, one without (`--no-fast-start`). Then `N` viewers join one after another,
//! each a real `treecast view --frames 1` process, alternating between the relays, each after
//! a pause drawn from a seeded generator (uniform over one second, so joins fall at every phase
//! of the GOP). A viewer's time to first frame runs from its spawn to its `recording started`
//! line: the first keyframe written whole, i.e. the first frame a decoder can show. Process
//! start, WHEP and ICE/DTLS take the same time on both sides; the difference is fast start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use treecast_media::rng::SplitMix64;

use super::BenchError;
use super::proc::Proc;

/// Settings of the join benchmark.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Viewers per relay.
    pub viewers: u32,
    /// The root's video file (`.ivf` or `.h264`).
    pub video: PathBuf,
    /// Seed of the pauses between joins.
    pub seed: u64,
}

/// Runs the join benchmark and prints the report.
pub fn run(cfg: &JoinConfig) -> Result<(), BenchError> {
    if !cfg.video.exists() {
        return Err(BenchError::Setup(format!(
            "{} not found (give --video FILE; the clips are in examples/media)",
            cfg.video.display()
        )));
    }
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("treecast-bench-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let video = cfg.video.to_string_lossy().into_owned();

    let mut root = Proc::spawn(
        &exe,
        &[
            "broadcast",
            "--stream",
            "bench",
            "--video",
            &video,
            "--http",
            "127.0.0.1:0",
        ],
    )?;
    let root_url = format!(
        "http://{}/whep/bench",
        root.line_after("http listening on ")?
    );
    let relay = |fast: &str| -> Result<(Proc, String), BenchError> {
        let mut p = Proc::spawn(
            &exe,
            &[
                "relay",
                "--stream",
                "bench",
                "--pull",
                &root_url,
                "--http",
                "127.0.0.1:0",
                fast,
            ],
        )?;
        let url = format!("http://{}/whep/bench", p.line_after("http listening on ")?);
        Ok((p, url))
    };
    let (_fast_relay, fast_url) = relay("--fast-start")?;
    let (_slow_relay, slow_url) = relay("--no-fast-start")?;
    // Let both relays receive a few GOPs.
    std::thread::sleep(Duration::from_secs(3));

    eprintln!(
        "bench --join: {} viewers per relay, {}, seed {}",
        cfg.viewers, video, cfg.seed
    );
    let mut rng = SplitMix64::new(cfg.seed);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..cfg.viewers * 2 {
        let pause = Duration::from_micros(rng.up_to(1_000_000));
        std::thread::sleep(pause);
        let (url, out) = if i % 2 == 0 {
            (&fast_url, &mut with)
        } else {
            (&slow_url, &mut without)
        };
        let t = first_frame(&exe, url, &dir.join("view.ivf"))?;
        eprint!(".");
        out.push(t);
    }
    eprintln!();
    root.kill();
    let _ = std::fs::remove_dir_all(&dir);

    let (a, b) = (Summary::of(with), Summary::of(without));
    println!("time to first decodable frame for a new viewer, one relay hop, ms");
    println!(
        "{:<16} {:>6} {:>6} {:>6} {:>6}",
        "", "p50", "p90", "max", "mean"
    );
    for (name, s) in [("fast start", a), ("no fast start", b)] {
        println!(
            "{name:<16} {:>6} {:>6} {:>6} {:>6}",
            s.p50, s.p90, s.max, s.mean
        );
    }
    Ok(())
}

/// Spawns one viewer of `url` and returns the time until its first frame is written.
fn first_frame(exe: &Path, url: &str, out: &Path) -> Result<Duration, BenchError> {
    let start = Instant::now();
    let mut viewer = Proc::spawn(
        exe,
        &[
            "view",
            "--pull",
            url,
            "--record",
            &out.to_string_lossy(),
            "--frames",
            "1",
        ],
    )?;
    viewer.line_after("recording started")?;
    let elapsed = start.elapsed();
    viewer.kill();
    Ok(elapsed)
}

/// Percentiles of the measured times, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    p50: u128,
    p90: u128,
    max: u128,
    mean: u128,
}

impl Summary {
    fn of(mut times: Vec<Duration>) -> Summary {
        times.sort_unstable();
        let ms = |d: Option<&Duration>| d.map_or(0, Duration::as_millis);
        let at = |q: usize| ms(times.get((times.len() * q / 100).min(times.len().max(1) - 1)));
        let total: u128 = times.iter().map(Duration::as_millis).sum();
        Summary {
            p50: at(50),
            p90: at(90),
            max: ms(times.last()),
            mean: total / times.len().max(1) as u128,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let s = Summary::of((1..=10).map(Duration::from_millis).collect());
        assert_eq!((s.p50, s.p90, s.max, s.mean), (6, 10, 10, 5));
        let empty = Summary::of(Vec::new());
        assert_eq!((empty.p50, empty.max, empty.mean), (0, 0, 0));
    }
}
