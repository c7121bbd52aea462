//! What a run measures: counters kept while it runs ([`Tally`]), and the [`Report`] built from
//! them and the final tree.

use serde::Serialize;
use treecast_tree::{DETACHED, MAX_CHILDREN, Node, NodeRecord, StreamId, View};

use crate::config::{Config, Mode};

/// Bytes assumed for one request or answer (attach, accept, repair), including framing: the
/// requests carry two ids and a few flags.
pub const REQUEST_BYTES: u64 = 64;

/// Counters kept while a run goes.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Viewers that arrived (including replacements).
    pub joins: u64,
    /// Arrivals that found no free slot at first.
    pub unplaced_joins: u64,
    /// Viewers that left gracefully.
    pub leaves: u64,
    /// Viewers that crashed.
    pub crashes: u64,
    /// Parent changes of nodes already attached (repairs and promotions).
    pub reparents: u64,
    /// Swaps carried out.
    pub promotions: u64,
    /// Moves to a free slot higher up (with the whole subtree).
    pub moves: u64,
    /// Repair times of orphans, ms.
    pub repair_ms: Vec<f64>,
    /// Orphans whose plan and fallback both failed (they waited for a slot).
    pub unrepaired: u64,
    /// Sum over viewers of seconds without media because of a lost parent or a full tree.
    pub viewer_seconds_without_media: f64,
    /// Record publications (one per record version) and their encoded bytes.
    pub publications: u64,
    /// Encoded bytes of those publications.
    pub publication_bytes: u64,
    /// Request and answer messages (attach, repair, promotion).
    pub requests: u64,
    /// Sum over time of the number of nodes present, seconds.
    pub node_seconds: f64,
    /// Invariant checks run (one per step, plus the final ones).
    pub invariant_checks: u64,
    /// Of those, checks of the whole view rather than the nodes a step touched.
    pub full_checks: u64,
    /// Violations found.
    pub invariant_violations: u64,
    /// Of those, found by the final `check_settled` only (relations that disagree or depths
    /// that are wrong once the tree is quiet).
    pub settled_violations: u64,
    /// The first few violations, for the report.
    pub first_violations: Vec<String>,
}

impl Tally {
    /// Records the publications of a node's record versions, as the node leaves the view or
    /// the run ends: `seq + 1` versions (the join record is seq 0 and every change adds one).
    pub fn publications_of(&mut self, stream: &StreamId, node: &Node) {
        let versions = node.seq + 1;
        let len = NodeRecord {
            stream: stream.clone(),
            node: *node,
        }
        .encode()
        .len() as u64;
        self.publications += versions;
        self.publication_bytes += versions * len;
    }

    /// Records violations found by a check.
    pub fn violations<T: std::fmt::Debug>(&mut self, found: &[T], at: &str) {
        self.invariant_violations += found.len() as u64;
        for v in found
            .iter()
            .take(8usize.saturating_sub(self.first_violations.len()))
        {
            self.first_violations.push(format!("{at}: {v:?}"));
        }
    }
}

