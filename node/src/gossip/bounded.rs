//! A map with a size cap that forgets the least recently written entry first.
//!
//! The event loop keeps per-node state learned from the network (last accepted seq, which peer
//! speaks for a node); a hostile peer must not be able to grow it without bound.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// At most `cap` entries; inserting into a full map evicts the entry written longest ago.
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    cap: usize,
    next_stamp: u64,
    entries: HashMap<K, (V, u64)>,
    /// Write stamp -> key, oldest first: eviction in O(log n).
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    /// An empty map holding at most `cap` (at least 1) entries.
    pub(crate) fn new(cap: usize) -> Self {
        BoundedMap {
            cap: cap.max(1),
            next_stamp: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Sets `key` to `value`, marking it the most recently written.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some((_, old)) = self.entries.insert(key.clone(), (value, stamp)) {
            self.order.remove(&old);
        } else if self.entries.len() > self.cap
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.order.insert(stamp, key);
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (v, _))| (k, v))
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_written() {
        let mut m = BoundedMap::new(2);
        m.insert("a", 1);
        m.insert("b", 2);
        m.insert("a", 3); // a is now newer than b
        m.insert("c", 4);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(&"b"), None);
        assert_eq!(m.get(&"a"), Some(&3));
        assert_eq!(m.get(&"c"), Some(&4));
        for i in 0..100 {
            m.insert("x", i);
        }
        assert_eq!(m.len(), 2, "rewriting one key never grows the map");
        assert_eq!(m.order.len(), 2);
    }
}
