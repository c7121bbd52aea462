//! `treecast swarm`: a broadcaster and N tree relays in one process (real libp2p, real WebRTC
//! over loopback), optionally with interior nodes stopped dead on a schedule; reports join
//! times, depth, media per node, interruptions, repair times, gossip traffic and memory.
//!
//! Every node is a full [`crate::run_with`] node: its own overlay swarm, its own tree agent,
//! its own peer connections. A kill is [`crate::Stop::Crash`]: the node's overlay and agent
//! stop without a word and its media connections drop, as when a process dies.
//!
//! Measured by sampling every node's shared state every [`SAMPLE`]:
//! - join time: from a node's start to its first video keyframe (its first decodable frame);
//! - interruption: a node that had media and went [`GAP`] without a packet;
//! - repair time: from a kill to the moment an orphan of it (a node of its subtree) has media
//!   again for good (a parent still repairing may replay its fast-start GOP and go silent
//!   again: the repair ends when media comes back after the last silence of [`GAP`] or more).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{Config, Role, Source, TreeConfig};
use crate::node::NodeState;
use crate::{NodeError, Stop};

/// How often every node is looked at.
pub const SAMPLE: Duration = Duration::from_millis(50);
/// Silence that counts as an interruption.
pub const GAP: Duration = Duration::from_millis(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Relays besides the broadcaster.
    pub nodes: usize,
    /// Stream name.
    pub stream: String,
    /// Video file for the broadcaster.
    pub video: PathBuf,
    /// Audio file, optional.
    pub audio: Option<PathBuf>,
    /// Start the nodes evenly over this long.
    pub join_over: Duration,
    /// How many interior nodes to kill once all have joined (0: none).
    pub kill: usize,
    /// How long after the last join the kills happen.
    pub kill_after: Duration,
    /// How long to keep measuring after the kills (or after the joins).
    pub observe: Duration,
    /// Seed for which nodes are killed.
    pub seed: u64,
    /// Print every interruption as it ends (node, when, how long).
    pub show_gaps: bool,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Relays started.
    pub nodes: usize,
    /// Relays whose first keyframe arrived.
    pub joined: usize,
    /// Join time to first frame, ms: p50, p95, max.
    pub join_ms: Percentiles,
    /// Depth of the attached relays in the root's view at the end: max, and the optimum
    /// for this many nodes of four slots.
    pub max_depth: u64,
    /// ceil(log4)-style optimum.
    pub optimal_depth: u64,
    /// Mean depth.
    pub mean_depth: f64,
    /// Relays attached in the root's view at the end (of those alive).
    pub attached: usize,
    /// Media packets received per relay over the run: min and p50.
    pub packets_min: u64,
    /// Median packets per relay.
    pub packets_p50: u64,
    /// Killed relays.
    pub killed: Vec<String>,
    /// Nodes in the killed subtrees (orphans), and how many got media again.
    pub orphans: usize,
    /// Orphans with media again.
    pub repaired: usize,
    /// Repair time, ms: p50, p95, max: per orphan, from the kill until media came back for
    /// good (the end of its last silence of [`GAP`] or more; the longest silence if none was
    /// that long), sampled every 50 ms, so within 50 ms.
    pub repair_ms: Percentiles,
    /// Alive relays receiving media at the end.
    pub receiving_at_end: usize,
    /// Interruptions of nodes outside the killed subtrees (should be 0).
    pub interruptions_outside: usize,
    /// Gossip record bytes per node per second (in + out): the records' own bytes.
    pub gossip_bytes_per_node_s: f64,
    /// Records the live nodes published while observed (after the kills, if any).
    pub records_published: u64,
    /// All overlay bytes per node per second (in + out): every protocol on every connection
    /// (gossipsub messages, duplicates and control, identify, ping, Kademlia, direct messages).
    pub overlay_bytes_per_node_s: f64,
    /// Of those, gossipsub messages per node per second (in + out): the records with their
    /// gossipsub framing, every copy a mesh peer sends (control messages not included).
    pub gossipsub_bytes_per_node_s: f64,
    /// Overlay connections opened while observed (each a TCP or QUIC and a noise handshake,
    /// then an identify exchange), counted once per connection.
    pub connections_opened: u64,
    /// The loss each relay reports on the link from its parent at the end (per mille, after
    /// NACK repair), as the records in the root's view say.
    pub link_loss_permille: Percentiles,
    /// The refresh intervals the records in the root's view declare at the end, s: how often
    /// an unchanged record is republished (see `AgentConfig::refresh_per_node`).
    pub refresh_s: Percentiles,
    /// What the refreshes alone cost each node, B/s (in): the sum over the records in the
    /// root's view of the mean sealed record size (all nodes' record bytes published over
    /// their records published) over the record's declared interval. The steady state once
    /// nothing changes; a run shorter than the intervals does not see it.
    pub refresh_bytes_per_node_s: f64,
    /// The same as a share of the stream bitrate, percent.
    pub refresh_percent_of_stream: f64,
    /// What the refreshes cost each node as gossipsub messages, every copy in and out, B/s:
    /// [`Self::refresh_bytes_per_node_s`] times the copies per record byte the live nodes
    /// measured over the whole run (`Stats::copies`). What refresh pacing holds to its share.
    pub refresh_wire_bytes_per_node_s: f64,
    /// The same as a share of the stream bitrate, percent.
    pub refresh_wire_percent_of_stream: f64,
    /// The stream's bitrate, bit/s: the median of what the live relays receive.
    pub stream_bps: u64,
    /// Gossip records as a share of the stream bitrate, percent.
    pub gossip_percent_of_stream: f64,
    /// All overlay traffic as a share of the stream bitrate, percent.
    pub overlay_percent_of_stream: f64,
    /// Resident memory of the whole process divided by the nodes (incl. the root), KiB.
    pub rss_kib_per_node: u64,
}

