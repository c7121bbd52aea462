//! The RTCP a forwarding node needs (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3.1): split a compound
//! packet, read receiver reports and the feedback children send (PLI, FIR, generic NACK), and
//! build the PLI, FIR and NACK packets sent upstream.
//!
//! Every length is checked against the buffer; malformed input yields an [`RtcpError`], never a
//! panic. Packet types we do not use (SDES, BYE, APP, REMB, transport-wide CC, ...) come out as
//! [`RtcpPacket::Other`] so the caller can still count or pass them on.
//!
//! ```
//! use treecast_media::rtcp::{Compound, RtcpPacket, pli};
//!
//! let bytes = pli(1, 2);
//! for packet in Compound::new(&bytes) {
//!     match packet? {
//!         RtcpPacket::Pli(p) => assert_eq!(p.media_ssrc, 2),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! # Ok::<(), treecast_media::rtcp::RtcpError>(())
//! ```

mod build;
mod feedback;
mod report;

pub use build::{fir, nack, pli};
pub use feedback::{Fir, FirEntry, Nack, NackPair, Pli};
pub use report::{ReceiverReport, ReportBlock, ReportBlocks, SenderInfo, SenderReport};

/// Sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Transport-layer feedback (RFC 4585 §6.2); FMT 1 is generic NACK.
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 §6.3); FMT 1 is PLI, FMT 4 is FIR (RFC 5104 §4.3.1).
pub const PT_PSFB: u8 = 206;

