//! A hand-written progress bar on stderr, shown only once a run has taken more than a second.
//! It reads the wall clock, which is fine: it only decides when to draw, never what happens.

use std::io::Write;
use std::time::{Duration, Instant};

/// Draws `[#####     ] 42%` on stderr.
#[derive(Debug)]
pub struct Bar {
    started: Instant,
    last: Option<Instant>,
    enabled: bool,
}

const WIDTH: usize = 40;
const DELAY: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(200);

impl Bar {
    /// A bar that draws only if `enabled`.
    pub fn new(enabled: bool) -> Self {
        Bar {
            started: Instant::now(),
            last: None,
            enabled,
        }
    }

    /// Shows `fraction` (0..=1) done.
    pub fn update(&mut self, fraction: f64) {
        if !self.enabled || self.started.elapsed() < DELAY {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < EVERY) && fraction < 1.0 {
            return;
        }
        self.last = Some(now);
        let f = fraction.clamp(0.0, 1.0);
        let filled = (f * WIDTH as f64).round() as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:3.0}% {:.1}s",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            f * 100.0,
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    /// Ends the line if anything was drawn.
    pub fn finish(&mut self) {
        if self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}
