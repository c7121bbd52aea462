//! A per-track packet cache for answering NACKs (RFC 4585 §6.2.1) from children.
//!
//! The node keeps one per video track, keyed by the sequence number the track arrives with
//! (the parent's numbering); each child leg maps a child's NACK back to that numbering through
//! its munger (`Munger::incoming_seq`) and rewrites the cached packet for the leg. A ring of fixed capacity gives O(1) insert and lookup; each slot
//! remembers the extended (unwrapped) sequence number it holds, so a lookup never returns a
//! packet that a later packet with the same slot, or the same 16-bit number one wrap earlier,
//! should have replaced.

use bytes::Bytes;

/// Default capacity for a video track: about two seconds at 2.5 Mb/s.
pub const VIDEO_CAPACITY: usize = 512;
/// Default capacity for an audio track: about 2.5 s of 20 ms Opus packets.
pub const AUDIO_CAPACITY: usize = 128;
/// Largest capacity: half the sequence space, beyond which "older" and "newer" are ambiguous.
pub const MAX_CAPACITY: usize = 1 << 15;

/// Ring buffer of recent packets keyed by sequence number.
///
/// `T` is what the shell needs to resend a packet; by default the packet's `Bytes`. A shell
/// whose legs differ (SSRC, PT, extension ids) can store the upstream packet together with its
/// outgoing timestamp and rewrite it for the asking leg.
#[derive(Debug, Clone)]
pub struct PacketCache<T = Bytes> {
    slots: Box<[Option<Slot<T>>]>,
    /// Extended sequence number of the newest packet inserted.
    highest: Option<i64>,
}

#[derive(Debug, Clone)]
struct Slot<T> {
    seq: i64,
    packet: T,
}

impl PacketCache<Bytes> {
    /// A cache of [`VIDEO_CAPACITY`].
    pub fn video() -> Self {
        Self::new(VIDEO_CAPACITY)
    }

    /// A cache of [`AUDIO_CAPACITY`].
    pub fn audio() -> Self {
        Self::new(AUDIO_CAPACITY)
    }
}

impl<T> PacketCache<T> {
    /// A cache holding the newest `capacity` sequence numbers (clamped to 1..=[`MAX_CAPACITY`]).
    /// Allocates its slots once, here.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        PacketCache {
            slots: (0..capacity).map(|_| None).collect(),
            highest: None,
        }
    }

    /// How many consecutive sequence numbers the cache spans.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores `packet` under sequence number `seq`, replacing whatever held its slot.
    /// A packet older than the cache's window is ignored (it would evict a newer one).
    pub fn insert(&mut self, seq: u16, packet: T) {
        let ext = match self.highest {
            None => {
                let ext = (1 << 32) + i64::from(seq);
                self.highest = Some(ext);
                ext
            }
            Some(highest) => {
                let ext = extend(highest, seq);
                if ext > highest {
                    self.highest = Some(ext);
                } else if !self.in_window(highest, ext) {
                    return;
                }
                ext
            }
        };
        let index = self.index(ext);
        self.slots[index] = Some(Slot { seq: ext, packet });
    }

    /// The packet sent as `seq`, if it is still within the window.
    pub fn get(&self, seq: u16) -> Option<&T> {
        let highest = self.highest?;
        let ext = extend(highest, seq);
        if ext > highest || !self.in_window(highest, ext) {
            return None;
        }
        match &self.slots[self.index(ext)] {
            Some(slot) if slot.seq == ext => Some(&slot.packet),
            _ => None,
        }
    }

    /// Forgets every packet (the slots stay allocated).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
        self.highest = None;
    }

    fn in_window(&self, highest: i64, ext: i64) -> bool {
        highest - ext < self.slots.len() as i64
    }

    fn index(&self, ext: i64) -> usize {
        // ext >= 2^32 - 2^15 > 0, so the remainder is a valid index.
        (ext % self.slots.len() as i64) as usize
    }
}

