//! Does this RTP payload start a keyframe?
//!
//! A node needs the answer on every packet: after a parent change or a child falling behind it
//! drops packets until the next keyframe start, and the GOP cache restarts there. Only the first
//! packet of a keyframe answers `true`, so resuming there gives the decoder the whole frame.

mod h264;
mod vp8;

pub use h264::is_keyframe_start as h264_is_keyframe_start;
pub use vp8::is_keyframe_start as vp8_is_keyframe_start;

/// The codecs a treecast node forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 in packetization mode 0 or 1 (RFC 6184).
    H264,
    /// Opus (RFC 7587): every packet decodes on its own.
    Opus,
}

impl Codec {
    /// The codec for a MIME type such as `video/VP8`, compared case-insensitively
    /// (GStreamer announces `audio/OPUS`, `notes/dependencies.md` pitfall 6).
    pub fn from_mime(mime: &str) -> Option<Codec> {
        [
            ("video/vp8", Codec::Vp8),
            ("video/h264", Codec::H264),
            ("audio/opus", Codec::Opus),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(mime))
        .map(|(_, codec)| codec)
    }

    /// RTP clock rate: 90 kHz for video (RFC 7741 §6.1, RFC 6184 §8.2.1), 48 kHz for Opus
    /// (RFC 7587 §4.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Vp8 | Codec::H264 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// Whether the codec is video (has keyframes worth waiting for).
    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::H264)
    }

    /// Whether `payload` (the RTP payload, header and padding removed) is the first packet of a
    /// keyframe. Always `true` for Opus, so audio never waits. Never panics.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8::is_keyframe_start(payload),
            Codec::H264 => h264::is_keyframe_start(payload),
            Codec::Opus => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mime_types_compare_case_insensitively() {
        assert_eq!(Codec::from_mime("audio/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/H264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("video/AV1"), None);
    }

    #[test]
    fn audio_always_starts() {
        assert!(Codec::Opus.is_keyframe_start(&[]));
        assert_eq!(Codec::Opus.clock_rate(), 48_000);
        assert!(!Codec::Opus.is_video());
    }

    proptest! {
        #[test]
        fn never_panics(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Codec::Vp8.is_keyframe_start(&payload);
            let _ = Codec::H264.is_keyframe_start(&payload);
        }
    }
}
