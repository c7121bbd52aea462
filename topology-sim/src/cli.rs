//! Command-line flags. Each maps onto a [`Scenario`] field of the same name, so flags and TOML
//! scenario files say the same things; flags win over the file.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::{
    CapacityMix, CheckPolicy, Churn, ConfigError, CrashSelect, CrashSpec, LeaveKind, Mode,
    Scenario, SessionDist,
};

/// What to print on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A readable table.
    #[default]
    Table,
    /// One JSON object with every metric.
    Json,
    /// The final tree as a Graphviz digraph (edges parent -> child).
    Dot,
}

/// Simulate a treecast broadcast tree with the real tree core.
///
/// Viewers join a tree in which every node forwards to at most four children; the simulator
/// runs treecast-tree's placement, promotion and repair and reports depth against the optimum,
/// repair times, control traffic and invariant violations. Everything is reproducible from
/// --seed. Settings can also come from a TOML scenario file (--scenario); flags override it.
#[derive(Debug, Parser)]
#[command(name = "treecast-sim", version, about, long_about = None)]
#[command(
    after_help = "Example: treecast-sim --viewers 100000 --seed 1 --format json\n\
    See topology-sim/README.md and topology-sim/scenarios/ for scenario files."
)]
pub struct Cli {
    /// A TOML scenario file with the same settings as these flags (flags win).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// fast: one shared view, decisions applied directly (a million nodes);
    /// messages: every node runs its own Agent over a simulated network.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// Viewers that join besides the broadcaster [default: 1000].
    #[arg(long, short = 'n', value_name = "N")]
    pub viewers: Option<u64>,

    /// Joins per second (Poisson arrivals) [default: everyone at time 0].
    #[arg(long, value_name = "PER_SECOND")]
    pub join_rate: Option<f64>,

