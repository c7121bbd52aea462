//! H.264 keyframe detection from the RTP payload (RFC 6184 §5.2-§5.8).

/// NAL unit types (ITU-T H.264 Table 7-1, RFC 6184 §5.2).
const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether an H.264 RTP payload starts a keyframe: a single NAL unit packet carrying an SPS or
/// an IDR slice (§5.6), a STAP-A aggregating one (§5.7.1), or the first fragment (S bit) of an
/// FU-A carrying one (§5.8).
///
/// An encoder sends SPS, PPS, then the IDR slices; the SPS packet (or the STAP-A holding it) is
/// the one to resume at. IDR slices also answer `true` so that streams which send parameter
/// sets only out of band still resume. Interleaved-mode packets (STAP-B, MTAP, FU-B) answer
/// `false`: treecast negotiates packetization-mode=1.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        STAP_A => stap_a_has_keyframe(&payload[1..]),
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key_nal(fu & 0x1f)),
        nal => is_key_nal(nal),
    }
}

fn is_key_nal(nal_type: u8) -> bool {
    nal_type == IDR || nal_type == SPS
}

/// STAP-A (§5.7.1): repeated 16-bit NALU size then the NAL unit. A size that overruns the
/// payload ends the walk.
fn stap_a_has_keyframe(mut units: &[u8]) -> bool {
    while let [hi, lo, rest @ ..] = units {
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(unit) = rest.get(..size) else {
            return false;
        };
        if unit.first().is_some_and(|h| is_key_nal(h & 0x1f)) {
            return true;
        }
        units = &rest[size..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NAL header with NRI=3 and the given type.
    fn nal(t: u8) -> u8 {
        0x60 | t
    }

    #[test]
    fn single_nal_units() {
        assert!(is_keyframe_start(&[nal(IDR), 0x88, 0x84]));
        assert!(is_keyframe_start(&[nal(SPS), 0x42, 0xe0, 0x1f]));
        assert!(!is_keyframe_start(&[nal(8), 0xce])); // PPS alone
        assert!(!is_keyframe_start(&[nal(1), 0x9a])); // non-IDR slice
        assert!(!is_keyframe_start(&[nal(6), 0x05])); // SEI
    }

    #[test]
    #[rustfmt::skip]
    fn stap_a_with_sps_pps_idr() {
        let payload = [
            nal(STAP_A),
            0, 3, nal(SPS), 0x42, 0xe0,
            0, 2, nal(8), 0xce,
            0, 2, nal(IDR), 0x88,
        ];
        assert!(is_keyframe_start(&payload));
    }

    #[test]
    fn stap_a_without_keyframe() {
        let payload = [nal(STAP_A), 0, 2, nal(8), 0xce, 0, 2, nal(6), 0x05];
        assert!(!is_keyframe_start(&payload));
    }

    #[test]
    fn stap_a_overrun_is_false() {
        assert!(!is_keyframe_start(&[nal(STAP_A), 0, 9, nal(IDR)]));
        assert!(!is_keyframe_start(&[nal(STAP_A), 0]));
    }

    #[test]
    fn fu_a_start_middle_and_end() {
        let indicator = nal(FU_A);
        assert!(is_keyframe_start(&[indicator, 0x80 | IDR, 0x88]));
        assert!(!is_keyframe_start(&[indicator, IDR, 0x88])); // middle
        assert!(!is_keyframe_start(&[indicator, 0x40 | IDR, 0x88])); // end
        assert!(!is_keyframe_start(&[indicator, 0x80 | 1, 0x9a])); // start of a P slice
        assert!(!is_keyframe_start(&[indicator]));
    }

    #[test]
    fn empty_is_false() {
        assert!(!is_keyframe_start(&[]));
    }
}
