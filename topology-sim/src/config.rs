//! The simulator's configuration: one validated [`Config`], built from a [`Scenario`] (the
//! layer that TOML files and command-line flags fill in, every field optional).
//!
//! Precedence: built-in defaults, then the scenario file, then flags.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use treecast_tree::{MAX_CHILDREN, Node, NodeId, Platform, Reachability, Role};

/// Which engine runs the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One shared view; decisions are applied to it directly (good for a million nodes).
    #[default]
    Fast,
    /// Every node runs its own `Agent`; records and messages travel with delays.
    Messages,
}

/// How long viewers stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SessionDist {
    /// Exponential with the given mean (memoryless: constant leave rate).
    #[default]
    Exponential,
    /// Pareto with shape 2 and the given mean: many short visits, a few very long ones.
    Pareto,
    /// Every session lasts exactly the mean.
    Fixed,
}

/// How a leaving viewer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LeaveKind {
    /// It tells its children, who start repairing at once.
    #[default]
    Graceful,
    /// It vanishes: children notice only after the detection time (media silence).
    Crash,
}

/// Which nodes a crash event picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrashSelect {
    /// Any viewer.
    #[default]
    Random,
    /// Viewers that feed at least one child.
    Interior,
    /// Viewers at the given depth.
    Depth,
    /// The listed node ids.
    Nodes,
}

/// A batch of nodes crashing at the same instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSpec {
    /// Seconds of virtual time (default: half the duration).
    #[serde(default)]
    pub at: Option<f64>,
    /// How many nodes (ignored for `select = "nodes"`).
    #[serde(default)]
    pub count: u64,
    /// Which nodes.
    #[serde(default)]
    pub select: CrashSelect,
    /// The depth for `select = "depth"`.
    #[serde(default)]
    pub depth: Option<u16>,
    /// The node ids for `select = "nodes"` (viewers are numbered from 2; the root is 1).
    #[serde(default)]
    pub nodes: Vec<u64>,
}

/// Viewers leaving after a random session length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Mean session length, seconds.
    pub mean_session: f64,
    /// The session length distribution.
    #[serde(default)]
    pub distribution: SessionDist,
    /// Each leaver is replaced by a newcomer at once, keeping the audience size steady.
    #[serde(default)]
    pub rejoin: bool,
}

/// Capacity (child slots) and the fraction of viewers that have it, e.g. `4:0.1,2:0.4,1:0.3,0:0.2`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityMix(Vec<(u8, f64)>);

impl CapacityMix {
    /// The (capacity, fraction) pairs; fractions sum to 1.
    pub fn parts(&self) -> &[(u8, f64)] {
        &self.0
    }

    /// The capacity for a uniform draw `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> u8 {
        let mut acc = 0.0;
        for &(cap, frac) in &self.0 {
            acc += frac;
            if u < acc {
                return cap;
            }
        }
        self.0.last().map_or(0, |&(cap, _)| cap)
    }

    /// The fraction of viewers with capacity 4.
    pub fn fraction_of(&self, cap: u8) -> f64 {
        self.0.iter().filter(|p| p.0 == cap).map(|p| p.1).sum()
    }
}

impl Default for CapacityMix {
    fn default() -> Self {
        CapacityMix(vec![(4, 0.25), (2, 0.35), (1, 0.2), (0, 0.2)])
    }
}

impl fmt::Display for CapacityMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (cap, frac)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cap}:{frac}")?;
        }
        Ok(())
    }
}

impl FromStr for CapacityMix {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::CapacityMix {
            input: s.to_owned(),
            why,
        };
        let mut parts = Vec::new();
        for item in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (cap, frac) = item
                .split_once(':')
                .ok_or_else(|| bad(format!("`{item}` is not CAPACITY:FRACTION")))?;
            let cap: u8 = cap
                .trim()
                .parse()
                .map_err(|_| bad(format!("capacity `{cap}` is not a number 0..=4")))?;
            if usize::from(cap) > MAX_CHILDREN {
                return Err(bad(format!("capacity {cap} is above {MAX_CHILDREN}")));
            }
            let frac: f64 = frac
                .trim()
                .parse()
                .map_err(|_| bad(format!("fraction `{frac}` is not a number")))?;
            if !(0.0..=1.0).contains(&frac) {
                return Err(bad(format!("fraction {frac} is outside 0..=1")));
            }
            if parts.iter().any(|&(c, _)| c == cap) {
                return Err(bad(format!("capacity {cap} is listed twice")));
            }
            parts.push((cap, frac));
        }
        if parts.is_empty() {
            return Err(bad("no CAPACITY:FRACTION pairs".into()));
        }
        let sum: f64 = parts.iter().map(|p| p.1).sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(bad(format!("fractions add up to {sum}, not 1")));
        }
        // Strongest first, so `pick` is the same whatever order the user wrote.
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        Ok(CapacityMix(parts))
    }
}