/// Why an RTCP packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer than the 4 bytes of a common header remain (RFC 3550 §6.4.1).
    #[error("RTCP header truncated: {len} bytes left")]
    Header {
        /// Bytes left in the compound packet.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {0} is not 2")]
    Version(u8),
    /// The length field announces more bytes than remain.
    #[error("RTCP packet announces {needed} bytes, {len} present")]
    Length {
        /// Bytes the length field announces.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// The padding count is zero or exceeds the packet body (RFC 3550 §6.4.1, P bit).
    #[error("RTCP padding count {0} invalid")]
    Padding(u8),
    /// The body is too short for what its type and count announce.
    #[error("RTCP packet type {packet_type} too short: {needed} bytes needed, {len} present")]
    Body {
        /// The packet type.
        packet_type: u8,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
}

/// One packet of a compound RTCP packet, decoded as far as treecast needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report (RFC 3550 §6.4.1).
    SenderReport(SenderReport<'a>),
    /// Receiver report (RFC 3550 §6.4.2).
    ReceiverReport(ReceiverReport<'a>),
    /// Picture loss indication (RFC 4585 §6.3.1).
    Pli(Pli),
    /// Full intra request (RFC 5104 §4.3.1).
    Fir(Fir<'a>),
    /// Generic NACK (RFC 4585 §6.2.1).
    Nack(Nack<'a>),
    /// Anything else, undecoded.
    Other {
        /// Packet type (RFC 3550 §12.1).
        packet_type: u8,
        /// The 5-bit count / FMT field.
        format: u8,
        /// The body after the 4-byte common header, padding removed.
        body: &'a [u8],
    },
}

/// Iterator over the packets of a compound RTCP packet (RFC 3550 §6.1).
///
/// Yields each packet or the first error, after which it ends: once a length is wrong the rest
/// of the buffer cannot be framed.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Starts splitting `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Compound { rest: buf }
    }

    fn split_next(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        let buf = self.rest;
        if buf.len() < 4 {
            return Err(RtcpError::Header { len: buf.len() });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        let has_padding = buf[0] & 0x20 != 0;
        let format = buf[0] & 0x1f;
        let packet_type = buf[1];
        // RFC 3550 §6.4.1: length in 32-bit words minus one, header included.
        let total = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
        if buf.len() < total {
            return Err(RtcpError::Length {
                needed: total,
                len: buf.len(),
            });
        }
        self.rest = &buf[total..];
        let mut body = &buf[4..total];
        if has_padding {
            let count = body.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > body.len() {
                return Err(RtcpError::Padding(count));
            }
            body = &body[..body.len() - usize::from(count)];
        }
        decode(packet_type, format, body)
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.split_next();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

fn decode(packet_type: u8, format: u8, body: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    Ok(match (packet_type, format) {
        (PT_SR, count) => RtcpPacket::SenderReport(SenderReport::parse(count, body)?),
        (PT_RR, count) => RtcpPacket::ReceiverReport(ReceiverReport::parse(count, body)?),
        (PT_PSFB, 1) => RtcpPacket::Pli(Pli::parse(body)?),
        (PT_PSFB, 4) => RtcpPacket::Fir(Fir::parse(body)?),
        (PT_RTPFB, 1) => RtcpPacket::Nack(Nack::parse(body)?),
        _ => RtcpPacket::Other {
            packet_type,
            format,
            body,
        },
    })
}

/// Checks that `body` holds at least `needed` bytes for a packet of type `packet_type`.
pub(crate) fn need(packet_type: u8, body: &[u8], needed: usize) -> Result<(), RtcpError> {
    if body.len() < needed {
        Err(RtcpError::Body {
            packet_type,
            needed,
            len: body.len(),
        })
    } else {
        Ok(())
    }
}

/// Big-endian u32 at `at`; callers have checked the length.
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_a_compound_packet() {
        // RR with no blocks, then SDES (opaque), then a PLI.
        let mut buf = vec![0x80, PT_RR, 0, 1, 0, 0, 0, 7];
        buf.extend([0x81, 202, 0, 1, 0, 0, 0, 7]);
        buf.extend(pli(7, 9));
        let packets: Vec<_> = Compound::new(&buf).collect();
        assert_eq!(packets.len(), 3);
        assert!(matches!(packets[0], Ok(RtcpPacket::ReceiverReport(r)) if r.ssrc == 7));
        assert!(matches!(
            packets[1],
            Ok(RtcpPacket::Other {
                packet_type: 202,
                format: 1,
                ..
            })
        ));
        assert!(matches!(packets[2], Ok(RtcpPacket::Pli(p)) if p.media_ssrc == 9));
    }

    #[test]
    fn strips_padding() {
        // Opaque packet of type 204 with 4 bytes of which 4 are padding.
        let buf = [0xa0, 204, 0, 1, 0, 0, 0, 4];
        let p = Compound::new(&buf).next();
        assert!(matches!(p, Some(Ok(RtcpPacket::Other { body: [], .. }))));
        let bad = [0xa0, 204, 0, 1, 0, 0, 0, 5];
        assert_eq!(Compound::new(&bad).next(), Some(Err(RtcpError::Padding(5))));
    }

    #[test]
    fn stops_at_the_first_error() {
        let mut buf = pli(1, 2).to_vec();
        buf.extend([0x81, PT_PSFB, 0, 9, 0]); // announces 40 bytes
        buf.extend(pli(3, 4));
        let items: Vec<_> = Compound::new(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(RtcpError::Length { .. })));
        assert_eq!(
            Compound::new(&[0x80, 200]).next(),
            Some(Err(RtcpError::Header { len: 2 }))
        );
        assert_eq!(
            Compound::new(&[0x40, 200, 0, 0]).next(),
            Some(Err(RtcpError::Version(1)))
        );
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            for item in Compound::new(&buf) {
                match item {
                    Ok(RtcpPacket::ReceiverReport(r)) => { let _ = r.blocks.count(); }
                    Ok(RtcpPacket::SenderReport(s)) => { let _ = s.blocks.count(); }
                    Ok(RtcpPacket::Nack(n)) => { let _ = n.seqs().count(); }
                    Ok(RtcpPacket::Fir(f)) => { let _ = f.entries().count(); }
                    _ => {}
                }
            }
        }

        #[test]
        fn never_panics_on_framed_feedback(
            pt in prop_oneof![Just(PT_SR), Just(PT_RR), Just(PT_RTPFB), Just(PT_PSFB)],
            format in 0u8..32,
            words in proptest::collection::vec(any::<u32>(), 0..20),
        ) {
            let mut buf = vec![0x80 | format, pt];
            buf.extend((words.len() as u16).to_be_bytes());
            // length field = words after the header, i.e. total words minus one.
            for w in &words { buf.extend(w.to_be_bytes()); }
            for item in Compound::new(&buf) {
                if let Ok(RtcpPacket::Nack(n)) = item { let _ = n.seqs().count(); }
            }
        }
    }
}
