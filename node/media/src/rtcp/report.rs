//! Sender and receiver reports (RFC 3550 §6.4.1, §6.4.2) and their report blocks.

use super::{PT_RR, PT_SR, RtcpError, be32, need};

/// Bytes of one report block (RFC 3550 §6.4.1).
const BLOCK_LEN: usize = 24;

/// A receiver report (RFC 3550 §6.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// SSRC of the reporter.
    pub ssrc: u32,
    /// One block per source the reporter receives.
    pub blocks: ReportBlocks<'a>,
}

/// A sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// What the sender says about what it sent.
    pub info: SenderInfo,
    /// Reception report blocks, as in a receiver report.
    pub blocks: ReportBlocks<'a>,
}

/// The sender information section of a sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp: seconds since 1900 in the high 32 bits, fraction in the low 32.
    pub ntp_time: u64,
    /// The same instant in the RTP timestamp clock.
    pub rtp_time: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost: 24-bit signed (duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles in the high 16 bits).
    pub highest_sequence: u32,
    /// Interarrival jitter in timestamp units (RFC 3550 §6.4.1, A.8).
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last sender report received (LSR), 0 if none.
    pub last_sr: u32,
    /// Delay since that sender report in 1/65536 s (DLSR). RTT = now - LSR - DLSR.
    pub delay_since_last_sr: u32,
}

/// The report blocks of a report, validated to be whole; iterate to decode them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    raw: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    pub(crate) fn parse(count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let blocks = usize::from(count) * BLOCK_LEN;
        need(PT_RR, body, 4 + blocks)?;
        Ok(ReceiverReport {
            ssrc: be32(body, 0),
            blocks: ReportBlocks {
                raw: &body[4..4 + blocks],
            },
        })
    }
}

impl<'a> SenderReport<'a> {
    pub(crate) fn parse(count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let blocks = usize::from(count) * BLOCK_LEN;
        need(PT_SR, body, 24 + blocks)?;
        Ok(SenderReport {
            ssrc: be32(body, 0),
            info: SenderInfo {
                ntp_time: u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8)),
                rtp_time: be32(body, 12),
                packet_count: be32(body, 16),
                octet_count: be32(body, 20),
            },
            blocks: ReportBlocks {
                raw: &body[24..24 + blocks],
            },
        })
    }
}

impl ReportBlocks<'_> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.raw.len() / BLOCK_LEN
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (b, rest) = self.raw.split_at_checked(BLOCK_LEN)?;
        self.raw = rest;
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
        Some(ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_sequence: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Compound, RtcpPacket};
    use super::*;

    fn block(cumulative: [u8; 3]) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 5, 64];
        b.extend(cumulative);
        b.extend([0, 1, 0, 10, 0, 0, 0, 30, 0, 0, 1, 0, 0, 0, 2, 0]);
        b
    }

    #[test]
    fn receiver_report_blocks() {
        let mut buf = vec![0x82, PT_RR, 0, 13, 0, 0, 0, 1];
        buf.extend(block([0, 0, 3]));
        buf.extend(block([0xff, 0xff, 0xfe]));
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = Compound::new(&buf).next() else {
            panic!("not a receiver report");
        };
        assert_eq!(rr.ssrc, 1);
        assert_eq!(rr.blocks.len(), 2);
        let blocks: Vec<_> = rr.blocks.collect();
        assert_eq!(
            blocks[0],
            ReportBlock {
                ssrc: 5,
                fraction_lost: 64,
                cumulative_lost: 3,
                highest_sequence: 0x0001_000a,
                jitter: 30,
                last_sr: 256,
                delay_since_last_sr: 512,
            }
        );
        assert_eq!(blocks[1].cumulative_lost, -2);
    }

    #[test]
    fn sender_report_info_and_blocks() {
        let mut buf = vec![0x81, PT_SR, 0, 12, 0, 0, 0, 9];
        buf.extend([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
        buf.extend(block([0, 0, 0]));
        let Some(Ok(RtcpPacket::SenderReport(sr))) = Compound::new(&buf).next() else {
            panic!("not a sender report");
        };
        assert_eq!(sr.ssrc, 9);
        assert_eq!(sr.info.ntp_time, 1 << 32 | 2);
        assert_eq!(
            (sr.info.rtp_time, sr.info.packet_count, sr.info.octet_count),
            (3, 4, 5)
        );
        assert_eq!(sr.blocks.count(), 1);
    }

    #[test]
    fn count_beyond_body_is_an_error() {
        // RC=1 but no block follows.
        let buf = [0x81, PT_RR, 0, 1, 0, 0, 0, 1];
        assert!(matches!(
            Compound::new(&buf).next(),
            Some(Err(RtcpError::Body {
                packet_type: PT_RR,
                needed: 28,
                len: 4
            }))
        ));
    }
}