impl Serialize for CapacityMix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CapacityMix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When `View::check_invariants` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckPolicy {
    /// After every step the nodes it touched (`View::check_nodes`); the whole view after every
    /// step while it is small (up to 2,000 nodes), then whenever as many steps have passed as
    /// the view has nodes, which keeps the cost at about one node walk per step.
    #[default]
    Auto,
    /// The whole view after every step (quadratic: slow beyond some ten thousand nodes).
    Every,
    /// The touched nodes after every step, the whole view only at the end.
    End,
}

impl FromStr for CheckPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CheckPolicy::Auto),
            "every" => Ok(CheckPolicy::Every),
            "end" => Ok(CheckPolicy::End),
            _ => Err(format!("`{s}` is not one of auto, every, end")),
        }
    }
}

/// A scenario as written in a TOML file or given as flags: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Engine.
    pub mode: Option<Mode>,
    /// Viewers that join (besides the broadcaster).
    pub viewers: Option<u64>,
    /// Joins per second; all at once at time 0 when absent.
    pub join_rate: Option<f64>,
    /// Virtual seconds to simulate.
    pub duration: Option<f64>,
    /// The seed everything random derives from.
    pub seed: Option<u64>,
    /// Viewers' capacities.
    pub capacity_mix: Option<CapacityMix>,
    /// The broadcaster's capacity.
    pub root_capacity: Option<u8>,
    /// Fraction of viewers behind symmetric NAT (always leaves).
    pub relay_only: Option<f64>,
    /// Fraction of viewers that are browser tabs (placed below native nodes).
    pub browser: Option<f64>,
    /// One-way network latency between nodes, ms.
    pub latency_ms: Option<f64>,
    /// Latency jitter, ms: each delay is uniform in latency ± jitter.
    pub jitter_ms: Option<f64>,
    /// Media silence after which a parent counts as lost, ms.
    pub detection_ms: Option<f64>,
    /// Capacity margin a node needs over one higher up to swap with it.
    pub promotion_margin: Option<u8>,
    /// Seconds between the rounds in which every node looks for a promotion (0: only on join
    /// and repair).
    pub promotion_interval: Option<f64>,
    /// Seconds between a node's liveness re-publications.
    pub heartbeat: Option<f64>,
    /// Peers each gossip message is sent to.
    pub gossip_fanout: Option<u32>,
    /// How leaving viewers go.
    pub leave: Option<LeaveKind>,
    /// Viewers leaving after random sessions.
    pub churn: Option<Churn>,
    /// Crash batches.
    #[serde(default)]
    pub crash: Vec<CrashSpec>,
    /// When invariants are checked.
    pub check: Option<CheckPolicy>,
}

