//! The codecs a node carries (VP8, H.264, Opus), how they are registered on every peer
//! connection, and how a keyframe is recognised in an RTP payload.
//!
//! Every peer connection of every node registers the same codec set, so a relay can always
//! offer its children exactly the codec its parent sends. Payload types are still only
//! meaningful per leg: they are rewritten on the way down (see `docs/media.md`).

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

/// H.264 as WebRTC peers expect it: packetization-mode=1, constrained baseline (pitfall 9).
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// The kind of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// VP8 or H.264.
    Video,
    /// Opus.
    Audio,
}

impl MediaKind {
    /// The webrtc kind.
    pub fn rtp_kind(self) -> RtpCodecKind {
        match self {
            MediaKind::Video => RtpCodecKind::Video,
            MediaKind::Audio => RtpCodecKind::Audio,
        }
    }
}

/// A codec this node knows how to forward and record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 (RFC 6184), packetization-mode 1.
    H264,
    /// Opus (RFC 7587).
    Opus,
}

impl Codec {
    /// Recognises a MIME type, case-insensitively (GStreamer says `audio/OPUS`: pitfall 6).
    pub fn from_mime(mime: &str) -> Option<Codec> {
        [Codec::Vp8, Codec::H264, Codec::Opus]
            .into_iter()
            .find(|c| c.mime().eq_ignore_ascii_case(mime))
    }

    /// The MIME type as webrtc spells it.
    pub fn mime(self) -> &'static str {
        match self {
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => MIME_TYPE_H264,
            Codec::Opus => MIME_TYPE_OPUS,
        }
    }

    /// Video or audio.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Vp8 | Codec::H264 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Vp8 | Codec::H264 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// The codec description used for a track this node originates (file source).
    pub fn rtp_codec(self) -> RTCRtpCodec {
        let (channels, fmtp) = match self {
            Codec::Vp8 => (0, ""),
            Codec::H264 => (0, H264_FMTP),
            Codec::Opus => (2, "minptime=10;useinbandfec=1"),
        };
        RTCRtpCodec {
            mime_type: self.mime().to_owned(),
            clock_rate: self.clock_rate(),
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        }
    }

    /// Whether this payload starts a frame a decoder can start from.
    ///
    /// Audio packets always are. Never panics on short or hostile payloads.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_keyframe_start(payload),
            Codec::H264 => h264_has_idr(payload),
            Codec::Opus => true,
        }
    }
}

/// Registers VP8, H.264 and Opus with NACK, PLI and FIR feedback; no RTX, so a retransmission
/// arrives on the media SSRC and passes through the fan-out like any other packet.
pub fn register_codecs(engine: &mut MediaEngine) -> Result<(), rtc::shared::error::Error> {
    let video_fb = || {
        vec![
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
        ]
    };
    let entries = [
        (Codec::Vp8, 96, video_fb()),
        (Codec::H264, 102, video_fb()),
        (Codec::Opus, 111, vec![]),
    ];
    for (codec, payload_type, rtcp_feedback) in entries {
        let mut rtp_codec = codec.rtp_codec();
        rtp_codec.rtcp_feedback = rtcp_feedback;
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec,
                payload_type,
            },
            codec.kind().rtp_kind(),
        )?;
    }
    Ok(())
}

/// VP8 payload descriptor (RFC 7741 section 4.2) followed by the payload header (section 4.3):
/// a keyframe starts at a packet with S=1, PID=0 whose first payload byte has P=0.
fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start_of_partition = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start_of_partition || pid != 0 {
        return false;
    }
    vp8_descriptor_len(p)
        .and_then(|i| p.get(i))
        .is_some_and(|h| h & 0x01 == 0)
}

/// The length of the VP8 payload descriptor at the start of `p` (RFC 7741 section 4.2), or
/// `None` if `p` is too short to hold it.
pub fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            // PictureID: one or two bytes (M bit).
            let pic = *p.get(i)?;
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/KEYIDX
        }
    }
    (i <= p.len()).then_some(i)
}

/// An IDR slice (type 5) or SPS (type 7) in a single NAL, STAP-A (24) or starting FU-A (28)
/// payload (RFC 6184 section 5).
fn h264_has_idr(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let is_key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let len = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if is_key(p[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + len;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_detection() {
        // S=1, PID=0, no extensions; payload header P=0 -> keyframe.
        assert!(Codec::Vp8.is_keyframe_start(&[0x10, 0x00, 0x9d]));
        // P=1 -> interframe.
        assert!(!Codec::Vp8.is_keyframe_start(&[0x10, 0x01]));
        // Not a partition start.
        assert!(!Codec::Vp8.is_keyframe_start(&[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id, then P=0.
        assert!(Codec::Vp8.is_keyframe_start(&[0x90, 0x80, 0x80, 0x01, 0x00]));
        // Truncated: never panics.
        assert!(!Codec::Vp8.is_keyframe_start(&[0x90, 0x80, 0x80]));
        assert!(!Codec::Vp8.is_keyframe_start(&[]));
    }

    #[test]
    fn h264_keyframe_detection() {
        assert!(Codec::H264.is_keyframe_start(&[0x65, 0x88]));
        assert!(!Codec::H264.is_keyframe_start(&[0x41, 0x9a]));
        // STAP-A holding SPS.
        assert!(Codec::H264.is_keyframe_start(&[0x78, 0x00, 0x02, 0x67, 0x42]));
        // FU-A start of an IDR; FU-A middle is not a start.
        assert!(Codec::H264.is_keyframe_start(&[0x7c, 0x85, 0x00]));
        assert!(!Codec::H264.is_keyframe_start(&[0x7c, 0x05, 0x00]));
        // Hostile STAP-A length runs past the end: no panic.
        assert!(!Codec::H264.is_keyframe_start(&[0x78, 0xff, 0xff, 0x41]));
        assert!(!Codec::H264.is_keyframe_start(&[]));
    }

    #[test]
    fn mime_is_case_insensitive() {
        assert_eq!(Codec::from_mime("audio/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("video/AV1"), None);
    }
}