    /// Virtual seconds to simulate [default: time for everyone to arrive, plus 60].
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Seed of every random choice [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Child slots and the fraction of viewers having them
    /// [default: 4:0.25,2:0.35,1:0.2,0:0.2].
    #[arg(long, value_name = "CAP:FRACTION,...")]
    pub capacity_mix: Option<CapacityMix>,

    /// Child slots of the broadcaster, 1..=4 [default: 4].
    #[arg(long, value_name = "SLOTS")]
    pub root_capacity: Option<u8>,

    /// Fraction of viewers behind symmetric NAT, which are always leaves [default: 0].
    #[arg(long, value_name = "FRACTION")]
    pub relay_only: Option<f64>,

    /// Fraction of viewers that are browser tabs, placed below native nodes [default: 0].
    #[arg(long, value_name = "FRACTION")]
    pub browser: Option<f64>,

    /// One-way network latency between any two nodes [default: 40].
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<f64>,

    /// Latency jitter: each delay is uniform in latency ± jitter [default: 0].
    #[arg(long, value_name = "MS")]
    pub jitter_ms: Option<f64>,

    /// Media silence after which a crashed parent counts as lost [default: 300].
    #[arg(long, value_name = "MS")]
    pub detection_ms: Option<f64>,

    /// Capacity a node needs above a higher node to swap places with it [default: 1].
    #[arg(long, value_name = "SLOTS")]
    pub promotion_margin: Option<u8>,

    /// Seconds between rounds in which every node looks for a promotion, as live agents do
    /// (0: only joiners and repaired orphans look) [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub promotion_interval: Option<f64>,

    /// Seconds between a node's liveness re-publications of its record [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat: Option<f64>,

    /// Peers each gossip message is sent to (gossipsub's mesh degree D) [default: 6].
    #[arg(long, value_name = "PEERS")]
    pub gossip_fanout: Option<u32>,

    /// How leaving viewers go: graceful (children repair at once) or crash (children notice
    /// after --detection-ms) [default: graceful].
    #[arg(long, value_enum)]
    pub leave: Option<LeaveKind>,

    /// Churn: viewers leave after sessions with this mean length [default: no churn].
    #[arg(long, value_name = "SECONDS")]
    pub mean_session: Option<f64>,

    /// Session length distribution for churn [default: exponential].
    #[arg(long, value_enum)]
    pub session_dist: Option<SessionDist>,

    /// Replace every leaver by a newcomer at once (a steady audience under churn).
    #[arg(long)]
    pub rejoin: bool,

    /// Crash this many random viewers at --crash-at.
    #[arg(long, value_name = "N")]
    pub crash: Option<u64>,

    /// Crash this many random interior viewers (ones feeding children) at --crash-at.
    #[arg(long, value_name = "N")]
    pub crash_interior: Option<u64>,

    /// Crash this node (repeatable; the root is 1, viewers are numbered from 2) at --crash-at.
    #[arg(long, value_name = "ID")]
    pub crash_node: Vec<u64>,

    /// When the crashes above happen [default: half the duration].
    #[arg(long, value_name = "SECONDS")]
    pub crash_at: Option<f64>,

    /// Invariant checks. Every step checks the nodes it touched (View::check_nodes); the whole
    /// view (View::check_invariants) is checked: auto: after every step while small, then
    /// spaced so the cost stays linear; every: after every step (quadratic); end: at the end
    /// only [default: auto].
    #[arg(long, value_name = "auto|every|end")]
    pub check: Option<CheckPolicy>,

    /// Output on stdout.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,

    /// Also write an SVG picture of the tree (top levels) and a depth histogram here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Show a progress bar on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
}

impl Cli {
    /// The scenario: the file's, with every flag given replacing its setting.
    pub fn scenario(&self) -> Result<Scenario, ConfigError> {
        let base = match &self.scenario {
            Some(path) => Scenario::from_file(path)?,
            None => Scenario::default(),
        };
        let churn = match (self.mean_session, base.churn) {
            (Some(mean), base) => Some(Churn {
                mean_session: mean,
                distribution: self
                    .session_dist
                    .or(base.map(|b| b.distribution))
                    .unwrap_or_default(),
                rejoin: self.rejoin || base.is_some_and(|b| b.rejoin),
            }),
            (None, Some(b)) => Some(Churn {
                mean_session: b.mean_session,
                distribution: self.session_dist.unwrap_or(b.distribution),
                rejoin: self.rejoin || b.rejoin,
            }),
            (None, None) if self.session_dist.is_some() || self.rejoin => {
                return Err(ConfigError::Invalid {
                    field: "mean_session",
                    why: "--session-dist and --rejoin need churn: give --mean-session".into(),
                });
            }
            (None, None) => None,
        };
        let crash = |count, select| CrashSpec {
            at: self.crash_at,
            count,
            select,
            depth: None,
            nodes: Vec::new(),
        };
        let mut crashes = Vec::new();
        if let Some(n) = self.crash {
            crashes.push(crash(n, CrashSelect::Random));
        }
        if let Some(n) = self.crash_interior {
            crashes.push(crash(n, CrashSelect::Interior));
        }
        if !self.crash_node.is_empty() {
            crashes.push(CrashSpec {
                nodes: self.crash_node.clone(),
                ..crash(0, CrashSelect::Nodes)
            });
        }
        if self.crash_at.is_some() && crashes.is_empty() {
            return Err(ConfigError::Invalid {
                field: "crash_at",
                why: "--crash-at needs --crash, --crash-interior or --crash-node".into(),
            });
        }
        let flags = Scenario {
            mode: self.mode,
            viewers: self.viewers,
            join_rate: self.join_rate,
            duration: self.duration,
            seed: self.seed,
            capacity_mix: self.capacity_mix.clone(),
            root_capacity: self.root_capacity,
            relay_only: self.relay_only,
            browser: self.browser,
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            detection_ms: self.detection_ms,
            promotion_margin: self.promotion_margin,
            promotion_interval: self.promotion_interval,
            heartbeat: self.heartbeat,
            gossip_fanout: self.gossip_fanout,
            leave: self.leave,
            churn: None,
            crash: crashes,
            check: self.check,
        };
        let mut merged = base.merge(flags);
        merged.churn = churn;
        Ok(merged)
    }
}
