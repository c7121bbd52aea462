//! Compact storage of a view's records: a dense vector plus a hash index by id.
//!
//! Lookups dominate every decision (each step of a walk up the tree is two), and at a million
//! nodes a B-tree lookup costs several cache misses where this costs about two. Nothing
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
    index: HashMap<NodeId, u32, BuildHasherDefault<IdHasher>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<T: Keyed> Store<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, id: &NodeId) -> Option<&T> {
        let &i = self.index.get(id)?;
        self.items.get(i as usize)
    }

    /// The dense position of `id` (stable until the next removal).
    pub fn slot(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).map(|&i| i as usize)
    }

    /// The item at a dense position.
    pub fn at(&self, slot: usize) -> &T {
        &self.items[slot]
    }

    pub fn contains_key(&self, id: &NodeId) -> bool {
        self.index.contains_key(id)
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, value: T) {
        let id = value.key();
        match self.index.get(&id) {
            Some(&i) => self.items[i as usize] = value,
            None => {
                // More than 4 billion records cannot arrive: a view is capped far below that
                // by memory long before, so the index fits in u32.
                let i = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
                self.index.insert(id, i);
                self.items.push(value);
            }
        }
    }

    pub fn remove(&mut self, id: &NodeId) -> Option<T> {
        let i = self.index.remove(id)? as usize;
        let value = self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            self.index.insert(moved.key(), i as u32);
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
}
