//! Builders for the feedback a node sends upstream.

use bytes::{BufMut, BytesMut};

use super::{PT_PSFB, PT_RTPFB};

/// A PLI (RFC 4585 §6.3.1) from `sender_ssrc` about `media_ssrc`: 12 bytes, no allocation.
pub fn pli(sender_ssrc: u32, media_ssrc: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&[0x81, PT_PSFB, 0, 2]);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..].copy_from_slice(&media_ssrc.to_be_bytes());
    out
}

/// A FIR (RFC 5104 §4.3.1) asking `media_ssrc` for a keyframe. `sequence` must increase by one
/// for every new request and repeat for a retransmission of the same request (§4.3.1.2).
pub fn fir(sender_ssrc: u32, media_ssrc: u32, sequence: u8) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&[0x84, PT_PSFB, 0, 4]);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    // Media source SSRC stays 0 (RFC 5104 §4.3.1.2); the target is in the FCI.
    out[12..16].copy_from_slice(&media_ssrc.to_be_bytes());
    out[16] = sequence;
    out
}

/// Appends a generic NACK (RFC 4585 §6.2.1) for the lost sequence numbers `lost` to `out` and
/// returns the number of FCI entries written; writes nothing and returns 0 when `lost` is empty.
///
/// Consecutive numbers within 16 of the current PID share one entry, so pass them in increasing
/// (wrapping) order for the tightest packet; any order is still correct. An exact repeat of the
/// PID is skipped.
pub fn nack(
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: impl IntoIterator<Item = u16>,
    out: &mut BytesMut,
) -> usize {
    let start = out.len();
    let mut entries = 0;
    let mut current: Option<(u16, u16)> = None;
    let mut put = |out: &mut BytesMut, (pid, blp): (u16, u16)| {
        if entries == 0 {
            out.put_slice(&[0x81, PT_RTPFB, 0, 0]);
            out.put_u32(sender_ssrc);
            out.put_u32(media_ssrc);
        }
        out.put_u16(pid);
        out.put_u16(blp);
        entries += 1;
    };
    for seq in lost {
        match current {
            Some((pid, ref mut blp)) if (1..=16).contains(&seq.wrapping_sub(pid)) => {
                *blp |= 1 << (seq.wrapping_sub(pid) - 1);
            }
            Some((pid, _)) if pid == seq => {}
            _ => {
                if let Some(entry) = current {
                    put(out, entry);
                }
                current = Some((seq, 0));
            }
        }
    }
    if let Some(entry) = current {
        put(out, entry);
    }
    if entries > 0 {
        // Length in words minus one (RFC 3550 §6.4.1): header (3 words) plus one per entry - 1.
        // A NACK above 2^16 words would need 2^16 distinct entries; clamp rather than wrap.
        let words = u16::try_from(2 + entries).unwrap_or(u16::MAX);
        out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pli_bytes() {
        assert_eq!(pli(1, 2), [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
    }

    #[test]
    fn nack_packs_into_blp() {
        let mut out = BytesMut::new();
        assert_eq!(nack(1, 2, [100, 101, 116, 117], &mut out), 2);
        assert_eq!(
            &out[..],
            &[
                0x81, 205, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0, 100, 0x80, 0x01, 0, 117, 0, 0
            ]
        );
    }

    #[test]
    fn empty_nack_writes_nothing() {
        let mut out = BytesMut::new();
        assert_eq!(nack(1, 2, [], &mut out), 0);
        assert!(out.is_empty());
    }
}