/// p50, p95 and max of a sample.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        }
    }
}

/// A node of the swarm (or the demo) running in this process.
pub(crate) struct Running {
    id: String,
    pub(crate) state: Arc<NodeState>,
    started: Instant,
    /// Send to stop it (`Stop::Leave` leaves gracefully).
    pub(crate) stop: Option<oneshot::Sender<Stop>>,
    first_frame: Option<Duration>,
    /// Had media at the last sample.
    flowing: bool,
    /// Stopped by a kill.
    dead: bool,
}

/// A tree configuration on loopback, without mDNS, bootstrapping from `bootstrap`.
pub(crate) fn loopback_tree(bootstrap: Option<&str>) -> Result<TreeConfig, NodeError> {
    let mut args = crate::gossip::Args {
        no_mdns: true,
        p2p_listen: vec![
            "/ip4/127.0.0.1/tcp/0"
                .parse()
                .map_err(|e| NodeError::Gossip(format!("{e}")))?,
        ],
        ..Default::default()
    };
    if let Some(b) = bootstrap {
        args.bootstrap = vec![b.parse().map_err(|e| NodeError::Gossip(format!("{e}")))?];
    }
    Ok(TreeConfig {
        gossip: args,
        upload_kbps: None,
        overstate_capacity: false,
    })
}

/// Starts a quiet node of `role` in this process, HTTP and overlay on loopback, joining the
/// tree through `bootstrap` (none for the root).
pub(crate) async fn start_on_loopback(
    stream: &str,
    role: Role,
    bootstrap: Option<&str>,
) -> Result<Running, NodeError> {
    let http = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    let bad = |e: crate::config::ConfigError| NodeError::Gossip(e.to_string());
    let mut config = Config::new(stream, role, http, None)
        .map_err(bad)?
        .with_tree(Some(loopback_tree(bootstrap)?))
        .map_err(bad)?;
    config.quiet = true;
    start(config).await
}

