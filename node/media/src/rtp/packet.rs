//! Zero-copy view of one RTP packet (RFC 3550 §5.1).

use super::extension::ExtensionBlock;

/// Length of the fixed RTP header (RFC 3550 §5.1): V/P/X/CC, M/PT, sequence, timestamp, SSRC.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why an RTP packet was rejected. Network input never panics; it yields one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The buffer ends before the part of the packet that its header announces.
    #[error("RTP packet truncated: {needed} bytes needed, {len} present")]
    Truncated {
        /// Bytes the header says must be present.
        needed: usize,
        /// Bytes actually present.
        len: usize,
    },
    /// The version field is not 2 (RFC 3550 §5.1).
    #[error("RTP version {0} is not 2")]
    Version(u8),
    /// The padding count is zero or larger than the payload (RFC 3550 §5.1, P bit).
    #[error("RTP padding count {count} invalid with {available} bytes after the header")]
    Padding {
        /// The padding count from the last byte.
        count: u8,
        /// Bytes between the end of the header and the end of the packet.
        available: usize,
    },
    /// A one-byte or two-byte header extension element overruns its block (RFC 8285 §4).
    #[error("RTP header extension element overruns its block")]
    Extension,
}

/// A parsed RTP packet borrowing the buffer it was parsed from.
///
/// Parsing validates everything a forwarder relies on (lengths, padding, the RFC 8285 element
/// layout), so the accessors below cannot fail. Nothing is copied: [`Packet::payload`] and
/// [`Packet::extension`] are slices of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    buf: &'a [u8],
    /// Marker bit (RFC 3550 §5.1); for video, the last packet of a frame.
    pub marker: bool,
    /// Payload type, 7 bits.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp, in the clock rate of the payload format.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    csrc_count: u8,
    extension: Option<ExtensionBlock<'a>>,
    header_len: usize,
    padding_len: usize,
}

impl<'a> Packet<'a> {
    /// Parses `buf` as an RTP packet (RFC 3550 §5.1, header extensions per RFC 3550 §5.3.1 and
    /// RFC 8285 §4). Never panics.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let len = buf.len();
        if len < FIXED_HEADER_LEN {
            return Err(RtpError::Truncated {
                needed: FIXED_HEADER_LEN,
                len,
            });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let has_padding = buf[0] & 0x20 != 0;
        let has_extension = buf[0] & 0x10 != 0;
        let csrc_count = buf[0] & 0x0f;
        let mut header_len = FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
        if len < header_len {
            return Err(RtpError::Truncated {
                needed: header_len,
                len,
            });
        }
        let extension = if has_extension {
            // RFC 3550 §5.3.1: 16-bit profile-defined id, 16-bit length in 32-bit words.
            let needed = header_len + 4;
            if len < needed {
                return Err(RtpError::Truncated { needed, len });
            }
            let profile = be16(buf, header_len);
            let words = usize::from(be16(buf, header_len + 2));
            let start = header_len + 4;
            let end = start + 4 * words;
            if len < end {
                return Err(RtpError::Truncated { needed: end, len });
            }
            header_len = end;
            Some(ExtensionBlock::parse(profile, &buf[start..end])?)
        } else {
            None
        };
        let available = len - header_len;
        let padding_len = if has_padding {
            // RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            let count = buf[len - 1];
            if count == 0 || usize::from(count) > available {
                return Err(RtpError::Padding { count, available });
            }
            usize::from(count)
        } else {
            0
        };
        Ok(Packet {
            buf,
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            sequence: be16(buf, 2),
            timestamp: be32(buf, 4),
            ssrc: be32(buf, 8),
            csrc_count,
            extension,
            header_len,
            padding_len,
        })
    }

    /// The whole packet as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Contributing sources (RFC 3550 §5.1, CC field), in order.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        let raw = &self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * usize::from(self.csrc_count)];
        raw.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The header extension block, if the X bit is set.
    pub fn extension(&self) -> Option<ExtensionBlock<'a>> {
        self.extension
    }

    /// Length of everything before the payload: fixed header, CSRCs and extension block.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Whether the P bit is set (the packet ends with padding).
    pub fn has_padding(&self) -> bool {
        self.padding_len != 0
    }

    /// The payload, without header and without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.buf.len() - self.padding_len]
    }

    /// The payload followed by the padding, exactly as received: what a forwarder copies verbatim.
    pub(crate) fn body(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }

    /// The CSRC list as raw bytes.
    pub(crate) fn csrc_bytes(&self) -> &'a [u8] {
        &self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * usize::from(self.csrc_count)]
    }
}

