//! How much a child may make its parent resend.
//!
//! A NACK is 4 bytes per 17 sequence numbers; each answered number costs a whole packet. A
//! child that NACKs everything (broken or hostile) would make its parent send many times the
//! stream. The budget lets a leg resend at most a fixed share of what it forwards, with a burst
//! allowance for a loss burst: real loss needs a few percent, so the default share (50%)
//! never limits honest repair, and a NACK flood costs the parent at most 1.5x the stream.

/// The default share of forwarded packets that may be resent, in percent.
pub const DEFAULT_SHARE_PERCENT: u32 = 50;

/// The default burst: resends allowed at once (the budget starts full).
pub const DEFAULT_BURST: u32 = 256;

/// A token bucket filled by forwarded packets and drained by resent ones.
#[derive(Debug, Clone)]
pub struct RetransmitBudget {
    /// In hundredths of a packet.
    tokens: u32,
    share_percent: u32,
    max: u32,
}

impl RetransmitBudget {
    /// Each forwarded packet earns `share_percent` hundredths of a resend, up to `burst`
    /// resends banked.
    pub fn new(share_percent: u32, burst: u32) -> Self {
        let max = burst.saturating_mul(100);
        RetransmitBudget {
            tokens: max,
            share_percent,
            max,
        }
    }

    /// One packet was forwarded.
    pub fn forwarded(&mut self) {
        self.tokens = self.tokens.saturating_add(self.share_percent).min(self.max);
    }

    /// Whether one packet may be resent now; spends it if so.
    #[must_use]
    pub fn try_resend(&mut self) -> bool {
        if self.tokens >= 100 {
            self.tokens -= 100;
            true
        } else {
            false
        }
    }
}

impl Default for RetransmitBudget {
    fn default() -> Self {
        Self::new(DEFAULT_SHARE_PERCENT, DEFAULT_BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_share_of_forwarded() {
        let mut b = RetransmitBudget::new(50, 8);
        assert_eq!((0..10).filter(|_| b.try_resend()).count(), 8, "the burst");
        for _ in 0..10 {
            b.forwarded();
        }
        assert_eq!(
            (0..10).filter(|_| b.try_resend()).count(),
            5,
            "half of 10 forwarded"
        );
        for _ in 0..1000 {
            b.forwarded();
        }
        assert_eq!(
            (0..1000).filter(|_| b.try_resend()).count(),
            8,
            "banked up to the burst"
        );
    }

    #[test]
    fn a_flood_costs_at_most_the_share() {
        let mut b = RetransmitBudget::default();
        let mut resent = 0u32;
        for _ in 0..10_000 {
            b.forwarded();
            // The child asks for 17 packets per forwarded packet.
            resent += (0..17).filter(|_| b.try_resend()).count() as u32;
        }
        assert!(resent <= 10_000 / 2 + DEFAULT_BURST, "{resent}");
        assert!(resent >= 10_000 / 2, "{resent}");
    }
}