/// p50, p95 and max of a distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Of `values` (sorted here).
    pub fn of(values: &mut [f64]) -> Self {
        values.sort_by(f64::total_cmp);
        Percentiles {
            p50: nearest_rank(values, 0.50),
            p95: nearest_rank(values, 0.95),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Everything a run reports. `elapsed_ms` is the only field that depends on the machine.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Engine.
    pub mode: Mode,
    /// Seed.
    pub seed: u64,
    /// Viewers the scenario brings (replacements of leavers not counted).
    pub viewers: u64,
    /// The capacity mix.
    pub capacity_mix: String,
    /// Virtual seconds simulated.
    pub duration_s: f64,
    /// Viewers in the tree at the end.
    pub viewers_attached: u64,
    /// Viewers present but not connected to the root at the end (removed before the settled check).
    pub viewers_detached: u64,
    /// Arrivals, replacements included.
    pub joins: u64,
    /// Arrivals that found no free slot at first.
    pub unplaced_joins: u64,
    /// Graceful leaves.
    pub leaves: u64,
    /// Crashes.
    pub crashes: u64,
    /// Parent changes of attached nodes (repairs and promotions).
    pub reparents: u64,
    /// Promotions (swaps).
    pub promotions: u64,
    /// Moves to a free slot at least two levels higher, with the whole subtree.
    pub moves: u64,
    /// Orphans that re-attached.
    pub repairs: u64,
    /// Orphans that found no slot at once.
    pub unrepaired: u64,
    /// Repair time per orphan, ms: detection (crashes only) plus one round trip per target tried.
    pub repair_ms: Percentiles,
    /// Viewer-seconds without media (orphaned subtrees while repairing, viewers waiting for a slot).
    pub viewer_seconds_without_media: f64,
    /// Deepest viewer.
    pub max_depth: u16,
    /// Mean viewer depth.
    pub mean_depth: f64,
    /// 95th percentile of viewer depth.
    pub p95_depth: u16,
    /// Depth of the best possible tree for the attached viewers' capacities (null if they
    /// cannot all be fed).
    pub optimal_depth: Option<u16>,
    /// Viewers per depth, from depth 1.
    pub depth_histogram: Vec<u64>,
    /// Children of the broadcaster.
    pub root_fanout: u64,
    /// Used child slots over offered child slots, attached nodes.
    pub capacity_utilisation: f64,
    /// Record publications (versions of records, including liveness re-publications).
    pub publications: u64,
    /// Encoded bytes of those publications.
    pub publication_bytes: u64,
    /// Requests and answers (attach, repair, promotion).
    pub requests: u64,
    /// Per node and second: own publications sent to `gossip_fanout` peers, plus requests.
    pub control_msgs_per_node_s: f64,
    /// The bytes of those messages, per node and second.
    pub control_bytes_per_node_s: f64,
    /// Per node and second, the gossip bytes a node relays when every record reaches every
    /// node (each node keeps the whole view): all publications times `gossip_fanout`.
    pub gossip_relay_bytes_per_node_s: f64,
    /// Invariant checks run: one after every step (`View::check_nodes` over the nodes the step
    /// touched, or the whole view), plus `check_invariants` and `check_settled` at the end.
    pub invariant_checks: u64,
    /// Of those, checks of the whole view.
    pub full_checks: u64,
    /// Violations found: must be 0.
    pub invariant_violations: u64,
    /// Of those, found by the final settled check.
    pub settled_violations: u64,
    /// The first few violations.
    pub first_violations: Vec<String>,
    /// Wall-clock milliseconds the run took.
    pub elapsed_ms: u64,
}

/// The best possible depth for viewers with these child slots under a root with `root_slots`:
/// fill each level with the strongest remaining viewers first. `None` if they cannot all be fed.
pub fn optimal_depth(
    viewer_slots: impl IntoIterator<Item = usize>,
    root_slots: usize,
) -> Option<u16> {
    let mut count = [0u64; MAX_CHILDREN + 1];
    for s in viewer_slots {
        count[s.min(MAX_CHILDREN)] += 1;
    }
    let mut remaining: u64 = count.iter().sum();
    let mut slots = root_slots as u64;
    let mut depth = 0u16;
    while remaining > 0 {
        if slots == 0 {
            return None;
        }
        depth += 1;
        let mut take = slots.min(remaining);
        remaining -= take;
        slots = 0;
        for cap in (0..=MAX_CHILDREN).rev() {
            let n = take.min(count[cap]);
            count[cap] -= n;
            take -= n;
            slots += n * cap as u64;
        }
    }
    Some(depth)
}

/// Depth and capacity figures of the tree as it is.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Attached viewers.
    pub attached: u64,
    /// Present viewers not connected to the root.
    pub detached: u64,
    /// Deepest viewer.
    pub max_depth: u16,
    /// Mean depth.
    pub mean_depth: f64,
    /// 95th percentile depth.
    pub p95_depth: u16,
    /// Optimum for the attached viewers.
    pub optimal_depth: Option<u16>,
    /// Viewers per depth from 1.
    pub histogram: Vec<u64>,
    /// Root's children.
    pub root_fanout: u64,
    /// Used over offered slots.
    pub utilisation: f64,
}

/// Where [`Shape::of`] takes each node's depth from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depths {
    /// The depth each record claims: cheap, and right wherever `check_settled` passes (fast
    /// mode, whose settled check verifies every claim).
    Claimed,
    /// The distance to the root over agreed relations (`View::depth_of`): what media actually
    /// travels, even while claims lag behind (message-level mode).
    Measured,
}