/// Reads a big-endian u16 at `at`; callers have checked the length.
pub(crate) fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Reads a big-endian u32 at `at`; callers have checked the length.
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A packet with two CSRCs, a one-byte extension (id 3, 2 bytes) and 3 bytes of padding.
    fn sample() -> Vec<u8> {
        let mut p = vec![
            0xb2, 0xe0, 0x12, 0x34, // V=2 P=1 X=1 CC=2, M=1 PT=96, seq 0x1234
            0xde, 0xad, 0xbe, 0xef, // ts
            0x01, 0x02, 0x03, 0x04, // ssrc
            0, 0, 0, 1, 0, 0, 0, 2, // csrcs
            0xbe, 0xde, 0, 1, // one-byte profile, 1 word
            0x31, 0xaa, 0xbb, 0, // id 3 len 2, padding
        ];
        p.extend_from_slice(b"payload");
        p.extend_from_slice(&[0, 0, 3]);
        p
    }

    #[test]
    fn parses_every_field() {
        let buf = sample();
        let p = Packet::parse(&buf).expect("valid");
        assert!(p.marker);
        assert_eq!(p.payload_type, 96);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 0xdead_beef);
        assert_eq!(p.ssrc, 0x0102_0304);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(p.header_len(), 28);
        assert!(p.has_padding());
        assert_eq!(p.payload(), b"payload");
        let ext = p.extension().expect("extension");
        let elems: Vec<_> = ext.elements().collect();
        assert_eq!(elems.len(), 1);
        assert_eq!(elems[0].id, 3);
        assert_eq!(elems[0].data, &[0xaa, 0xbb]);
    }

    #[test]
    fn minimal_packet_has_empty_payload() {
        let buf = [0x80, 0x60, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        let p = Packet::parse(&buf).expect("valid");
        assert!(!p.marker);
        assert_eq!(p.payload(), b"");
        assert!(p.extension().is_none());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Packet::parse(&[0x80; 11]),
            Err(RtpError::Truncated {
                needed: 12,
                len: 11
            })
        );
        let mut v1 = [0u8; 12];
        v1[0] = 0x40;
        assert_eq!(Packet::parse(&v1), Err(RtpError::Version(1)));
        // CC=3 needs 24 bytes.
        let mut cc = [0u8; 20];
        cc[0] = 0x83;
        assert_eq!(
            Packet::parse(&cc),
            Err(RtpError::Truncated {
                needed: 24,
                len: 20
            })
        );
        // Extension header announces 2 words but none follow.
        let ext = [0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 2];
        assert_eq!(
            Packet::parse(&ext),
            Err(RtpError::Truncated {
                needed: 24,
                len: 16
            })
        );
        // Padding count 0, and padding longer than the body.
        let mut pad = [0u8; 14];
        pad[0] = 0xa0;
        assert!(matches!(Packet::parse(&pad), Err(RtpError::Padding { .. })));
        pad[13] = 3;
        assert!(matches!(Packet::parse(&pad), Err(RtpError::Padding { .. })));
        pad[13] = 2;
        assert!(Packet::parse(&pad).is_ok());
    }

    #[test]
    fn rejects_overrunning_extension_element() {
        let mut buf = sample();
        buf[24] = 0x33; // id 3, 4 bytes: runs past the 4-byte block
        assert_eq!(Packet::parse(&buf), Err(RtpError::Extension));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&buf) {
                prop_assert!(p.header_len() + p.payload().len() <= buf.len());
                let _ = p.csrcs().count();
                if let Some(ext) = p.extension() {
                    let _ = ext.elements().count();
                }
            }
        }

        #[test]
        fn never_panics_on_version_2_bytes(
            first in 0x80u8..0xc0,
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut buf = vec![first];
            buf.extend(rest);
            if let Ok(p) = Packet::parse(&buf) {
                prop_assert_eq!(p.body().len(), buf.len() - p.header_len());
                if let Some(ext) = p.extension() {
                    let _ = ext.elements().count();
                }
            }
        }
    }
}
