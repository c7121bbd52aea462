//! VP8 keyframe detection from the RTP payload descriptor (RFC 7741 §4.2) and the payload
//! header (RFC 7741 §4.3).

/// Whether a VP8 RTP payload is the first packet of a keyframe: S=1 and PID=0 in the payload
/// descriptor (the start of partition 0, §4.2), and P=0 in the payload header that follows
/// (the inverse keyframe flag, §4.3). Truncated payloads answer `false`.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        if x & 0x80 != 0 {
            // I: PictureID, 15 bits when M (its first bit) is set, else 7.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // T or K: TID/Y/KEYIDX
        }
    }
    // §4.3: |Size0|H|VER|P|, P = 0 for a key frame.
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of a real keyframe: frame tag with P=0, then the start code.
    const KEY_HEADER: [u8; 6] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a];
    const DELTA_HEADER: [u8; 3] = [0x51, 0x42, 0x00];

    fn with(descriptor: &[u8], header: &[u8]) -> Vec<u8> {
        [descriptor, header].concat()
    }

    #[test]
    fn minimal_descriptor() {
        assert!(is_keyframe_start(&with(&[0x10], &KEY_HEADER)));
        assert!(!is_keyframe_start(&with(&[0x10], &DELTA_HEADER)));
    }

    #[test]
    fn not_the_start_of_partition_zero() {
        // S=0: a continuation packet of the keyframe.
        assert!(!is_keyframe_start(&with(&[0x00], &KEY_HEADER)));
        // S=1 but PID=1: start of the second partition.
        assert!(!is_keyframe_start(&with(&[0x11], &KEY_HEADER)));
    }

    #[test]
    fn extended_descriptor_with_long_picture_id() {
        // X=1, S=1; I and L set; 15-bit picture id; TL0PICIDX.
        let descriptor = [0x90, 0xc0, 0x81, 0x23, 0x07];
        assert!(is_keyframe_start(&with(&descriptor, &KEY_HEADER)));
        assert!(!is_keyframe_start(&with(&descriptor, &DELTA_HEADER)));
    }

    #[test]
    fn extended_descriptor_with_short_picture_id_and_tid() {
        // X=1, S=1; I and T set; 7-bit picture id; TID/Y/KEYIDX.
        let descriptor = [0x90, 0xa0, 0x11, 0x40];
        assert!(is_keyframe_start(&with(&descriptor, &KEY_HEADER)));
        // Without the T byte the header would be read from the wrong offset.
        assert!(!is_keyframe_start(&with(&descriptor, &DELTA_HEADER)));
    }

    #[test]
    fn truncated_answers_false() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x10]));
        assert!(!is_keyframe_start(&[0x90]));
        assert!(!is_keyframe_start(&[0x90, 0x80]));
        assert!(!is_keyframe_start(&[0x90, 0x80, 0x81, 0x00]));
    }
}