/// Unwraps `seq` to the extended number nearest to `highest`.
fn extend(highest: i64, seq: u16) -> i64 {
    highest + i64::from(seq.wrapping_sub(highest as u16) as i16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn packet(tag: u64) -> Bytes {
        Bytes::copy_from_slice(&tag.to_be_bytes())
    }

    #[test]
    fn round_trip_and_eviction() {
        let mut cache = PacketCache::new(4);
        for seq in 10..16u16 {
            cache.insert(seq, packet(u64::from(seq)));
        }
        assert_eq!(cache.get(15), Some(&packet(15)));
        assert_eq!(cache.get(12), Some(&packet(12)));
        assert_eq!(cache.get(11), None, "evicted");
        assert_eq!(cache.get(16), None, "not yet sent");
    }

    #[test]
    fn wraps_around() {
        let mut cache = PacketCache::video();
        for i in 0..600u32 {
            let seq = (65_400 + i) as u16;
            cache.insert(seq, packet(u64::from(seq)));
        }
        let newest = (65_400u32 + 599) as u16;
        assert_eq!(cache.get(newest), Some(&packet(u64::from(newest))));
        assert_eq!(cache.get(65535), Some(&packet(65535)));
        assert_eq!(cache.get(0), Some(&packet(0)));
        assert_eq!(cache.get(65_400), None);
    }

    #[test]
    fn never_returns_a_packet_from_the_previous_wrap() {
        let mut cache = PacketCache::new(8);
        cache.insert(5, packet(5));
        // Jump far ahead (as after heavy loss): slot of 5 is untouched but out of the window.
        cache.insert(30_000, packet(30_000));
        assert_eq!(cache.get(5), None);
        // Go round the sequence space, then land right after 5 of the next wrap: 5 is now in
        // the window, and its slot still holds the packet from one wrap earlier.
        cache.insert(60_000, packet(60_000));
        cache.insert(65_530, packet(65_530));
        cache.insert(6, packet(6));
        assert_eq!(cache.get(5), None);
        assert_eq!(cache.get(6), Some(&packet(6)));
    }

    #[test]
    fn late_insert_fills_a_gap_but_not_beyond_the_window() {
        let mut cache = PacketCache::new(4);
        cache.insert(100, packet(100));
        cache.insert(102, packet(102));
        cache.insert(101, packet(101));
        assert_eq!(cache.get(101), Some(&packet(101)));
        cache.insert(96, packet(96)); // too old: would evict 100
        assert_eq!(cache.get(100), Some(&packet(100)));
        assert_eq!(cache.get(96), None);
    }

    #[test]
    fn clear_forgets() {
        let mut cache = PacketCache::audio();
        cache.insert(1, packet(1));
        cache.clear();
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.capacity(), AUDIO_CAPACITY);
    }

    proptest! {
        /// Against a model keyed by extended sequence number: a lookup returns exactly the last
        /// packet inserted under that number if it is within the window, and nothing otherwise.
        #[test]
        fn matches_a_model(
            capacity in 1usize..64,
            start in any::<u16>(),
            steps in prop::collection::vec(-20i64..40, 1..400),
        ) {
            let mut cache = PacketCache::new(capacity);
            let mut model: BTreeMap<i64, u64> = BTreeMap::new();
            let mut highest: Option<i64> = None;
            let mut cursor = i64::from(start) + (1 << 20);
            for (n, step) in steps.into_iter().enumerate() {
                cursor += step;
                let seq = cursor as u16;
                let tag = n as u64;
                let fits = highest.is_none_or(|h| cursor > h || h - cursor < capacity as i64);
                cache.insert(seq, packet(tag));
                if fits {
                    model.insert(cursor, tag);
                    highest = Some(highest.map_or(cursor, |h| h.max(cursor)));
                }
                let h = highest.unwrap_or(cursor);
                for probe in (h - 2 * capacity as i64)..=(h + 2) {
                    let expected = model
                        .get(&probe)
                        .filter(|_| probe <= h && h - probe < capacity as i64)
                        .map(|&tag| packet(tag));
                    prop_assert_eq!(cache.get(probe as u16).cloned(), expected, "probe {}", probe);
                }
            }
        }
    }
}
