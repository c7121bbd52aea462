//! When a node's own record goes out: a record is a state, so only the newest one pending
//! matters, and changes close together go out as one.

use std::time::Duration;

use tokio::time::Instant;

use crate::gossip::envelope::TYPICAL_SEAL_OVERHEAD;
use treecast_tree::NodeRecord;

/// Least time between two publications of our record: changes within it go out together, as
/// one record (a record is a state, so only the newest matters). A join used to publish three
/// records (detached, attached, receiving) and a repair as many; every node verifies and merges
/// every record, so at 200 relays that was most of the overlay's work.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// How long an orphan's record that says it lost its parent waits for the record of its
/// repair, which replaces it if it comes first. Most repairs end within it, and the two
/// records cost every node two: after three interior relays of a 200-relay swarm were killed,
/// 8 of the 27 records published were such. Nobody needs the first to stay away from the lost
/// subtree: the lost node's own parent drops it from its record, and a relation its parent no
/// longer confirms is never counted. That parent's record is therefore never held: it is what
/// makes the lost subtree unreachable in every view. A repair that takes longer than the hold
/// still says so when the hold ends.
pub const DETACHED_HOLD: Duration = Duration::from_secs(1);

/// A first refresh pace per node (see `AgentConfig::refresh_per_node`) before our own figures
/// exist: so that refreshes cost `share` of the stream, with the stream's bitrate taken as the
/// median of what the receiving nodes in the view report (`kbps`, zeros ignored: a root
/// measures no upstream), our sealed record as `record_len` encoded bytes plus
/// [`TYPICAL_SEAL_OVERHEAD`], and each record byte as `copies` gossipsub bytes on the wire
/// (in and out, every copy). `None` when nobody reports a bitrate.
pub fn first_pace(
    kbps: impl IntoIterator<Item = u32>,
    record_len: usize,
    copies: f64,
    share: f64,
) -> Option<Duration> {
    let mut kbps: Vec<u32> = kbps.into_iter().filter(|&k| k > 0).collect();
    if kbps.is_empty() || share <= 0.0 {
        return None;
    }
    kbps.sort_unstable();
    let stream_bytes_s = f64::from(kbps[kbps.len() / 2]) * 1000.0 / 8.0;
    refresh_pace(
        (record_len + TYPICAL_SEAL_OVERHEAD) as f64 * copies,
        stream_bytes_s,
        share,
    )
}

/// The refresh pace per node at which every node's refreshes of `record_bytes` cost each node
/// `share` of a stream of `stream_bytes_s`, at most an hour.
pub fn refresh_pace(record_bytes: f64, stream_bytes_s: f64, share: f64) -> Option<Duration> {
    Duration::try_from_secs_f64((record_bytes / (share * stream_bytes_s)).min(3600.0)).ok()
}

/// The newest record not yet published, and when the next may go out.
#[derive(Debug)]
pub struct PublishPace {
    pending: Option<NodeRecord>,
    not_before: Instant,
    /// Whether the last record published had a parent.
    published_attached: bool,
    /// Since when a record without a parent, following one with, is held.
    held_since: Option<Instant>,
}

impl PublishPace {
    /// A pace whose first publication may go out at `first`.
    pub fn new(first: Instant) -> Self {
        PublishPace {
            pending: None,
            not_before: first,
            published_attached: false,
            held_since: None,
        }
    }

    /// Our newest record, replacing any still pending.
    pub fn offer(&mut self, record: NodeRecord) {
        self.pending = Some(record);
    }

    /// The record to publish at `now`, if one is pending and its time has come.
    pub fn due(&mut self, now: Instant) -> Option<NodeRecord> {
        if now < self.not_before {
            return None;
        }
        let record = self.pending.as_ref()?;
        // A record without a parent after one with: we lost our parent, and the record of the
        // repair usually follows within DETACHED_HOLD (a root never has a parent to lose).
        let attached = record.node.parent.is_some();
        if !attached && self.published_attached {
            let since = *self.held_since.get_or_insert(now);
            if now.duration_since(since) < DETACHED_HOLD {
                return None;
            }
        }
        self.held_since = None;
        self.published_attached = attached;
        self.not_before = now + PUBLISH_EVERY;
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use treecast_tree::{Node, NodeId, Role, StreamId};

    fn record(seq: u64, parent: Option<u64>) -> NodeRecord {
        let mut node = Node::new(NodeId(7), Role::Relay, 4);
        node.seq = seq;
        node.parent = parent.map(NodeId);
        node.depth = if parent.is_some() {
            2
        } else {
            treecast_tree::DETACHED
        };
        NodeRecord {
            stream: StreamId::new("s").unwrap(),
            node,
        }
    }

    /// The seqs published when `offers` (at ms, seq, parent) are made and the pace is asked
    /// every 50 ms for 5 s.
    fn published(offers: &[(u64, u64, Option<u64>)]) -> Vec<(u64, u64)> {
        let t0 = Instant::now();
        let mut pace = PublishPace::new(t0);
        let mut out = Vec::new();
        for ms in (0..5000).step_by(50) {
            for &(_, seq, parent) in offers.iter().filter(|o| o.0 == ms) {
                pace.offer(record(seq, parent));
            }
            if let Some(r) = pace.due(t0 + Duration::from_millis(ms)) {
                out.push((ms, r.node.seq));
            }
        }
        out
    }

    #[test]
    fn a_first_pace_follows_the_median_reported_bitrate() {
        // 56 kbit/s is 7,000 B/s; 0.5% of it 35 B/s; a record of 75 + 125 = 200 bytes, so
        // one node's refresh per 200/35 s. The root's 0 and the outlier do not count.
        let pace = first_pace([0, 56, 56, 55, 57, 3000], 75, 1.0, 0.005).unwrap();
        assert_eq!(pace.as_millis(), 5714, "{pace:?}");
        // Each record byte 4 bytes on the wire: a refresh four times as rare.
        let pace = first_pace([56], 75, 4.0, 0.005).unwrap();
        assert_eq!(pace.as_millis(), 22857, "{pace:?}");
        assert_eq!(first_pace([0, 0], 75, 1.0, 0.005), None);
        assert_eq!(first_pace([], 75, 1.0, 0.005), None);
    }

    #[test]
    fn changes_within_the_interval_go_out_as_one() {
        let out = published(&[(0, 1, Some(1)), (100, 2, Some(1)), (200, 3, Some(1))]);
        assert_eq!(out, vec![(0, 1), (500, 3)]);
    }

    #[test]
    fn a_lost_parent_is_not_published_when_the_repair_follows_within_the_hold() {
        // Attached, then detached at 2 s, repaired at 2.6 s: the detached record never goes out.
        let out = published(&[(0, 1, Some(1)), (2000, 2, None), (2600, 3, Some(9))]);
        assert_eq!(out, vec![(0, 1), (2600, 3)]);
    }

    #[test]
    fn a_lost_parent_is_published_once_the_hold_is_over() {
        let out = published(&[(0, 1, Some(1)), (2000, 2, None), (3500, 3, Some(9))]);
        assert_eq!(out, vec![(0, 1), (3000, 2), (3500, 3)]);
    }

    #[test]
    fn a_newcomer_without_a_parent_yet_is_published_at_once() {
        let out = published(&[(0, 1, None), (300, 2, Some(1))]);
        assert_eq!(out, vec![(0, 1), (500, 2)]);
    }
}
