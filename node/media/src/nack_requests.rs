//! Merging the NACKs a node forwards upstream (RFC 4585 §6.2.1) on behalf of its children.
//!
//! A child NACKs what it did not get; the node answers from its packet cache
//! ([`crate::cache`]). A sequence number the cache lacks was lost on the node's own upstream
//! leg, and every child that shares the loss asks for it, each several times while its own
//! NACK timer runs. Galène forwards such a miss to the parent; so do we, but merged: a
//! sequence number asked upstream is not asked again for `min_interval` (about one round trip
//! to the parent, so a retransmission already on its way is not requested twice), and all
//! numbers waiting at one moment go up in one NACK packet.
//!
//! The shell calls [`NackRequests::request`] for each miss and [`NackRequests::drain`] when it
//! is about to send; both take the time since an arbitrary epoch.

use std::collections::VecDeque;
use std::time::Duration;

/// The default spacing of two upstream requests for the same sequence number.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Sequence numbers remembered as recently asked; older ones may be asked again at once.
pub const HISTORY: usize = 512;

/// Sequence numbers waiting to go upstream, at most; beyond, a request is dropped (the child
/// asks again).
pub const MAX_PENDING: usize = 256;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Queued for the next NACK upstream.
    Queued,
    /// Already queued, or asked upstream less than `min_interval` ago: merged.
    Merged,
    /// The queue is full: dropped.
    Dropped,
}

/// Counters, for the status page and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Requests received (cache misses).
    pub received: u64,
    /// Sequence numbers sent upstream.
    pub sent: u64,
    /// Requests merged into one already queued or recently sent.
    pub merged: u64,
    /// Requests dropped because the queue was full.
    pub dropped: u64,
}

/// The merger for one track's upstream NACKs. Bounded: at most [`MAX_PENDING`] waiting and
/// [`HISTORY`] remembered.
#[derive(Debug, Clone)]
pub struct NackRequests {
    min_interval: Duration,
    /// Waiting to be sent, in arrival order, no duplicates.
    pending: Vec<u16>,
    /// Recently sent, oldest first.
    sent: VecDeque<(u16, Duration)>,
    stats: NackStats,
}

impl NackRequests {
    /// A merger that asks for one sequence number at most once per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        NackRequests {
            min_interval,
            pending: Vec::new(),
            sent: VecDeque::new(),
            stats: NackStats::default(),
        }
    }

    /// A child's NACK for `seq` (in the upstream numbering) missed the cache at `now`.
    pub fn request(&mut self, seq: u16, now: Duration) -> Requested {
        self.stats.received += 1;
        let recently_sent = self
            .sent
            .iter()
            .any(|&(s, at)| s == seq && now.saturating_sub(at) < self.min_interval);
        if recently_sent || self.pending.contains(&seq) {
            self.stats.merged += 1;
            return Requested::Merged;
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.dropped += 1;
            return Requested::Dropped;
        }
        self.pending.push(seq);
        Requested::Queued
    }

    /// The sequence numbers to NACK upstream now, sorted (wrap-aware, oldest first), and
    /// remembered as sent at `now`. Empty when nothing waits.
    pub fn drain(&mut self, now: Duration) -> Vec<u16> {
        let mut seqs = std::mem::take(&mut self.pending);
        if let Some(&first) = seqs.first() {
            // Sort by distance from the first request so a wrap (65535, 0) stays in order.
            seqs.sort_by_key(|&s| s.wrapping_sub(first).wrapping_add(0x8000));
        }
        for &s in &seqs {
            if self.sent.len() == HISTORY {
                self.sent.pop_front();
            }
            self.sent.push_back((s, now));
        }
        self.stats.sent += seqs.len() as u64;
        seqs
    }

    /// Whether anything waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> NackStats {
        self.stats
    }
}

impl Default for NackRequests {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn merges_duplicates_and_batches() {
        let mut n = NackRequests::default();
        assert_eq!(n.request(10, ms(0)), Requested::Queued);
        assert_eq!(n.request(12, ms(1)), Requested::Queued);
        assert_eq!(n.request(10, ms(2)), Requested::Merged, "already queued");
        assert_eq!(n.drain(ms(3)), vec![10, 12]);
        assert!(n.is_empty());
        assert_eq!(n.drain(ms(4)), Vec::<u16>::new());
        // A second child asks for 10 while its retransmission is on the way: merged.
        assert_eq!(n.request(10, ms(50)), Requested::Merged);
        // After the interval the retransmission was lost too: ask again.
        assert_eq!(n.request(10, ms(103)), Requested::Queued);
        assert_eq!(n.drain(ms(104)), vec![10]);
        assert_eq!(
            n.stats(),
            NackStats {
                received: 5,
                sent: 3,
                merged: 2,
                dropped: 0
            }
        );
    }

    #[test]
    fn sorted_across_a_wrap() {
        let mut n = NackRequests::default();
        for s in [1, 65_534, 0, 65_535] {
            let _ = n.request(s, ms(0));
        }
        assert_eq!(n.drain(ms(0)), vec![65_534, 65_535, 0, 1]);
    }

    #[test]
    fn bounded() {
        let mut n = NackRequests::default();
        for s in 0..MAX_PENDING as u16 {
            assert_eq!(n.request(s, ms(0)), Requested::Queued);
        }
        assert_eq!(n.request(9999, ms(0)), Requested::Dropped);
        assert_eq!(n.drain(ms(0)).len(), MAX_PENDING);
    }

    proptest! {
        /// Whatever arrives: nothing is sent twice within the interval, nothing waits twice,
        /// and the memory stays bounded.
        #[test]
        fn never_asks_twice_within_the_interval(
            ops in prop::collection::vec((any::<bool>(), 0u16..64, 0u64..30), 1..500),
        ) {
            let mut n = NackRequests::default();
            let mut now = Duration::ZERO;
            let mut last_sent: std::collections::BTreeMap<u16, Duration> = Default::default();
            for (drain, seq, step) in ops {
                now += ms(step);
                if drain {
                    let seqs = n.drain(now);
                    let mut unique = seqs.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    prop_assert_eq!(unique.len(), seqs.len());
                    for s in seqs {
                        if let Some(&at) = last_sent.get(&s) {
                            prop_assert!(now - at >= DEFAULT_MIN_INTERVAL,
                                "{} asked again after {:?}", s, now - at);
                        }
                        last_sent.insert(s, now);
                    }
                } else {
                    let _ = n.request(seq, now);
                }
                prop_assert!(n.pending.len() <= MAX_PENDING && n.sent.len() <= HISTORY);
            }
        }
    }
}
