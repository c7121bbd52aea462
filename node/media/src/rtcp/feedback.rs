//! Feedback from receivers: PLI (RFC 4585 §6.3.1), FIR (RFC 5104 §4.3.1) and generic NACK
//! (RFC 4585 §6.2.1).

use super::{PT_PSFB, PT_RTPFB, RtcpError, be32, need};

/// Picture loss indication (RFC 4585 §6.3.1): the receiver wants a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pli {
    /// SSRC of the packet sender.
    pub sender_ssrc: u32,
    /// SSRC of the media source the request is about.
    pub media_ssrc: u32,
}

/// Full intra request (RFC 5104 §4.3.1): a keyframe request with one entry per media source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<'a> {
    /// SSRC of the packet sender.
    pub sender_ssrc: u32,
    fci: &'a [u8],
}

/// One FCI entry of a FIR (RFC 5104 §4.3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirEntry {
    /// The media source asked for a keyframe.
    pub ssrc: u32,
    /// Command sequence number: a repeated number is a retransmission of the same request.
    pub sequence: u8,
}

/// Generic NACK (RFC 4585 §6.2.1): the receiver lists sequence numbers it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<'a> {
    /// SSRC of the packet sender.
    pub sender_ssrc: u32,
    /// SSRC of the media source whose packets were lost.
    pub media_ssrc: u32,
    fci: &'a [u8],
}

/// One FCI entry of a generic NACK: a packet id and a bitmask of the 16 that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackPair {
    /// Packet ID (PID): a lost sequence number.
    pub pid: u16,
    /// Bitmask of following lost packets (BLP): bit i set means `pid + i + 1` was lost.
    pub blp: u16,
}

impl Pli {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, RtcpError> {
        need(PT_PSFB, body, 8)?;
        Ok(Pli {
            sender_ssrc: be32(body, 0),
            media_ssrc: be32(body, 4),
        })
    }
}

impl<'a> Fir<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, RtcpError> {
        // Common feedback header (media SSRC unused, RFC 5104 §4.3.1.2) plus at least one entry.
        need(PT_PSFB, body, 16)?;
        Ok(Fir {
            sender_ssrc: be32(body, 0),
            fci: &body[8..],
        })
    }

    /// The requested sources; a trailing partial entry is ignored.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = FirEntry> + 'a {
        self.fci.chunks_exact(8).map(|c| FirEntry {
            ssrc: be32(c, 0),
            sequence: c[4],
        })
    }
}

impl<'a> Nack<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, RtcpError> {
        need(PT_RTPFB, body, 12)?;
        Ok(Nack {
            sender_ssrc: be32(body, 0),
            media_ssrc: be32(body, 4),
            fci: &body[8..],
        })
    }

    /// The (PID, BLP) entries; a trailing partial entry is ignored.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = NackPair> + 'a {
        self.fci.chunks_exact(4).map(|c| NackPair {
            pid: u16::from_be_bytes([c[0], c[1]]),
            blp: u16::from_be_bytes([c[2], c[3]]),
        })
    }

    /// Every lost sequence number, PID then the BLP bits in increasing order, wrapping at 2^16.
    pub fn seqs(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs().flat_map(NackPair::seqs)
    }
}

impl NackPair {
    /// The sequence numbers this entry names (1 to 17 of them).
    pub fn seqs(self) -> impl Iterator<Item = u16> {
        let first = std::iter::once(self.pid);
        let rest = (0..16u16)
            .filter(move |bit| self.blp & (1 << bit) != 0)
            .map(move |bit| self.pid.wrapping_add(bit + 1));
        first.chain(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Compound, RtcpPacket, fir, nack};
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn nack_expands_pid_and_blp() {
        let pair = NackPair {
            pid: 65534,
            blp: 0b1000_0000_0000_0101,
        };
        assert_eq!(pair.seqs().collect::<Vec<_>>(), vec![65534, 65535, 1, 14]);
    }

    #[test]
    fn nack_parses_from_the_wire() {
        let buf = [
            0x81, PT_RTPFB, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 1, 0, 40, 0, 0,
        ];
        let Some(Ok(RtcpPacket::Nack(n))) = Compound::new(&buf).next() else {
            panic!("not a NACK");
        };
        assert_eq!((n.sender_ssrc, n.media_ssrc), (1, 2));
        assert_eq!(n.seqs().collect::<Vec<_>>(), vec![10, 11, 40]);
    }

    #[test]
    fn nack_without_fci_is_rejected() {
        let buf = [0x81, PT_RTPFB, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(matches!(
            Compound::new(&buf).next(),
            Some(Err(RtcpError::Body { .. }))
        ));
    }

    #[test]
    fn nack_builder_round_trips() {
        let lost = [5u16, 6, 21, 22, 40, 65535, 0];
        let mut out = BytesMut::new();
        assert_eq!(nack(1, 2, lost, &mut out), 4);
        let Some(Ok(RtcpPacket::Nack(n))) = Compound::new(&out).next() else {
            panic!("not a NACK");
        };
        assert_eq!(n.seqs().collect::<Vec<_>>(), lost.to_vec());
    }

    #[test]
    fn fir_entries() {
        let buf = fir(1, 77, 3);
        let Some(Ok(RtcpPacket::Fir(f))) = Compound::new(&buf).next() else {
            panic!("not a FIR");
        };
        assert_eq!(f.sender_ssrc, 1);
        assert_eq!(
            f.entries().collect::<Vec<_>>(),
            vec![FirEntry {
                ssrc: 77,
                sequence: 3
            }]
        );
    }
}
