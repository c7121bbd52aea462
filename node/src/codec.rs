//! The codecs a node carries (VP8, H.264, Opus), how they are registered on every peer
//! connection, and the VP8 payload descriptor length the recorder needs.
//!
//! Keyframe detection lives in `treecast-media` ([`Codec::is_keyframe_start`]).
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

pub use treecast_media::keyframe::Codec;

/// What the webrtc shell needs to know about a [`Codec`] beyond keyframe detection.
pub trait CodecExt {
    /// The MIME type as webrtc spells it.
    fn mime(self) -> &'static str;
    /// Video or audio.
    fn kind(self) -> MediaKind;
    /// The codec description for a track this node originates (file source).
    fn rtp_codec(self) -> RTCRtpCodec;
}

impl CodecExt for Codec {
    fn mime(self) -> &'static str {
        match self {
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => MIME_TYPE_H264,
            Codec::Opus => MIME_TYPE_OPUS,
        }
    }

    fn kind(self) -> MediaKind {
        if self.is_video() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }

    fn rtp_codec(self) -> RTCRtpCodec {
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
}

/// Which payload type numbers a node offers. Payload types are per leg (pitfall 1): a browser
/// picks its own (Chrome offered H.264 as 108 where the child leg negotiated 102). Viewers use
/// [`PayloadTypes::Viewer`] so that the last leg of every chain differs from the ones above it
/// and the per-leg rewrite is exercised by every end-to-end test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadTypes {
    /// VP8 96, H.264 102, Opus 111.
    Node,
    /// VP8 97, H.264 108, Opus 109.
    Viewer,
}

/// Registers VP8 and H.264 with NACK, PLI and FIR feedback and Opus with NACK; no RTX, so a
/// retransmission arrives on the media SSRC and passes through the fan-out like any other
/// packet. Opus NACK (RFC 4585 generic NACK is codec-independent) is used between treecast
/// nodes, which both offer it; browsers do not offer it for Opus, so with them it is not
/// negotiated and nothing changes.
pub fn register_codecs(
    engine: &mut MediaEngine,
    payload_types: PayloadTypes,
) -> Result<(), rtc::shared::error::Error> {
    let nack = || RTCPFeedback {
        typ: "nack".into(),
        parameter: String::new(),
    };
    let video_fb = || {
        vec![
            nack(),
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
    let (vp8, h264, opus) = match payload_types {
        PayloadTypes::Node => (96, 102, 111),
        PayloadTypes::Viewer => (97, 108, 109),
    };
    let entries = [
        (Codec::Vp8, vp8, video_fb()),
        (Codec::H264, h264, video_fb()),
        (Codec::Opus, opus, vec![nack()]),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_descriptor_length() {
        assert_eq!(vp8_descriptor_len(&[0x10, 0x00]), Some(1));
        // X=1, I=1 with a 15-bit picture id.
        assert_eq!(vp8_descriptor_len(&[0x90, 0x80, 0x80, 0x01, 0x00]), Some(4));
        // X=1, L=1, T=1.
        assert_eq!(vp8_descriptor_len(&[0x90, 0x60, 0x01, 0x02, 0x00]), Some(4));
        assert_eq!(vp8_descriptor_len(&[0x90, 0x80, 0x80]), None);
        assert_eq!(vp8_descriptor_len(&[]), None);
    }

    #[test]
    fn mime_is_case_insensitive() {
        assert_eq!(Codec::from_mime("audio/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("video/AV1"), None);
    }
}