impl Scenario {
    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml { why, .. } => ConfigError::Toml {
                path: path.display().to_string(),
                why,
            },
            e => e,
        })
    }

    /// Parses a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: "<text>".into(),
            why: e.to_string(),
        })
    }

    /// This scenario with every field `over` sets replacing ours; crash lists are concatenated.
    pub fn merge(self, over: Scenario) -> Scenario {
        let mut crash = self.crash;
        crash.extend(over.crash);
        Scenario {
            mode: over.mode.or(self.mode),
            viewers: over.viewers.or(self.viewers),
            join_rate: over.join_rate.or(self.join_rate),
            duration: over.duration.or(self.duration),
            seed: over.seed.or(self.seed),
            capacity_mix: over.capacity_mix.or(self.capacity_mix),
            root_capacity: over.root_capacity.or(self.root_capacity),
            relay_only: over.relay_only.or(self.relay_only),
            browser: over.browser.or(self.browser),
            latency_ms: over.latency_ms.or(self.latency_ms),
            jitter_ms: over.jitter_ms.or(self.jitter_ms),
            detection_ms: over.detection_ms.or(self.detection_ms),
            promotion_margin: over.promotion_margin.or(self.promotion_margin),
            promotion_interval: over.promotion_interval.or(self.promotion_interval),
            heartbeat: over.heartbeat.or(self.heartbeat),
            gossip_fanout: over.gossip_fanout.or(self.gossip_fanout),
            leave: over.leave.or(self.leave),
            churn: match (self.churn, over.churn) {
                (Some(base), Some(o)) => Some(Churn {
                    mean_session: o.mean_session,
                    distribution: o.distribution,
                    rejoin: o.rejoin || base.rejoin,
                }),
                (a, b) => b.or(a),
            },
            crash,
            check: over.check.or(self.check),
        }
    }

    /// Validates and fills in defaults.
    pub fn build(self) -> Result<Config, ConfigError> {
        let viewers = self.viewers.unwrap_or(1000);
        let join_rate = self.join_rate;
        if let Some(r) = join_rate {
            positive("join_rate", r)?;
        }
        let duration = match self.duration {
            Some(d) => positive("duration", d)?,
            // Long enough for every viewer to arrive, plus a minute.
            None => join_rate.map_or(0.0, |r| viewers as f64 / r) + 60.0,
        };
        let fraction = |name: &'static str, v: Option<f64>| -> Result<f64, ConfigError> {
            let v = v.unwrap_or(0.0);
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    field: name,
                    why: format!("{v} is not a fraction in 0..=1"),
                })
            }
        };
        let root_capacity = self.root_capacity.unwrap_or(MAX_CHILDREN as u8);
        if usize::from(root_capacity) > MAX_CHILDREN || root_capacity == 0 {
            return Err(ConfigError::Invalid {
                field: "root_capacity",
                why: format!("{root_capacity} is not in 1..={MAX_CHILDREN}"),
            });
        }
        let latency_ms = non_negative("latency_ms", self.latency_ms.unwrap_or(40.0))?;
        let jitter_ms = non_negative("jitter_ms", self.jitter_ms.unwrap_or(0.0))?;
        if jitter_ms > latency_ms {
            return Err(ConfigError::Invalid {
                field: "jitter_ms",
                why: format!("jitter {jitter_ms} ms exceeds the latency {latency_ms} ms"),
            });
        }
        if let Some(c) = &self.churn {
            positive("churn.mean_session", c.mean_session)?;
        }

        let mut crashes = self.crash;
        for c in &mut crashes {
            c.at = Some(non_negative("crash.at", c.at.unwrap_or(duration / 2.0))?);
            match c.select {
                CrashSelect::Depth if c.depth.is_none_or(|d| d == 0) => {
                    return Err(ConfigError::Invalid {
                        field: "crash.depth",
                        why: "select = \"depth\" needs depth >= 1".into(),
                    });
                }
                CrashSelect::Nodes if c.nodes.contains(&ROOT_ID) => {
                    return Err(ConfigError::Invalid {
                        field: "crash.nodes",
                        why: "node 1 is the broadcaster; crashing it ends the stream".into(),
                    });
                }
                _ => {}
            }
        }
        let gossip_fanout = self.gossip_fanout.unwrap_or(6);
        Ok(Config {
            mode: self.mode.unwrap_or_default(),
            viewers,
            join_rate,
            duration,
            seed: self.seed.unwrap_or(0),
            capacity_mix: self.capacity_mix.unwrap_or_default(),
            root_capacity,
            relay_only: fraction("relay_only", self.relay_only)?,
            browser: fraction("browser", self.browser)?,
            latency_ms,
            jitter_ms,
            detection_ms: non_negative("detection_ms", self.detection_ms.unwrap_or(300.0))?,
            promotion_margin: self.promotion_margin.unwrap_or(1).max(1),
            promotion_interval: non_negative(
                "promotion_interval",
                self.promotion_interval.unwrap_or(30.0),
            )?,
            heartbeat: positive("heartbeat", self.heartbeat.unwrap_or(30.0))?,
            gossip_fanout,
            leave: self.leave.unwrap_or_default(),
            churn: self.churn,
            crashes,
            check: self.check.unwrap_or_default(),
        })
    }
}

/// The id of the broadcaster in every simulation; viewers are numbered from 2.
pub const ROOT_ID: u64 = 1;

