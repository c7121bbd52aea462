//! Optional fast start: the packets since the last keyframe, for a child that just attached.
//!
//! A new child cannot decode until it has a keyframe. Instead of waiting for the next one (or
//! forcing the whole tree to produce one), the node hands it the current group of pictures
//! (GOP) at once. The cache is bounded by packet count and bytes; a GOP that outgrows either is
//! abandoned until the next keyframe, because a GOP without its keyframe is useless.
//!
//! Trade-off (why it is optional): the child receives the GOP in a burst and plays it from the
//! start, so it begins up to one GOP behind live until its jitter buffer catches up.

use std::collections::VecDeque;

/// Default bound on packets: two seconds of 2.5 Mb/s video in 1200-byte packets is ~520.
pub const DEFAULT_MAX_PACKETS: usize = 1024;
/// Default bound on bytes.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// The packets of the current GOP, oldest first. `T` is whatever the shell needs to replay a
/// packet (typically the `Bytes` plus its outgoing sequence number and timestamp).
#[derive(Debug, Clone)]
pub struct GopCache<T> {
    items: VecDeque<T>,
    bytes: usize,
    max_packets: usize,
    max_bytes: usize,
    /// Whether `items` holds a GOP from its keyframe start; false before the first keyframe and
    /// after an overflow.
    complete: bool,
}

impl<T> GopCache<T> {
    /// A cache bounded by `max_packets` (at least 1) and `max_bytes`. Allocates its slots once.
    pub fn new(max_packets: usize, max_bytes: usize) -> Self {
        let max_packets = max_packets.max(1);
        GopCache {
            items: VecDeque::with_capacity(max_packets),
            bytes: 0,
            max_packets,
            max_bytes,
            complete: false,
        }
    }

    /// Records a forwarded packet of `len` bytes. A keyframe start begins a new GOP.
    pub fn push(&mut self, item: T, len: usize, keyframe_start: bool) {
        if keyframe_start {
            self.clear();
            self.complete = true;
        } else if !self.complete {
            return;
        }
        if self.items.len() == self.max_packets || self.bytes + len > self.max_bytes {
            // Too long a GOP: give up until the next keyframe rather than keep a headless tail.
            self.clear();
            return;
        }
        self.items.push_back(item);
        self.bytes += len;
    }

    /// The current GOP from its keyframe start, oldest first; empty when there is none.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> {
        self.items.iter()
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no GOP is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets the GOP (for example when the track ends); the next keyframe starts a new one.
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.complete = false;
    }
}

impl<T> Default for GopCache<T> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKETS, DEFAULT_MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn held(g: &GopCache<u32>) -> Vec<u32> {
        g.iter().copied().collect()
    }

    #[test]
    fn holds_packets_since_the_last_keyframe() {
        let mut g = GopCache::default();
        g.push(1, 100, false); // before any keyframe: useless
        assert!(g.is_empty());
        g.push(2, 100, true);
        g.push(3, 100, false);
        assert_eq!(held(&g), vec![2, 3]);
        g.push(4, 100, true);
        g.push(5, 50, false);
        assert_eq!(held(&g), vec![4, 5]);
        assert_eq!(g.bytes(), 150);
    }

    #[test]
    fn overflow_abandons_the_gop_until_the_next_keyframe() {
        let mut g = GopCache::new(3, 1000);
        g.push(1, 10, true);
        g.push(2, 10, false);
        g.push(3, 10, false);
        g.push(4, 10, false); // fourth packet: over the count
        assert!(g.is_empty());
        g.push(5, 10, false);
        assert!(g.is_empty());
        g.push(6, 600, true);
        g.push(7, 600, false); // over the bytes
        assert!(g.is_empty());
        assert_eq!(g.bytes(), 0);
        g.push(8, 10, true);
        assert_eq!(held(&g), vec![8]);
    }

    proptest! {
        /// Always within bounds, and whatever is held starts with a keyframe start.
        #[test]
        fn bounded_and_starts_at_a_keyframe(
            ops in prop::collection::vec((0usize..500, prop::bool::weighted(0.1)), 1..400),
        ) {
            let mut g = GopCache::new(50, 5000);
            for (n, (len, keyframe)) in ops.into_iter().enumerate() {
                g.push((n, keyframe), len, keyframe);
                prop_assert!(g.len() <= 50 && g.bytes() <= 5000);
                if let Some(&(_, first_is_keyframe)) = g.iter().next() {
                    prop_assert!(first_is_keyframe);
                    prop_assert!(g.iter().skip(1).all(|(_, k)| !k));
                }
            }
        }
    }
}
