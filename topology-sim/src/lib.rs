//! # treecast-sim: the topology simulator
//!
//! Runs the real tree core ([`treecast_tree`]) at scale: viewers join, leave and crash in
//! virtual time, and the simulator reports how deep the tree grows against the best possible
//! depth, how fast orphans repair, how much control traffic flows and whether any invariant
//! ever breaks. It never decides where a node goes itself: placement, promotion and repair are
//! the core's, so what the simulator shows is what live nodes do.
//!
//! - [`Config`] / [`Scenario`]: one validated configuration, from flags ([`cli::Cli`]) and TOML.
//! - [`run`]: runs a configuration and returns the [`Report`] and the final tree.
//! - [`output`]: the table, DOT and SVG renderings (JSON is the report serialised).
//!
//! Fast mode applies decisions straight to one shared [`treecast_tree::View`] (see `fast.rs`);
//! the message-level mode runs one [`treecast_tree::Agent`] per node over a simulated network
//! (see `messages.rs`).
//! Everything is reproducible from the seed; the wall clock is read only for `elapsed_ms` and
//! the progress bar.

mod check;
pub mod cli;
pub mod config;
mod dist;
mod fast;
mod knowledge;
mod messages;
pub mod metrics;
pub mod output;
pub mod progress;
mod queue;

use std::time::Instant;

pub use config::{Config, ConfigError, Mode, Scenario};
pub use metrics::{Report, optimal_depth};
use treecast_tree::View;

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Every metric.
    pub report: Report,
    /// The final tree (nodes not connected to the root removed).
    pub view: View,
}

/// The most viewers the message-level mode accepts.
pub const MAX_AGENTS: u64 = 100_000;

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The message-level mode runs one agent per node: past this many it would take hours.
    #[error("--mode messages runs one Agent per node; {0} viewers are too many (at most 100000)")]
    TooManyAgents(u64),
}

/// Runs `cfg`; `progress` is called now and then with the fraction done.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(f64)) -> Result<Outcome, SimError> {
    let started = Instant::now();
    let r = match cfg.mode {
        Mode::Fast => fast::run(cfg, progress),
        Mode::Messages if cfg.viewers > MAX_AGENTS => {
            return Err(SimError::TooManyAgents(cfg.viewers));
        }
        Mode::Messages => messages::run(cfg, progress),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Outcome {
        report: metrics::report(cfg, r.tally, &r.shape, elapsed_ms),
        view: r.view,
    })
}
