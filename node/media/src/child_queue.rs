//! The per-child queue policy: bounded, never growing; a child that falls behind is dropped to
//! the next keyframe instead of slowing its siblings (GUIDE.md §3, "Media").
//!
//! When a child's queue is full, queueing more only delays everything after it, and dropping a
//! single packet breaks every frame until the next keyframe anyway. So the first packet that
//! finds the queue full marks the child *behind*: from then on every packet is dropped until a
//! keyframe start finds room, and the caller is told once to ask upstream for a keyframe
//! (through [`crate::keyframe_requests`]), so the wait is short.
//!
//! Two forms share one policy: [`Gate`] makes the decision for a queue the shell owns (a tokio
//! channel: pass `sender.capacity() > 0` as `has_room`), and [`ChildQueue`] is a fixed-capacity
//! queue with the policy built in.

use std::collections::VecDeque;

/// What happened to a packet offered to a child.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued (send it).
    Queued,
    /// Queued, and it ends a "behind" episode: the child resumes at this keyframe start.
    Resumed,
    /// Dropped: the child is behind and this is not a keyframe start (or there is still no room).
    Dropped,
    /// Dropped: the queue was full, the child is now behind. Ask upstream for a keyframe.
    FellBehind,
}

impl Admission {
    /// Whether the packet goes to the child.
    pub fn is_queued(self) -> bool {
        matches!(self, Admission::Queued | Admission::Resumed)
    }

    /// Whether the caller should request a keyframe upstream.
    pub fn wants_keyframe(self) -> bool {
        self == Admission::FellBehind
    }
}

/// Counters for one child.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets admitted.
    pub queued: u64,
    /// Packets dropped (full queue or behind).
    pub dropped: u64,
    /// Times the child fell behind.
    pub fell_behind: u64,
}

/// The drop-to-keyframe decision for one child, without the storage.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    behind: bool,
    stats: QueueStats,
}

impl Gate {
    /// A gate for a child that is keeping up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides on one packet. `keyframe_start` from [`crate::keyframe::Codec::is_keyframe_start`];
    /// `has_room` whether the child's queue can take one more packet right now.
    pub fn offer(&mut self, keyframe_start: bool, has_room: bool) -> Admission {
        let admission = match (self.behind, has_room) {
            (false, true) => Admission::Queued,
            (false, false) => {
                self.behind = true;
                self.stats.fell_behind += 1;
                Admission::FellBehind
            }
            (true, true) if keyframe_start => {
                self.behind = false;
                Admission::Resumed
            }
            (true, _) => Admission::Dropped,
        };
        if admission.is_queued() {
            self.stats.queued += 1;
        } else {
            self.stats.dropped += 1;
        }
        admission
    }

    /// Whether the child is behind (dropping until a keyframe).
    pub fn is_behind(&self) -> bool {
        self.behind
    }

    /// The counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }
}

/// A fixed-capacity FIFO of packets for one child with the [`Gate`] policy built in.
/// Allocates once, in [`ChildQueue::new`]; never grows.
#[derive(Debug, Clone)]
pub struct ChildQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
    gate: Gate,
}

impl<T> ChildQueue<T> {
    /// A queue of at most `capacity` packets (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ChildQueue {
            items: VecDeque::with_capacity(capacity),
            capacity,
            gate: Gate::new(),
        }
    }

    /// Offers a packet; it is stored only if the returned admission says so.
    pub fn push(&mut self, packet: T, keyframe_start: bool) -> Admission {
        let admission = self
            .gate
            .offer(keyframe_start, self.items.len() < self.capacity);
        if admission.is_queued() {
            self.items.push_back(packet);
        }
        admission
    }

    /// The oldest packet, to send to the child.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the child is behind (dropping until a keyframe).
    pub fn is_behind(&self) -> bool {
        self.gate.is_behind()
    }

    /// The counters.
    pub fn stats(&self) -> QueueStats {
        self.gate.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_queue_drops_until_a_keyframe_with_room() {
        let mut q = ChildQueue::new(2);
        assert_eq!(q.push(1, true), Admission::Queued);
        assert_eq!(q.push(2, false), Admission::Queued);
        let fell = q.push(3, false);
        assert_eq!(fell, Admission::FellBehind);
        assert!(fell.wants_keyframe());
        assert!(q.is_behind());
        assert_eq!(q.pop(), Some(1));
        // Room again, but no keyframe yet.
        assert_eq!(q.push(4, false), Admission::Dropped);
        assert_eq!(q.push(5, true), Admission::Resumed);
        assert!(!q.is_behind());
        // Full again: a second episode.
        assert_eq!(q.push(6, false), Admission::FellBehind);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(5));
        assert_eq!(q.pop(), None);
        assert_eq!(
            q.stats(),
            QueueStats {
                queued: 3,
                dropped: 3,
                fell_behind: 2
            }
        );
    }

    #[test]
    fn keyframe_without_room_keeps_waiting() {
        let mut gate = Gate::new();
        assert_eq!(gate.offer(false, false), Admission::FellBehind);
        assert_eq!(gate.offer(true, false), Admission::Dropped);
        assert_eq!(gate.offer(false, true), Admission::Dropped);
        assert_eq!(gate.offer(true, true), Admission::Resumed);
        assert_eq!(gate.offer(false, true), Admission::Queued);
        assert_eq!(gate.stats().fell_behind, 1);
    }

    proptest! {
        /// The queue never exceeds its capacity, delivers in order, counts every packet, and
        /// after falling behind delivers nothing until a keyframe start.
        #[test]
        fn bounded_ordered_and_resumes_at_keyframes(
            capacity in 1usize..8,
            ops in prop::collection::vec((any::<bool>(), prop::bool::weighted(0.1)), 1..300),
        ) {
            let mut q = ChildQueue::new(capacity);
            let mut delivered = Vec::new();
            let mut offered = 0u64;
            let mut behind = false;
            for (n, (push, keyframe)) in ops.into_iter().enumerate() {
                if push {
                    offered += 1;
                    let admission = q.push((n, keyframe), keyframe);
                    if behind && admission.is_queued() {
                        prop_assert!(keyframe, "resumed on a non-keyframe");
                    }
                    behind = q.is_behind();
                } else if let Some(item) = q.pop() {
                    delivered.push(item);
                }
                prop_assert!(q.len() <= capacity);
            }
            while let Some(item) = q.pop() { delivered.push(item); }
            prop_assert!(delivered.windows(2).all(|w| w[0].0 < w[1].0));
            let s = q.stats();
            prop_assert_eq!(s.queued + s.dropped, offered);
            prop_assert_eq!(s.queued as usize, delivered.len());
        }
    }
}