impl Shape {
    /// Measures `view`, with depths as `depths` says.
    pub fn of(view: &View, depths: Depths) -> Shape {
        let mut s = Shape::default();
        let root = view.root();
        let (mut used, mut offered) = (0u64, 0u64);
        let mut slots = [0u64; MAX_CHILDREN + 1];
        let mut root_slots = 0;
        for n in view.nodes() {
            if Some(n.id) == root {
                root_slots = n.slots();
                s.root_fanout = n.children.len() as u64;
            } else if let Some(depth) = match depths {
                Depths::Claimed => (n.depth != DETACHED).then_some(n.depth),
                Depths::Measured => view.depth_of(n.id),
            } {
                s.attached += 1;
                let d = usize::from(depth);
                if s.histogram.len() < d {
                    s.histogram.resize(d, 0);
                }
                s.histogram[d - 1] += 1;
                slots[n.slots().min(MAX_CHILDREN)] += 1;
            } else {
                s.detached += 1;
                continue;
            }
            used += n.children.len() as u64;
            offered += n.slots() as u64;
        }
        s.max_depth = s.histogram.len() as u16;
        if s.attached > 0 {
            let total: u64 = s
                .histogram
                .iter()
                .enumerate()
                .map(|(i, &c)| (i as u64 + 1) * c)
                .sum();
            s.mean_depth = total as f64 / s.attached as f64;
            let rank = (0.95 * s.attached as f64).ceil() as u64;
            let mut acc = 0;
            for (i, &c) in s.histogram.iter().enumerate() {
                acc += c;
                if acc >= rank {
                    s.p95_depth = i as u16 + 1;
                    break;
                }
            }
        }
        let viewer_slots =
            (0..=MAX_CHILDREN).flat_map(|cap| std::iter::repeat_n(cap, slots[cap] as usize));
        s.optimal_depth = optimal_depth(viewer_slots, root_slots);
        s.utilisation = if offered == 0 {
            0.0
        } else {
            used as f64 / offered as f64
        };
        s
    }
}

/// Builds the report from the counters and the final tree's shape.
pub fn report(cfg: &Config, tally: Tally, shape: &Shape, elapsed_ms: u64) -> Report {
    let mut repair_ms = tally.repair_ms.clone();
    let fanout = u64::from(cfg.gossip_fanout);
    let node_s = tally.node_seconds.max(f64::MIN_POSITIVE);
    let msgs = tally.publications * fanout + tally.requests;
    let bytes = tally.publication_bytes * fanout + tally.requests * REQUEST_BYTES;
    Report {
        mode: cfg.mode,
        seed: cfg.seed,
        viewers: cfg.viewers,
        capacity_mix: cfg.capacity_mix.to_string(),
        duration_s: cfg.duration,
        viewers_attached: shape.attached,
        viewers_detached: shape.detached,
        joins: tally.joins,
        unplaced_joins: tally.unplaced_joins,
        leaves: tally.leaves,
        crashes: tally.crashes,
        reparents: tally.reparents,
        promotions: tally.promotions,
        moves: tally.moves,
        repairs: tally.repair_ms.len() as u64,
        unrepaired: tally.unrepaired,
        repair_ms: Percentiles::of(&mut repair_ms),
        viewer_seconds_without_media: tally.viewer_seconds_without_media,
        max_depth: shape.max_depth,
        mean_depth: shape.mean_depth,
        p95_depth: shape.p95_depth,
        optimal_depth: shape.optimal_depth,
        depth_histogram: shape.histogram.clone(),
        root_fanout: shape.root_fanout,
        capacity_utilisation: shape.utilisation,
        publications: tally.publications,
        publication_bytes: tally.publication_bytes,
        requests: tally.requests,
        control_msgs_per_node_s: msgs as f64 / node_s,
        control_bytes_per_node_s: bytes as f64 / node_s,
        gossip_relay_bytes_per_node_s: (tally.publication_bytes * fanout) as f64 / cfg.duration,
        invariant_checks: tally.invariant_checks,
        full_checks: tally.full_checks,
        invariant_violations: tally.invariant_violations,
        settled_violations: tally.settled_violations,
        first_violations: tally.first_violations,
        elapsed_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimal_depth_fills_levels_strongest_first() {
        assert_eq!(optimal_depth([], 4), Some(0));
        assert_eq!(optimal_depth([4; 4], 4), Some(1));
        assert_eq!(optimal_depth([4; 20], 4), Some(2));
        assert_eq!(optimal_depth([4; 21], 4), Some(3));
        // Four strong nodes under the root feed 16; the weak ones fill below.
        let mix = [4, 4, 4, 4].into_iter().chain([0; 16]);
        assert_eq!(optimal_depth(mix, 4), Some(2));
        // Only leaves: four of them fit, the fifth cannot be fed.
        assert_eq!(optimal_depth([0; 5], 4), None);
        // A chain of capacity-1 nodes.
        assert_eq!(optimal_depth([1; 6], 1), Some(6));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p95, p.max), (50.0, 95.0, 100.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
