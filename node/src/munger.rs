//! Sequence-number continuity for one child leg: when the leg skips packets (a child that fell
//! behind drops to the next keyframe), the child must not see a gap it would NACK in vain, so
//! the numbering closes the gap at the resume point. Pure; unit-tested below.
//!
//! Timestamps pass unchanged: every leg carries the same source, so they stay continuous. A
//! parent change (a different source numbering) is the shared `treecast-media` munger's job.

/// Maps upstream sequence numbers to this leg's numbering.
#[derive(Debug, Default, Clone)]
pub struct SeqMunger {
    offset: u16,
    /// Packets older than this (upstream numbering) belong before the resume point.
    floor: Option<u16>,
    last_out: Option<u16>,
}

impl SeqMunger {
    /// Starts (or restarts after a skip) at upstream packet `seq`, which becomes the packet right
    /// after the last one sent.
    pub fn resume_at(&mut self, seq: u16) {
        self.offset = match self.last_out {
            Some(last) => seq.wrapping_sub(last.wrapping_add(1)),
            None => 0,
        };
        self.floor = Some(seq);
    }

    /// This leg's number for upstream packet `seq`, or `None` if the leg has not started or the
    /// packet is from before the resume point (a late retransmission).
    pub fn map(&mut self, seq: u16) -> Option<u16> {
        let floor = self.floor?;
        if is_older(seq, floor) {
            return None;
        }
        let out = seq.wrapping_sub(self.offset);
        if self.last_out.is_none_or(|last| is_older(last, out)) {
            self.last_out = Some(out);
        }
        Some(out)
    }
}

/// RFC 3550 serial-number order: `a` is before `b` within half the number space.
fn is_older(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_before_start() {
        let mut m = SeqMunger::default();
        assert_eq!(m.map(5), None);
        m.resume_at(5);
        assert_eq!(m.map(5), Some(5));
        assert_eq!(m.map(6), Some(6));
        assert_eq!(m.map(4), None, "before the start point");
    }

    #[test]
    fn skip_closes_the_gap_and_keeps_reordering() {
        let mut m = SeqMunger::default();
        m.resume_at(100);
        for s in 100..=110 {
            assert_eq!(m.map(s), Some(s));
        }
        // Packets 111..=199 skipped; resume at the keyframe 200.
        m.resume_at(200);
        assert_eq!(m.map(200), Some(111));
        assert_eq!(m.map(202), Some(113));
        // A retransmission of 201 arrives late: still mapped consistently.
        assert_eq!(m.map(201), Some(112));
        // A packet from before the skip is dropped.
        assert_eq!(m.map(150), None);
        m.resume_at(300);
        assert_eq!(m.map(300), Some(114));
    }

    #[test]
    fn wraps_around() {
        let mut m = SeqMunger::default();
        m.resume_at(65_534);
        assert_eq!(m.map(65_534), Some(65_534));
        assert_eq!(m.map(65_535), Some(65_535));
        assert_eq!(m.map(0), Some(0));
        m.resume_at(10);
        assert_eq!(m.map(10), Some(1));
        assert_eq!(m.map(11), Some(2));
    }
}