/// Runs the swarm and returns what it measured.
pub async fn run(cfg: SwarmConfig) -> Result<Report, NodeError> {
    // The broadcaster.
    let source = Source::Files {
        video: cfg.video.clone(),
        audio: cfg.audio.clone(),
        fps: 30,
    };
    let root = start_on_loopback(&cfg.stream, Role::Broadcast { source }, None).await?;
    // Its overlay address: what every relay bootstraps from.
    let bootstrap = root_overlay_addr(&root.state).await?;

    // The runtime's scheduling lag: how late a 10 ms sleep wakes, worst per 5 s, printed.
    let lag_start = Instant::now();
    let lag = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut window = Instant::now();
        loop {
            let t = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(10)));
            if window.elapsed() >= Duration::from_secs(5) {
                eprintln!(
                    "swarm: t={:>4.0} s  runtime lag (a 10 ms sleep woke late by) up to {} ms",
                    lag_start.elapsed().as_secs_f64(),
                    worst.as_millis()
                );
                worst = Duration::ZERO;
                window = Instant::now();
            }
        }
    });
    let mut relays: Vec<Running> = Vec::new();
    let spacing = cfg.join_over / (cfg.nodes.max(1) as u32);
    let t0 = Instant::now();
    let mut samples = Sampler {
        show: cfg.show_gaps.then_some(lag_start),
        ..Sampler::default()
    };
    for i in 0..cfg.nodes {
        relays.push(
            start_on_loopback(&cfg.stream, Role::Relay { pull: None }, Some(&bootstrap)).await?,
        );
        let due = t0 + spacing * (i as u32 + 1);
        while Instant::now() < due {
            samples.sample(&mut relays);
            tokio::time::sleep(SAMPLE.min(due.saturating_duration_since(Instant::now()))).await;
        }
    }
    eprintln!("swarm: {} relays started in {:?}", cfg.nodes, t0.elapsed());
    // Wait for everyone's first frame (bounded), then settle.
    let deadline = Instant::now() + Duration::from_secs(60).max(cfg.join_over);
    while relays.iter().any(|r| r.first_frame.is_none()) && Instant::now() < deadline {
        samples.sample(&mut relays);
        tokio::time::sleep(SAMPLE).await;
    }
    let settle_until = Instant::now() + cfg.kill_after;
    while Instant::now() < settle_until {
        samples.sample(&mut relays);
        tokio::time::sleep(SAMPLE).await;
    }

    // Kills: interior relays (with children in the root's view), chosen by the seed.
    let tree = root.state.tree().snapshot;
    let mut killed = Vec::new();
    let mut affected: BTreeSet<String> = BTreeSet::new();
    let mut killed_at = None;
    if cfg.kill > 0
        && let Some(tree) = &tree
    {
        let children: BTreeMap<String, Vec<String>> = tree
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.children.clone()))
            .collect();
        let mut interior: Vec<String> = tree
            .nodes
            .iter()
            .filter(|n| n.parent.is_some() && !n.children.is_empty())
            .map(|n| n.id.clone())
            .collect();
        // A seeded shuffle (splitmix64), no RNG crate needed for this.
        let mut x = cfg.seed;
        for i in (1..interior.len()).rev() {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            interior.swap(i, (z % (i as u64 + 1)) as usize);
        }
        interior.truncate(cfg.kill);
        for top in &interior {
            let mut stack = vec![top.clone()];
            while let Some(n) = stack.pop() {
                if let Some(c) = children.get(&n) {
                    stack.extend(c.iter().cloned());
                }
                affected.insert(n);
            }
        }
        samples.reset_gaps();
        samples.affected = affected.clone();
        killed_at = Some(Instant::now());
        for r in relays.iter_mut().filter(|r| interior.contains(&r.id)) {
            if let Some(stop) = r.stop.take() {
                let _ = stop.send(Stop::Crash);
            }
            r.dead = true;
        }
        killed = interior;
        eprintln!(
            "swarm: killed {killed:?} ({} nodes in their subtrees)",
            affected.len()
        );
    }

    // Observe.
    let gossip_start = all_bytes(&root, &relays, |s| &s.gossip_bytes);
    let overlay_start = all_bytes(&root, &relays, |s| &s.overlay_bytes);
    let totals_start = overlay_totals(&root, &relays);
    let observe_from = Instant::now();
    // Per orphan: the longest silence seen since the kill, whether media came back, and when
    // (since the kill) it last came back after a silence of GAP or more: an orphan attached
    // under a parent that is itself still repairing may get that parent's fast-start replay
    // first and then wait again; it counts as repaired when media came back for good.
    let mut longest: BTreeMap<String, Duration> = BTreeMap::new();
    let mut repaired: BTreeSet<String> = BTreeSet::new();
    let mut back_after_gap: BTreeMap<String, Duration> = BTreeMap::new();
    let mut gapped: BTreeSet<String> = BTreeSet::new();
    let observe_until = Instant::now() + cfg.observe;
    while Instant::now() < observe_until {
        samples.sample(&mut relays);
        if let Some(at) = killed_at {
            for r in relays
                .iter()
                .filter(|r| !r.dead && affected.contains(&r.id))
            {
                let silent = r
                    .state
                    .silent_for()
                    .unwrap_or(at.elapsed())
                    .min(at.elapsed());
                let l = longest.entry(r.id.clone()).or_default();
                // Back: media again after a silence of at least one sample.
                if silent < *l && *l >= SAMPLE {
                    repaired.insert(r.id.clone());
                }
                *l = (*l).max(silent);
                // In a gap of GAP or more: when media flows again, note when it came back.
                if silent >= GAP {
                    back_after_gap.remove(&r.id);
                    gapped.insert(r.id.clone());
                } else if gapped.remove(&r.id) {
                    let back = at.elapsed().saturating_sub(silent);
                    if cfg.show_gaps {
                        eprintln!(
                            "swarm: {} back {} ms after the kill",
                            r.id,
                            back.as_millis()
                        );
                    }
                    back_after_gap.insert(r.id.clone(), back);
                }
            }
        }
        tokio::time::sleep(SAMPLE).await;
    }
    lag.abort();
    let alive = relays.iter().filter(|r| !r.dead).count() + 1;
    let per_node_s =
        |bytes: u64| bytes as f64 / alive as f64 / observe_from.elapsed().as_secs_f64();
    let gossip_per_node_s =
        per_node_s(all_bytes(&root, &relays, |s| &s.gossip_bytes).saturating_sub(gossip_start));
    let overlay_per_node_s =
        per_node_s(all_bytes(&root, &relays, |s| &s.overlay_bytes).saturating_sub(overlay_start));

    let totals = overlay_totals(&root, &relays);
    let gossipsub_per_node_s = per_node_s(
        (totals.gossipsub_in + totals.gossipsub_out)
            .saturating_sub(totals_start.gossipsub_in + totals_start.gossipsub_out),
    );
    eprintln!(
        "swarm: overlay totals over the live nodes: {} connections opened, {} pruned, {} open now, \
         {} records published, {} accepted ({} by sync), {} stale, {} direct messages, \
         {} DHT lookups, {} dials to stay connected",
        totals.opened,
        totals.pruned,
        totals.connected,
        totals.published,
        totals.accepted,
        totals.synced,
        totals.ignored_stale,
        totals.messages,
        totals.lookups,
        totals.tended
    );

    // The end state, from the root's view.
    let tree = root.state.tree().snapshot;
    let depths: Vec<u64> = tree
        .as_ref()
        .map(|t| {
            t.nodes
                .iter()
                .filter_map(|n| n.depth.map(u64::from))
                .collect()
        })
        .unwrap_or_default();
    let attached = depths.len().saturating_sub(1);
    let max_depth = depths.iter().copied().max().unwrap_or(0);
    let mean_depth = if depths.len() > 1 {
        depths.iter().sum::<u64>() as f64 / (depths.len() - 1) as f64
    } else {
        0.0
    };
    let mut packets: Vec<u64> = relays
        .iter()
        .filter(|r| !r.dead)
        .map(|r| r.state.upstream.packets.load(Ordering::Relaxed))
        .collect();
    packets.sort_unstable();
    let mut rates: Vec<u64> = relays
        .iter()
        .filter(|r| !r.dead)
        .map(|r| r.state.upstream.bitrate_bps.load(Ordering::Relaxed))
        .collect();
    rates.sort_unstable();
    let stream_bps = rates.get(rates.len() / 2).copied().unwrap_or(0);
    let percent = |bytes_per_s: f64| {
        if stream_bps > 0 {
            bytes_per_s * 8.0 * 100.0 / stream_bps as f64
        } else {
            0.0
        }
    };
    let orphans = affected.len().saturating_sub(killed.len());
    let losses: Vec<u64> = tree
        .as_ref()
        .map(|t| {
            t.nodes
                .iter()
                .filter(|n| n.parent.is_some())
                .map(|n| u64::from(n.link.loss_permille))
                .collect()
        })
        .unwrap_or_default();
    let declared: Vec<u64> = tree
        .as_ref()
        .map(|t| t.nodes.iter().map(|n| u64::from(n.refresh_s)).collect())
        .unwrap_or_default();
    let (published, published_bytes) = std::iter::once(&root)
        .chain(relays.iter().filter(|r| !r.dead))
        .filter_map(|r| {
            r.state
                .overlay_stats
                .lock()
                .ok()
                .map(|s| (s.published, s.bytes_out))
        })
        .fold((0, 0), |(n, b), (pn, pb)| (n + pn, b + pb));
    let record_bytes = published_bytes as f64 / published.max(1) as f64;
    let refresh_bytes_per_node_s = declared
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| record_bytes / s as f64)
        .sum::<f64>();
    // On the wire: times the gossipsub copies per record byte the live nodes measured so far.
    let refresh_wire_bytes_per_node_s = refresh_bytes_per_node_s * totals.copies().unwrap_or(1.0);
    let report = Report {
        nodes: cfg.nodes,
        joined: relays.iter().filter(|r| r.first_frame.is_some()).count(),
        join_ms: Percentiles::of(
            relays
                .iter()
                .filter_map(|r| r.first_frame)
                .map(|d| d.as_millis() as u64)
                .collect(),
        ),
        max_depth,
        optimal_depth: optimal_depth(cfg.nodes),
        mean_depth,
        attached,
        packets_min: packets.first().copied().unwrap_or(0),
        packets_p50: packets.get(packets.len() / 2).copied().unwrap_or(0),
        killed,
        orphans,
        repaired: repaired.len(),
        repair_ms: Percentiles::of(
            longest
                .iter()
                .filter(|(id, _)| repaired.contains(*id))
                .map(|(id, d)| back_after_gap.get(id).unwrap_or(d).as_millis() as u64)
                .collect(),
        ),
        receiving_at_end: relays
            .iter()
            .filter(|r| !r.dead && r.state.silent_for().is_some_and(|s| s < GAP))
            .count(),
        interruptions_outside: samples
            .gaps
            .iter()
            .filter(|id| !affected.contains(*id))
            .count(),
        gossip_bytes_per_node_s: gossip_per_node_s,
        records_published: totals.published.saturating_sub(totals_start.published),
        overlay_bytes_per_node_s: overlay_per_node_s,
        gossipsub_bytes_per_node_s: gossipsub_per_node_s,
        connections_opened: totals.opened.saturating_sub(totals_start.opened) / 2,
        link_loss_permille: Percentiles::of(losses),
        refresh_s: Percentiles::of(declared),
        refresh_bytes_per_node_s,
        refresh_percent_of_stream: percent(refresh_bytes_per_node_s),
        refresh_wire_bytes_per_node_s,
        refresh_wire_percent_of_stream: percent(refresh_wire_bytes_per_node_s),
        stream_bps,
        gossip_percent_of_stream: percent(gossip_per_node_s),
        overlay_percent_of_stream: percent(overlay_per_node_s),
        rss_kib_per_node: rss_kib() / (cfg.nodes as u64 + 1),
    };
    // Stop everyone (cleanly).
    for r in relays.iter_mut() {
        if let Some(stop) = r.stop.take() {
            let _ = stop.send(Stop::Leave);
        }
    }
    let mut root = root;
    if let Some(stop) = root.stop.take() {
        let _ = stop.send(Stop::Leave);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(report)
}

