//! Loss on a received RTP stream, measured by the receiver itself, per interval.
//!
//! The figure is RFC 3550's *fraction lost* (section 6.4.1, appendix A.3): over an interval,
//! the packets expected (from the highest sequence number seen) against those received, in
//! 1/256. A packet resent after a NACK and arriving in time counts as received, so this is the
//! loss the NACK repair left, which is what a viewer sees. A late packet of an earlier interval
//! counts in the interval it arrives in, as in RFC 3550; a duplicate may make an interval's
//! count exceed what was expected, which reads as no loss.
//!
//! Why the node measures it rather than reading its own receiver reports: webrtc generates
//! them below the application's interceptor, so they never pass the node's RTCP tap, and a
//! parent never sends one to a child. The child's record carries this figure, and that is how
//! a parent that does not deliver what it claims is found out (`treecast-tree`'s
//! `View::is_struggling`).

use std::time::Duration;

/// How long one interval lasts by default: about a receiver report's period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Least packets expected in an interval for a figure: fewer make it noise (an audio-only
/// pause, a keyframe wait), and the interval runs on.
const MIN_EXPECTED: u64 = 10;

/// The loss meter of one RTP stream (one SSRC).
#[derive(Debug, Clone)]
pub struct LossMeter {
    interval: Duration,
    /// Highest extended sequence number seen, if any packet was.
    highest: Option<i64>,
    /// Highest extended sequence number at the start of the interval (exclusive).
    base: i64,
    received: u64,
    started: Duration,
}

impl LossMeter {
    /// A meter closing an interval every `interval` (at the first packet after it ends).
    pub fn new(interval: Duration) -> Self {
        LossMeter {
            interval,
            highest: None,
            base: 0,
            received: 0,
            started: Duration::ZERO,
        }
    }

    /// Counts a packet with sequence number `seq` received at `now` (any epoch, not going
    /// back). Returns the fraction lost in 1/256 when this packet closes an interval.
    pub fn packet(&mut self, seq: u16, now: Duration) -> Option<u8> {
        let Some(highest) = self.highest else {
            let ext = i64::from(seq) + (1 << 16);
            self.highest = Some(ext);
            self.base = ext - 1;
            self.received = 1;
            self.started = now;
            return None;
        };
        let ext = highest + i64::from(seq.wrapping_sub(highest as u16) as i16);
        let top = highest.max(ext);
        self.highest = Some(top);
        self.received += 1;
        if now.saturating_sub(self.started) < self.interval {
            return None;
        }
        let expected = u64::try_from(top - self.base).unwrap_or(0);
        if expected < MIN_EXPECTED {
            return None;
        }
        let lost = expected.saturating_sub(self.received);
        self.base = top;
        self.received = 0;
        self.started = now;
        Some(((lost * 256) / expected).min(255) as u8)
    }
}

impl Default for LossMeter {
    fn default() -> Self {
        LossMeter::new(DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `seqs`, one every 10 ms, and returns the figures.
    fn feed(m: &mut LossMeter, seqs: impl IntoIterator<Item = u16>) -> Vec<u8> {
        seqs.into_iter()
            .enumerate()
            .filter_map(|(i, s)| m.packet(s, ms(i as u64 * 10)))
            .collect()
    }

    #[test]
    fn no_loss_reads_zero() {
        let mut m = LossMeter::default();
        let figures = feed(&mut m, 0..500);
        assert_eq!(figures.len(), 4, "{figures:?}");
        assert!(figures.iter().all(|&f| f == 0), "{figures:?}");
    }

    #[test]
    fn every_other_packet_lost_reads_half() {
        let mut m = LossMeter::default();
        let figures = feed(&mut m, (0..1000u16).step_by(2));
        assert!(!figures.is_empty());
        for f in &figures[1..] {
            assert!((126..=130).contains(f), "{figures:?}");
        }
    }

    #[test]
    fn wraps_around() {
        let mut m = LossMeter::default();
        // 65000.. through the wrap, every fourth packet missing.
        let seqs = (0..800u32)
            .map(|i| (65_000 + i) as u16)
            .filter(|s| s % 4 != 0);
        let figures = feed(&mut m, seqs);
        assert!(!figures.is_empty());
        for f in &figures[1..] {
            assert!((60..=68).contains(f), "{figures:?}");
        }
    }

    #[test]
    fn a_resent_packet_fills_its_gap() {
        let mut m = LossMeter::default();
        // 0..200 over 2 s, 50 and 51 missing at first and resent 30 ms later.
        let mut seqs: Vec<u16> = (0..200).filter(|s| *s != 50 && *s != 51).collect();
        let at = seqs.iter().position(|&s| s == 54).unwrap();
        seqs.insert(at, 51);
        seqs.insert(at, 50);
        assert!(feed(&mut m, seqs).iter().all(|&f| f == 0));
    }

    #[test]
    fn too_few_packets_give_no_figure() {
        let mut m = LossMeter::default();
        // One packet every 200 ms: 5 a second, under MIN_EXPECTED.
        let figures: Vec<u8> = (0..20u16)
            .filter_map(|s| m.packet(s * 2, ms(u64::from(s) * 200)))
            .collect();
        // The interval runs on until 10 are expected.
        assert!(!figures.is_empty());
        assert!(
            figures.iter().all(|&f| (110..=136).contains(&f)),
            "{figures:?}"
        );
    }

    proptest! {
        /// Whatever arrives (hostile sequence numbers included), the meter never panics and
        /// every figure is a fraction.
        #[test]
        fn any_sequence_is_safe(seqs in proptest::collection::vec(any::<u16>(), 0..2000)) {
            let mut m = LossMeter::default();
            for (i, s) in seqs.into_iter().enumerate() {
                let _ = m.packet(s, ms(i as u64));
            }
        }

        /// With `drop` packets of every 64 dropped (in one burst), the figures average that
        /// share.
        #[test]
        fn the_figure_is_the_share_dropped(drop in 0u64..32, start in any::<u16>()) {
            let mut m = LossMeter::default();
            let seqs = (0..3000u32)
                .filter(|i| u64::from(*i % 64) >= drop)
                .map(|i| start.wrapping_add(i as u16));
            let figures = feed(&mut m, seqs);
            let want = drop * 256 / 64;
            let later = &figures[1..];
            let mean = later.iter().map(|&f| u64::from(f)).sum::<u64>() / later.len() as u64;
            prop_assert!(mean.abs_diff(want) <= 4, "{figures:?} want {want}");
        }
    }
}
