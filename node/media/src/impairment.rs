//! A seeded, deterministic network impairment model for tests: loss, delay, jitter, reordering
//! and an optional rate limit. The shell puts it in front of the UDP socket; the same seed and
//! the same calls give the same verdicts, so a failing run replays exactly.

use std::time::Duration;

use crate::rng::SplitMix64;

/// What the impaired link does with one packet.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The packet is lost.
    Drop,
    /// Deliver it at this time (same epoch as `now`).
    DeliverAt(Duration),
}

/// Link behaviour. The default is a perfect link (no loss, no delay).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ImpairmentConfig {
    /// Probability that a packet is lost, in `[0, 1]` (clamped).
    pub loss: f64,
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]`. Jitter alone keeps packets in order
    /// (a later packet is never delivered before an earlier one), as on most real paths.
    pub jitter: Duration,
    /// Probability, in `[0, 1]`, that a packet is held back by `reorder_delay` on top of its
    /// delay and is overtaken by the packets behind it.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay: Duration,
    /// Link rate in bits per second; packets queue behind each other (no drop-tail). `None`
    /// means unlimited.
    pub rate_bps: Option<u64>,
}

/// The impairment state of one direction of one link.
#[derive(Debug, Clone)]
pub struct Impairment {
    config: ImpairmentConfig,
    rng: SplitMix64,
    /// Latest in-order delivery time: in-order packets are never delivered before it.
    last_in_order: Duration,
    /// When the rate-limited link finishes sending what it already accepted.
    link_free: Duration,
}

impl Impairment {
    /// A link with `config` whose random choices all derive from `seed`.
    pub fn new(config: ImpairmentConfig, seed: u64) -> Self {
        Impairment {
            config,
            rng: SplitMix64::new(seed),
            last_in_order: Duration::ZERO,
            link_free: Duration::ZERO,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ImpairmentConfig {
        &self.config
    }

    /// Decides the fate of a packet of `len` bytes sent at `now`. Call in send order.
    pub fn decide(&mut self, now: Duration, len: usize) -> Verdict {
        let c = self.config;
        // Draw every random number for every packet, whatever the outcome, so that changing
        // one knob does not reshuffle the others' choices for the same seed.
        let lost = self.rng.chance(c.loss);
        let jitter = self.rng.up_to(nanos(c.jitter));
        let reordered = self.rng.chance(c.reorder);
        if lost {
            return Verdict::Drop;
        }
        let mut sent = now;
        if let Some(rate) = c.rate_bps.filter(|r| *r > 0) {
            let start = now.max(self.link_free);
            let bits = u128::from(len as u64) * 8;
            let tx = Duration::from_nanos(
                u64::try_from(bits * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX),
            );
            self.link_free = start + tx;
            sent = self.link_free;
        }
        let at = sent + c.delay + Duration::from_nanos(jitter);
        if reordered {
            return Verdict::DeliverAt(at + c.reorder_delay);
        }
        let at = at.max(self.last_in_order);
        self.last_in_order = at;
        Verdict::DeliverAt(at)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn verdicts(config: ImpairmentConfig, seed: u64, n: u64) -> Vec<Verdict> {
        let mut link = Impairment::new(config, seed);
        (0..n).map(|i| link.decide(ms(i), 1200)).collect()
    }

    #[test]
    fn perfect_link_by_default() {
        let v = verdicts(ImpairmentConfig::default(), 1, 100);
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, v)| *v == Verdict::DeliverAt(ms(i as u64)))
        );
    }

    #[test]
    fn same_seed_same_verdicts() {
        let config = ImpairmentConfig {
            loss: 0.1,
            delay: ms(20),
            jitter: ms(5),
            reorder: 0.05,
            reorder_delay: ms(10),
            rate_bps: None,
        };
        assert_eq!(verdicts(config, 42, 1000), verdicts(config, 42, 1000));
        assert_ne!(verdicts(config, 42, 1000), verdicts(config, 43, 1000));
    }

    #[test]
    fn loss_rate_is_close_to_the_setting() {
        let config = ImpairmentConfig {
            loss: 0.05,
            ..Default::default()
        };
        let lost = verdicts(config, 9, 100_000)
            .iter()
            .filter(|v| **v == Verdict::Drop)
            .count();
        assert!((4_500..5_500).contains(&lost), "lost {lost}");
    }

    #[test]
    fn rate_limit_spaces_packets() {
        let config = ImpairmentConfig {
            rate_bps: Some(1_000_000),
            ..Default::default()
        };
        let mut link = Impairment::new(config, 0);
        // 1250 bytes at 1 Mb/s take 10 ms each; three sent at once leave 10 ms apart.
        let at: Vec<_> = (0..3).map(|_| link.decide(ms(0), 1250)).collect();
        assert_eq!(
            at,
            vec![
                Verdict::DeliverAt(ms(10)),
                Verdict::DeliverAt(ms(20)),
                Verdict::DeliverAt(ms(30))
            ]
        );
    }

    #[test]
    fn reordered_packets_are_overtaken() {
        let config = ImpairmentConfig {
            reorder: 0.2,
            reorder_delay: ms(5),
            ..Default::default()
        };
        let v = verdicts(config, 3, 1000);
        let overtaken = v
            .windows(2)
            .filter(|w| matches!(w, [Verdict::DeliverAt(a), Verdict::DeliverAt(b)] if b < a))
            .count();
        assert!((100..300).contains(&overtaken), "overtaken {overtaken}");
    }

    proptest! {
        /// Without reordering, delivery is in order and within [delay, delay + jitter] of the
        /// send time (no rate limit).
        #[test]
        fn jitter_keeps_order_and_bounds(
            seed in any::<u64>(),
            delay_ms in 0u64..100,
            jitter_ms in 0u64..50,
            gaps in prop::collection::vec(0u64..20, 1..200),
        ) {
            let config = ImpairmentConfig {
                loss: 0.1,
                delay: ms(delay_ms),
                jitter: ms(jitter_ms),
                ..Default::default()
            };
            let mut link = Impairment::new(config, seed);
            let mut now = Duration::ZERO;
            let mut last = Duration::ZERO;
            for gap in gaps {
                now += ms(gap);
                if let Verdict::DeliverAt(at) = link.decide(now, 100) {
                    prop_assert!(at >= last);
                    prop_assert!(at >= now + ms(delay_ms));
                    prop_assert!(at <= now + ms(delay_ms + jitter_ms));
                    last = at;
                }
            }
        }
    }
}