/// The depth a tree of `n` relays under a root, all of four slots, needs at least.
fn optimal_depth(n: usize) -> u64 {
    let (mut depth, mut level, mut placed) = (0u64, 1usize, 0usize);
    while placed < n {
        depth += 1;
        level *= 4;
        placed += level;
    }
    depth
}

/// Starts a node in this process and waits until it has a tree id (bounded).
pub(crate) async fn start(config: Config) -> Result<Running, NodeError> {
    let (obs_tx, obs_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<Stop>();
    let started = Instant::now();
    tokio::spawn(async move {
        let stop = async move { stop_rx.await.unwrap_or(Stop::Leave) };
        if let Err(e) = crate::run_with(config, stop, obs_tx).await {
            tracing::warn!(error = %e, "a swarm node stopped");
        }
    });
    let state = obs_rx
        .await
        .map_err(|_| NodeError::Gossip("a node failed to start".into()))?;
    // The tree id appears once the driver published its first view.
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        if let Some(id) = state.tree().id {
            break id;
        }
        if Instant::now() > deadline {
            break state.node_id.as_str().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok(Running {
        id,
        state,
        started,
        stop: Some(stop_tx),
        first_frame: None,
        flowing: false,
        dead: false,
    })
}

/// The root's overlay address: its node id is the tree id; the address comes from its status.
pub(crate) async fn root_overlay_addr(root: &NodeState) -> Result<String, NodeError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(addr) = root.overlay_addr() {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(NodeError::Gossip(
                "the root's overlay did not come up".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sum of one byte counter over the live nodes.
/// The overlay counters of the live nodes (as last read), added up.
fn overlay_totals(root: &Running, relays: &[Running]) -> crate::gossip::Stats {
    std::iter::once(root)
        .chain(relays.iter().filter(|r| !r.dead))
        .filter_map(|r| r.state.overlay_stats.lock().ok().map(|s| *s))
        .fold(crate::gossip::Stats::default(), |mut a, s| {
            a.opened += s.opened;
            a.pruned += s.pruned;
            a.published += s.published;
            a.accepted += s.accepted;
            a.ignored_stale += s.ignored_stale;
            a.synced += s.synced;
            a.messages += s.messages;
            a.connected += s.connected;
            a.lookups += s.lookups;
            a.tended += s.tended;
            a.gossipsub_in += s.gossipsub_in;
            a.gossipsub_out += s.gossipsub_out;
            a.gossiped_in += s.gossiped_in;
            a
        })
}

fn all_bytes(
    root: &Running,
    relays: &[Running],
    counter: impl Fn(&NodeState) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    std::iter::once(root)
        .chain(relays.iter().filter(|r| !r.dead))
        .map(|r| counter(&r.state).load(Ordering::Relaxed))
        .sum()
}

#[derive(Default)]
struct Sampler {
    /// Nodes that had an interruption since the last reset.
    gaps: BTreeSet<String>,
    /// Print each interruption when it ends, times from `since`.
    show: Option<Instant>,
    /// Where each node's current interruption began.
    silent_since: BTreeMap<String, Instant>,
    /// The killed nodes' subtrees (for the printout).
    affected: BTreeSet<String>,
}

impl Sampler {
    fn sample(&mut self, relays: &mut [Running]) {
        for r in relays.iter_mut().filter(|r| !r.dead) {
            if r.first_frame.is_none()
                && r.state
                    .tracks()
                    .and_then(|t| t.video)
                    .is_some_and(|v| v.keyframes_seen() > 0)
            {
                r.first_frame = Some(r.started.elapsed());
            }
            let silent = r.state.silent_for();
            let flowing = silent.is_some_and(|s| s < GAP);
            if r.flowing && !flowing {
                self.gaps.insert(r.id.clone());
                if self.show.is_some() {
                    let began = Instant::now() - silent.unwrap_or_default();
                    self.silent_since.insert(r.id.clone(), began);
                }
            }
            if flowing
                && !r.flowing
                && let (Some(t0), Some(began)) = (self.show, self.silent_since.remove(&r.id))
            {
                let gap =
                    Instant::now().saturating_duration_since(began) - silent.unwrap_or_default();
                eprintln!(
                    "swarm: gap {} at t={:.2} s, {} ms{}",
                    r.id,
                    began.saturating_duration_since(t0).as_secs_f64(),
                    gap.as_millis(),
                    if self.affected.contains(&r.id) {
                        " (killed subtree)"
                    } else {
                        ""
                    }
                );
            }
            r.flowing = flowing;
        }
    }

    fn reset_gaps(&mut self) {
        self.gaps.clear();
    }
}

/// Resident memory of this process, KiB (0 where /proc is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Report {
    /// The report as a readable table.
    pub fn table(&self) -> String {
        let p = |x: &Percentiles| format!("p50 {} ms, p95 {} ms, max {} ms", x.p50, x.p95, x.max);
        format!(
            "relays                 {} started, {} got a first frame, {} attached at the end\n\
             join to first frame    {}\n\
             depth                  max {} (optimum {}), mean {:.2}\n\
             packets per relay      min {}, p50 {}\n\
             killed                 {:?}\n\
             receiving at the end   {} of the relays alive\n\
             orphans repaired       {} of {}\n\
             repair time            {}\n\
             interruptions outside  {}\n\
             link loss              p50 {}, p95 {}, max {} per mille (after NACK repair)\n\
             records published      {} while observed\n\
             gossip per node        {:.0} B/s of records ({:.2}% of the {} kbit/s stream)\n\
             overlay per node       {:.0} B/s, every protocol ({:.2}% of the stream)\n\
             gossipsub messages     {:.0} B/s per node of that, every copy; {} connections opened\n\
             refresh interval       p50 {} s, p95 {} s, max {} s (declared in the records)\n\
             refreshes alone        {:.0} B/s per node of records ({:.2}% of the stream), once nothing changes\n\
             refreshes on the wire  {:.0} B/s per node as gossipsub messages ({:.2}% of the stream)\n\
             memory per node        {} KiB (process RSS / nodes)\n",
            self.nodes,
            self.joined,
            self.attached,
            p(&self.join_ms),
            self.max_depth,
            self.optimal_depth,
            self.mean_depth,
            self.packets_min,
            self.packets_p50,
            self.killed,
            self.receiving_at_end,
            self.repaired,
            self.orphans,
            p(&self.repair_ms),
            self.interruptions_outside,
            self.link_loss_permille.p50,
            self.link_loss_permille.p95,
            self.link_loss_permille.max,
            self.records_published,
            self.gossip_bytes_per_node_s,
            self.gossip_percent_of_stream,
            self.stream_bps / 1000,
            self.overlay_bytes_per_node_s,
            self.overlay_percent_of_stream,
            self.gossipsub_bytes_per_node_s,
            self.connections_opened,
            self.refresh_s.p50,
            self.refresh_s.p95,
            self.refresh_s.max,
            self.refresh_bytes_per_node_s,
            self.refresh_percent_of_stream,
            self.refresh_wire_bytes_per_node_s,
            self.refresh_wire_percent_of_stream,
            self.rss_kib_per_node,
        )
    }
}
