//! Compact storage of a view's records: a dense vector plus an index by id.
//!
//! Lookups dominate every decision (each step of a walk up the tree is two), and at a million
//! nodes a B-tree lookup costs several cache misses where this costs about two. Ids are
//! 64-bit hashes of peer ids in live use, indexed by a hash map; small ids (below a few times
//! the number of items, as the simulator and tests number their nodes) are indexed by a plain
//! vector instead, one read and 4 bytes per id instead of a hash probe and about 34 bytes. Nothing
//! iterates this store to make a decision, so its order never matters (decisions use the
//! ordered indexes in `view.rs`); iteration is in a deterministic order for a given history.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::id::NodeId;

/// Something stored under its own id.
pub(crate) trait Keyed {
    fn key(&self) -> NodeId;
}

/// A dense map from [`NodeId`] to `T`, which carries its own id (no second copy of the key
/// beside it, so an item's first cache line holds what walks read).
#[derive(Debug, Clone)]
pub(crate) struct Store<T> {
    items: Vec<T>,
    /// Slot + 1 of each small id (0: absent); see `dense_limit`.
    small: Vec<u32>,
    /// Slots of the other ids.
    index: HashMap<NodeId, u32, BuildHasherDefault<IdHasher>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: Vec::new(),
            small: Vec::new(),
            index: HashMap::default(),
        }
    }
}

/// Ids below this are indexed by position: the vector stays within a few times the number
/// of items whatever ids arrive (a hostile record with a huge id goes to the hash map).
fn dense_limit(items: usize) -> u64 {
    4 * items as u64 + 1024
}

impl<T: Keyed> Store<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, id: &NodeId) -> Option<&T> {
        self.slot(id).map(|i| &self.items[i])
    }

    /// The dense position of `id` (stable until the next removal).
    #[inline]
    pub fn slot(&self, id: &NodeId) -> Option<usize> {
        if let Some(&s) = usize::try_from(id.0).ok().and_then(|i| self.small.get(i))
            && s != 0
        {
            return Some(s as usize - 1);
        }
        if self.index.is_empty() {
            return None;
        }
        self.index.get(id).map(|&i| i as usize)
    }

    /// Points `id` at `slot`, in whichever index holds it (or, for a new id, should).
    fn set_slot(&mut self, id: NodeId, slot: u32) {
        let small = usize::try_from(id.0)
            .ok()
            .filter(|&i| i < self.small.len() || id.0 < dense_limit(self.items.len()));
        match small {
            Some(i) if !self.index.contains_key(&id) => {
                if i >= self.small.len() {
                    // Grow by half at least, so numbering nodes upwards costs amortised O(1).
                    let len = (i + 1).max(self.small.len() + self.small.len() / 2);
                    self.small.resize(len, 0);
                }
                self.small[i] = slot + 1;
            }
            _ => {
                self.index.insert(id, slot);
            }
        }
    }

    /// The item at a dense position.
    pub fn at(&self, slot: usize) -> &T {
        &self.items[slot]
    }

    pub fn contains_key(&self, id: &NodeId) -> bool {
        self.slot(id).is_some()
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, value: T) {
        let id = value.key();
        match self.slot(&id) {
            Some(i) => self.items[i] = value,
            None => {
                // More than 4 billion records cannot arrive: a view is capped far below that
                // by memory long before, so the index fits in u32.
                let i = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
                self.set_slot(id, i);
                self.items.push(value);
            }
        }
    }

    pub fn remove(&mut self, id: &NodeId) -> Option<T> {
        let i = self.slot(id)?;
        match usize::try_from(id.0)
            .ok()
            .and_then(|x| self.small.get_mut(x))
        {
            Some(s) if *s != 0 => *s = 0,
            _ => {
                self.index.remove(id);
            }
        }
        let value = self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            let moved = moved.key();
            self.set_slot(moved, i as u32);
        }
        Some(value)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.items.iter()
    }
}

/// Node ids are hashes of peer ids in live use but small counters in the simulator, so they are
/// mixed (the SplitMix64 finalizer) rather than used as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keyed for (NodeId, u64) {
        fn key(&self) -> NodeId {
            self.0
        }
    }

    #[test]
    fn insert_replace_remove() {
        let mut s = Store::default();
        for i in 0..10 {
            s.insert((NodeId(i), i * 10));
        }
        s.insert((NodeId(3), 33));
        assert_eq!(s.get(&NodeId(3)), Some(&(NodeId(3), 33)));
        assert_eq!(s.remove(&NodeId(0)), Some((NodeId(0), 0)));
        assert_eq!(s.remove(&NodeId(0)), None);
        // The last item moved into slot 0 and is still found.
        assert_eq!(s.get(&NodeId(9)), Some(&(NodeId(9), 90)));
        assert_eq!(s.len(), 9);
        let mut all: Vec<u64> = s.values().map(|&(_, v)| v).collect();
        all.sort();
        assert_eq!(all, vec![10, 20, 33, 40, 50, 60, 70, 80, 90]);
    }

    #[test]
    fn small_and_large_ids_mix() {
        // Small ids go to the vector, huge ones to the hash map; removals move items between
        // slots across both indexes.
        let mut s = Store::default();
        let ids: Vec<u64> = (0..200)
            .map(|i| if i % 3 == 0 { u64::MAX - i } else { i * 7 })
            .collect();
        for &i in &ids {
            s.insert((NodeId(i), i));
        }
        for &i in ids.iter().step_by(2) {
            assert_eq!(s.remove(&NodeId(i)), Some((NodeId(i), i)));
        }
        for (k, &i) in ids.iter().enumerate() {
            let want = (k % 2 == 1).then_some((NodeId(i), i));
            assert_eq!(s.get(&NodeId(i)).copied(), want, "id {i}");
        }
        // Back again, and a small id far beyond the vector's reach goes to the hash map.
        s.insert((NodeId(0), 1));
        s.insert((NodeId(1 << 40), 2));
        assert_eq!(s.get(&NodeId(0)), Some(&(NodeId(0), 1)));
        assert_eq!(s.get(&NodeId(1 << 40)), Some(&(NodeId(1 << 40), 2)));
        assert_eq!(s.len(), 102);
        assert!(s.small.len() < 4096);
    }
}