/// A validated configuration. Build one with [`Config::builder`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Engine (default fast).
    pub mode: Mode,
    /// Viewers that join (default 1,000).
    pub viewers: u64,
    /// Joins per second; `None` (default): all at once at time 0.
    pub join_rate: Option<f64>,
    /// Virtual seconds (default: time for everyone to arrive, plus 60).
    pub duration: f64,
    /// Seed (default 0).
    pub seed: u64,
    /// Viewers' capacities (default `4:0.25,2:0.35,1:0.2,0:0.2`).
    pub capacity_mix: CapacityMix,
    /// The broadcaster's capacity (default 4).
    pub root_capacity: u8,
    /// Fraction of relay-only viewers (default 0).
    pub relay_only: f64,
    /// Fraction of browser viewers (default 0).
    pub browser: f64,
    /// One-way latency, ms (default 40).
    pub latency_ms: f64,
    /// Latency jitter, ms (default 0).
    pub jitter_ms: f64,
    /// Silence before a parent counts as lost, ms (default 300).
    pub detection_ms: f64,
    /// Promotion margin (default 1).
    pub promotion_margin: u8,
    /// Seconds between promotion rounds; 0 turns them off (default 30, the Agent's
    /// `promotion_interval`).
    pub promotion_interval: f64,
    /// Seconds between liveness re-publications (default 30, the Agent's refresh).
    pub heartbeat: f64,
    /// Gossip fan-out (default 6, gossipsub's mesh degree D).
    pub gossip_fanout: u32,
    /// How leavers go (default graceful).
    pub leave: LeaveKind,
    /// Churn (default none).
    pub churn: Option<Churn>,
    /// Crash batches (default none).
    pub crashes: Vec<CrashSpec>,
    /// Invariant checks (default auto).
    pub check: CheckPolicy,
}

impl Config {
    /// The record of a newcomer `id`, its capacity, reachability and platform drawn from this
    /// scenario's mixes (in that order, so a seed gives the same audience in both modes).
    pub fn new_viewer(&self, id: NodeId, rng: &mut impl Rng) -> Node {
        let mut node = Node::new(id, Role::Viewer, self.capacity_mix.pick(rng.random()));
        if rng.random::<f64>() < self.relay_only {
            node.reach = Reachability::RelayOnly;
        }
        if rng.random::<f64>() < self.browser {
            node.platform = Platform::Browser;
        }
        node
    }

    /// An empty scenario to fill in and [`Scenario::build`].
    pub fn builder() -> Scenario {
        Scenario::default()
    }

    /// One request round trip, ms, without jitter.
    pub fn rtt_ms(&self) -> f64 {
        2.0 * self.latency_ms
    }
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The capacity mix does not parse or does not add up.
    #[error("invalid capacity mix `{input}`: {why} (expected e.g. 4:0.1,2:0.4,1:0.3,0:0.2)")]
    CapacityMix {
        /// What was given.
        input: String,
        /// What is wrong.
        why: String,
    },
    /// A value outside its range.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The scenario file could not be read.
    #[error("cannot read scenario {path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        why: String,
    },
    /// The scenario file is not valid TOML for a scenario.
    #[error("invalid scenario {path}: {why}")]
    Toml {
        /// The file.
        path: String,
        /// The parser's message.
        why: String,
    },
}

fn positive(field: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            field,
            why: format!("{v} must be a positive number"),
        })
    }
}

fn non_negative(field: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            field,
            why: format!("{v} must be zero or more"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_mix_parses_and_picks() {
        let m: CapacityMix = "1:0.3,4:0.1,0:0.2,2:0.4".parse().unwrap();
        assert_eq!(m.parts(), &[(4, 0.1), (2, 0.4), (1, 0.3), (0, 0.2)]);
        assert_eq!(m.pick(0.05), 4);
        assert_eq!(m.pick(0.3), 2);
        assert_eq!(m.pick(0.99), 0);
        assert_eq!(m.to_string(), "4:0.1,2:0.4,1:0.3,0:0.2");
    }

    #[test]
    fn capacity_mix_errors_say_what_is_wrong() {
        let err = |s: &str| s.parse::<CapacityMix>().unwrap_err().to_string();
        assert!(err("4:0.5,2:0.4").contains("add up to 0.9"));
        assert!(err("5:1").contains("above 4"));
        assert!(err("4=1").contains("not CAPACITY:FRACTION"));
        assert!(err("4:x").contains("fraction `x`"));
        assert!(err("4:0.5,4:0.5").contains("twice"));
    }

    #[test]
    fn flags_override_the_file() {
        let file =
            Scenario::from_toml("viewers = 10\nseed = 3\n[churn]\nmean_session = 60\n").unwrap();
        let flags = Scenario {
            viewers: Some(20),
            ..Default::default()
        };
        let c = file.merge(flags).build().unwrap();
        assert_eq!((c.viewers, c.seed), (20, 3));
        assert_eq!(c.churn.map(|c| c.mean_session), Some(60.0));
    }

    #[test]
    fn unknown_fields_in_files_are_errors() {
        let e = Scenario::from_toml("viewerz = 10").unwrap_err().to_string();
        assert!(e.contains("viewerz"), "{e}");
    }
}
