//! Merging keyframe requests (PLI, RFC 4585 §6.3.1; FIR, RFC 5104 §4.3.1) from many children
//! into a rate-limited stream of requests upstream.
//!
//! Children ask in bursts (every new viewer asks, often several times: `notes/dependencies.md`
//! pitfall 7), and a keyframe costs the whole tree bandwidth, so each track sends at most one
//! request upstream per `min_interval` (500 ms, as LiveKit and Galène do). A request inside the
//! interval is remembered and sent when the interval ends, unless a keyframe arrived meanwhile:
//! that keyframe reaches every child, so the request is satisfied.
//!
//! The shell calls [`KeyframeRequests::request`] for each PLI/FIR, arms a timer at
//! [`KeyframeRequests::next_deadline`], calls [`KeyframeRequests::poll`] when it fires, and
//! [`KeyframeRequests::keyframe_arrived`] when the upstream delivers a keyframe start.

use std::time::Duration;

/// The default minimum spacing of upstream requests per track.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Send one keyframe request (PLI or FIR) upstream now.
#[must_use = "the request must be sent upstream"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendNow;

/// Counters, for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Requests received from children (and local callers).
    pub received: u64,
    /// Requests sent upstream.
    pub sent: u64,
    /// Requests that were held back because one was sent less than `min_interval` ago.
    pub coalesced: u64,
    /// Held-back requests dropped because a keyframe arrived first.
    pub satisfied: u64,
}

/// Rate limiter and coalescer of keyframe requests for one track.
#[derive(Debug, Clone)]
pub struct KeyframeRequests {
    min_interval: Duration,
    last_sent: Option<Duration>,
    pending: bool,
    stats: RequestStats,
}

impl KeyframeRequests {
    /// At most one request upstream per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        KeyframeRequests {
            min_interval,
            last_sent: None,
            pending: false,
            stats: RequestStats::default(),
        }
    }

    /// A child (or the node itself, for a new child) asks for a keyframe at `now`.
    /// Returns [`SendNow`] if a request may go upstream at once; otherwise the request is
    /// held until [`KeyframeRequests::next_deadline`].
    pub fn request(&mut self, now: Duration) -> Option<SendNow> {
        self.stats.received += 1;
        if self.may_send(now) {
            return Some(self.send(now));
        }
        self.pending = true;
        self.stats.coalesced += 1;
        None
    }

    /// A keyframe start arrived from upstream: a held request is satisfied and dropped.
    pub fn keyframe_arrived(&mut self) {
        if self.pending {
            self.pending = false;
            self.stats.satisfied += 1;
        }
    }

    /// Sends the held request if its interval has ended.
    pub fn poll(&mut self, now: Duration) -> Option<SendNow> {
        (self.pending && self.may_send(now)).then(|| self.send(now))
    }

    /// When to call [`KeyframeRequests::poll`]; `None` when nothing is held.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.pending.then(|| {
            self.last_sent
                .map_or(Duration::ZERO, |t| t + self.min_interval)
        })
    }

    /// Whether a request is held back.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// The counters.
    pub fn stats(&self) -> RequestStats {
        self.stats
    }

    fn may_send(&self, now: Duration) -> bool {
        self.last_sent
            .is_none_or(|last| now.saturating_sub(last) >= self.min_interval)
    }

    fn send(&mut self, now: Duration) -> SendNow {
        self.last_sent = Some(now);
        self.pending = false;
        self.stats.sent += 1;
        SendNow
    }
}

impl Default for KeyframeRequests {
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
    fn first_request_goes_at_once_and_a_burst_becomes_one_more() {
        let mut k = KeyframeRequests::default();
        assert_eq!(k.request(ms(1000)), Some(SendNow));
        assert_eq!(k.next_deadline(), None);
        for t in [1010, 1100, 1200] {
            assert_eq!(k.request(ms(t)), None);
        }
        assert_eq!(k.next_deadline(), Some(ms(1500)));
        assert_eq!(k.poll(ms(1499)), None);
        assert_eq!(k.poll(ms(1500)), Some(SendNow));
        assert_eq!(k.poll(ms(1600)), None);
        assert_eq!(
            k.stats(),
            RequestStats {
                received: 4,
                sent: 2,
                coalesced: 3,
                satisfied: 0
            }
        );
    }

    #[test]
    fn a_keyframe_clears_the_held_request() {
        let mut k = KeyframeRequests::default();
        let _ = k.request(ms(0));
        assert_eq!(k.request(ms(100)), None);
        assert!(k.is_pending());
        k.keyframe_arrived();
        assert_eq!(k.next_deadline(), None);
        assert_eq!(k.poll(ms(600)), None);
        assert_eq!(k.stats().satisfied, 1);
    }

    #[test]
    fn a_request_after_the_interval_goes_at_once() {
        let mut k = KeyframeRequests::new(ms(200));
        let _ = k.request(ms(0));
        assert_eq!(k.request(ms(200)), Some(SendNow));
        assert_eq!(k.request(ms(1000)), Some(SendNow));
    }

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Request,
        Keyframe,
    }

    proptest! {
        /// Sends are at least `min_interval` apart, and every request is answered by a send no
        /// later than `min_interval` after it, or by a keyframe before that send.
        #[test]
        fn rate_limited_and_never_forgotten(
            events in prop::collection::vec(
                (0u64..300, prop_oneof![3 => Just(Event::Request), 1 => Just(Event::Keyframe)]),
                1..100,
            ),
        ) {
            let min = ms(500);
            let mut k = KeyframeRequests::new(min);
            let mut now = Duration::ZERO;
            let mut sends: Vec<Duration> = Vec::new();
            let mut unanswered: Option<Duration> = None; // oldest request not yet covered
            for (gap, event) in events {
                let next = now + ms(gap);
                // Fire the timer if it falls before the next event, as the shell would.
                if let Some(deadline) = k.next_deadline().filter(|d| *d <= next)
                    && k.poll(deadline.max(now)).is_some()
                {
                    sends.push(deadline.max(now));
                    unanswered = None;
                }
                now = next;
                match event {
                    Event::Request => {
                        if k.request(now).is_some() {
                            sends.push(now);
                            unanswered = None;
                        } else {
                            unanswered.get_or_insert(now);
                        }
                    }
                    Event::Keyframe => {
                        k.keyframe_arrived();
                        unanswered = None;
                    }
                }
                if let Some(asked) = unanswered {
                    let deadline = k.next_deadline();
                    prop_assert!(deadline.is_some(), "a held request has a deadline");
                    prop_assert!(deadline.is_some_and(|d| d <= asked + min));
                }
            }
            for pair in sends.windows(2) {
                prop_assert!(pair[1] - pair[0] >= min);
            }
        }
    }
}
