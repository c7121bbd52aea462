//! The SDP file that describes a plain RTP stream (RFC 8866), as ffmpeg writes it with
//! `-sdp_file` (or `-f sdp`) and GStreamer users write by hand: which codec, which payload
//! type, and where the packets go (the `c=` address and the `m=` port).
//!
//! ```text
//! v=0
//! o=- 0 0 IN IP4 127.0.0.1
//! s=No Name
//! c=IN IP4 127.0.0.1
//! t=0 0
//! m=video 5004 RTP/AVP 96
//! a=rtpmap:96 VP8/90000
//! ```
//!
//! A section's `a=fmtp` for its payload type is kept ([`RtpStream::fmtp`], normalised by
//! [`crate::fmtp::normalise`]): the H.264 profile and `sprop-parameter-sets` a child must hear
//! about.
//!
//! The file is read from disk, but it may come from anywhere: [`parse`] checks every field it
//! uses and says what is wrong and on which line, never panics, and accepts only what a plain
//! RTP input can carry (one unencrypted unicast stream per section, one payload type each, at
//! most one video and one audio section, VP8/H.264 video and Opus audio).

use std::net::IpAddr;

use crate::keyframe::Codec;

/// Larger files are refused before parsing: an SDP of a few streams is well under 1 KiB.
pub const MAX_LEN: usize = 64 * 1024;

/// What an SDP file describes for a plain RTP input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpSession {
    /// The video stream (VP8 or H.264), if any.
    pub video: Option<RtpStream>,
    /// The audio stream (Opus), if any.
    pub audio: Option<RtpStream>,
}

/// One RTP stream: what arrives where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpStream {
    /// The codec, from `a=rtpmap`.
    pub codec: Codec,
    /// The payload type the packets carry.
    pub payload_type: u8,
    /// The address the packets are sent to (`c=`, the section's or the session's).
    pub addr: IpAddr,
    /// The port they are sent to (`m=`).
    pub port: u16,
    /// The format parameters of the payload type (`a=fmtp`), normalised, if given.
    pub fmtp: Option<String>,
}

/// Why an SDP file cannot describe a plain RTP input. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Over [`MAX_LEN`] bytes.
    #[error("SDP file too large ({0} bytes, at most {MAX_LEN})")]
    TooLarge(usize),
    /// The first line is not `v=0`.
    #[error("not an SDP file: the first line must be v=0")]
    NotSdp,
    /// A line is not `<letter>=<value>`.
    #[error("line {0}: not <type>=<value>")]
    Malformed(usize),
    /// A field has the wrong shape.
    #[error("line {line}: bad {field}: {value:?}")]
    Bad {
        /// Where.
        line: usize,
        /// Which field (`c=`, `m= port`, ...).
        field: &'static str,
        /// What was there (cut to 64 characters).
        value: String,
    },
    /// SRTP or another profile than RTP/AVP(F).
    #[error("line {line}: transport {proto:?} not supported (plain RTP/AVP only; no SRTP)")]
    Transport {
        /// Where.
        line: usize,
        /// The profile given.
        proto: String,
    },
    /// A section lists more than one payload type.
    #[error("line {0}: more than one payload type; a plain RTP input carries one per stream")]
    SeveralFormats(usize),
    /// A section's payload type has no `a=rtpmap` (dynamic types need one).
    #[error("m= section at line {line}: no a=rtpmap for payload type {payload_type}")]
    NoRtpmap {
        /// The section's `m=` line.
        line: usize,
        /// The payload type.
        payload_type: u8,
    },
    /// A codec we cannot forward, or at the wrong clock rate.
    #[error("line {line}: codec {codec:?} not supported (VP8/90000, H264/90000, opus/48000/2)")]
    Codec {
        /// The `a=rtpmap` line.
        line: usize,
        /// Its encoding.
        codec: String,
    },
    /// A video codec in an audio section or the reverse.
    #[error("m= section at line {0}: codec does not match the media kind")]
    KindMismatch(usize),
    /// Two video or two audio sections.
    #[error("line {0}: a second {1} section (at most one of each)")]
    Duplicate(usize, &'static str),
    /// A section without a `c=` address, at its level or the session's.
    #[error("m= section at line {0}: no c= address")]
    NoAddress(usize),
    /// A multicast destination (joining groups is not supported).
    #[error("m= section at line {0}: multicast address {1} not supported")]
    Multicast(usize, IpAddr),
    /// No video or audio section we can use.
    #[error("no m=video or m=audio section")]
    NoMedia,
}

/// Parses `text`. See the module documentation for what is accepted.
pub fn parse(text: &str) -> Result<RtpSession, SdpError> {
    if text.len() > MAX_LEN {
        return Err(SdpError::TooLarge(text.len()));
    }
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    if lines.next().map(|(_, l)| l.trim()) != Some("v=0") {
        return Err(SdpError::NotSdp);
    }
    let mut session_addr = None;
    let mut sections: Vec<Section> = Vec::new();
    for (n, line) in lines {
        let (kind, value) = match line.as_bytes() {
            [k, b'=', ..] if k.is_ascii_lowercase() => (*k, &line[2..]),
            _ => return Err(SdpError::Malformed(n)),
        };
        match (kind, sections.last_mut()) {
            (b'm', _) => sections.push(Section::parse(n, value)?),
            (b'c', None) => session_addr = Some(connection(n, value)?),
            (b'c', Some(s)) => s.addr = Some(connection(n, value)?),
            (b'a', Some(s)) => {
                if let Some(map) = value.strip_prefix("rtpmap:") {
                    s.rtpmap(n, map)?;
                } else if let Some(params) = value.strip_prefix("fmtp:") {
                    s.fmtp(n, params)?;
                }
            }
            _ => {}
        }
    }
    let mut session = RtpSession {
        video: None,
        audio: None,
    };
    for s in sections {
        let Some(kind) = s.kind else { continue };
        let (slot, name) = match kind {
            Kind::Video => (&mut session.video, "video"),
            Kind::Audio => (&mut session.audio, "audio"),
        };
        if slot.is_some() {
            return Err(SdpError::Duplicate(s.line, name));
        }
        let Some(codec) = s.codec else {
            return Err(SdpError::NoRtpmap {
                line: s.line,
                payload_type: s.payload_type,
            });
        };
        if codec.is_video() != (kind == Kind::Video) {
            return Err(SdpError::KindMismatch(s.line));
        }
        let addr = s.addr.or(session_addr).ok_or(SdpError::NoAddress(s.line))?;
        if addr.is_multicast() {
            return Err(SdpError::Multicast(s.line, addr));
        }
        *slot = Some(RtpStream {
            codec,
            payload_type: s.payload_type,
            addr,
            port: s.port,
            fmtp: s.fmtp,
        });
    }
    if session.video.is_none() && session.audio.is_none() {
        return Err(SdpError::NoMedia);
    }
    Ok(session)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

/// One `m=` section while parsing.
#[derive(Debug)]
struct Section {
    line: usize,
    /// `None`: a kind we do not carry (application, text): ignored.
    kind: Option<Kind>,
    port: u16,
    payload_type: u8,
    codec: Option<Codec>,
    addr: Option<IpAddr>,
    fmtp: Option<String>,
}

impl Section {
    /// `m=<media> <port>[/<count>] <proto> <fmt>`.
    fn parse(line: usize, value: &str) -> Result<Section, SdpError> {
        let mut parts = value.split_ascii_whitespace();
        let bad = |field, v: &str| bad(line, field, v);
        let kind = match parts.next() {
            Some("video") => Some(Kind::Video),
            Some("audio") => Some(Kind::Audio),
            Some(_) => None,
            None => return Err(bad("m= media", value)),
        };
        let port_field = parts.next().ok_or_else(|| bad("m= port", value))?;
        let proto = parts.next().ok_or_else(|| bad("m= transport", value))?;
        let formats: Vec<&str> = parts.collect();
        if kind.is_none() {
            return Ok(Section {
                line,
                kind,
                port: 0,
                payload_type: 0,
                codec: None,
                addr: None,
                fmtp: None,
            });
        }
        let port = match port_field.split_once('/') {
            None => port_field.parse::<u16>().ok(),
            Some((p, "1")) => p.parse::<u16>().ok(),
            Some(_) => None,
        }
        .filter(|&p| p != 0)
        .ok_or_else(|| bad("m= port (one non-zero port)", port_field))?;
        if !matches!(proto, "RTP/AVP" | "RTP/AVPF") {
            return Err(SdpError::Transport {
                line,
                proto: cut(proto),
            });
        }
        let payload_type = match formats.as_slice() {
            [one] => one
                .parse::<u8>()
                .ok()
                .filter(|&pt| pt < 128)
                .ok_or_else(|| bad("m= payload type (0-127)", one))?,
            [] => return Err(bad("m= payload type (0-127)", "")),
            _ => return Err(SdpError::SeveralFormats(line)),
        };
        Ok(Section {
            line,
            kind,
            port,
            payload_type,
            codec: None,
            addr: None,
            fmtp: None,
        })
    }

    /// `a=fmtp:<pt> <parameters>`; other payload types' lines are ignored, as for rtpmap.
    fn fmtp(&mut self, line: usize, params: &str) -> Result<(), SdpError> {
        if self.kind.is_none() {
            return Ok(());
        }
        let (pt, value) = params
            .split_once(' ')
            .ok_or_else(|| bad(line, "a=fmtp", params))?;
        let pt: u8 = pt.parse().map_err(|_| bad(line, "a=fmtp", params))?;
        if pt != self.payload_type {
            return Ok(());
        }
        let value = crate::fmtp::normalise(value).ok_or_else(|| bad(line, "a=fmtp", params))?;
        self.fmtp = Some(value);
        Ok(())
    }

    /// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`; other payload types' maps are
    /// ignored (they describe nothing this section sends).
    fn rtpmap(&mut self, line: usize, map: &str) -> Result<(), SdpError> {
        if self.kind.is_none() {
            return Ok(());
        }
        let (pt, encoding) = map
            .split_once(' ')
            .ok_or_else(|| bad(line, "a=rtpmap", map))?;
        let pt: u8 = pt.parse().map_err(|_| bad(line, "a=rtpmap", map))?;
        if pt != self.payload_type {
            return Ok(());
        }
        let mut fields = encoding.trim().split('/');
        let name = fields.next().unwrap_or_default();
        let clock = fields.next();
        let channels = fields.next();
        let codec = match (name.to_ascii_lowercase().as_str(), clock, channels) {
            ("vp8", Some("90000"), None) => Codec::Vp8,
            ("h264", Some("90000"), None) => Codec::H264,
            ("opus", Some("48000"), Some("2")) => Codec::Opus,
            _ => {
                return Err(SdpError::Codec {
                    line,
                    codec: cut(encoding.trim()),
                });
            }
        };
        self.codec = Some(codec);
        Ok(())
    }
}

/// `c=IN IP4 <addr>[/<ttl>[/<count>]]` or `c=IN IP6 <addr>[/<count>]`.
fn connection(line: usize, value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some("IN"), Some(family), Some(addr), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(line, "c=", value));
    };
    let addr = addr.split('/').next().unwrap_or_default();
    let ip: IpAddr = addr.parse().map_err(|_| bad(line, "c= address", addr))?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(bad(line, "c= address family", value)),
    }
}

fn bad(line: usize, field: &'static str, value: &str) -> SdpError {
    SdpError::Bad {
        line,
        field,
        value: cut(value),
    }
}

/// At most 64 characters of hostile input in an error message.
fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// What ffmpeg prints on stdout (not what it writes with `-sdp_file`).
    const PRINTED: &str = "SDP:\nv=0\r\n";
    /// What ffmpeg 5.1 writes for `-map 0:v -c:v copy -f rtp rtp://127.0.0.1:5004 -map 1:a
    /// -c:a copy -f rtp rtp://127.0.0.1:5006 -sdp_file x.sdp`, byte for byte.
    const FFMPEG_BOTH: &str = "v=0\r\n\
        o=- 0 0 IN IP4 127.0.0.1\r\n\
        s=No Name\r\n\
        t=0 0\r\n\
        a=tool:libavformat LIBAVFORMAT_VERSION\r\n\
        m=video 5004 RTP/AVP 96\r\n\
        c=IN IP4 127.0.0.1\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        m=audio 5006 RTP/AVP 97\r\n\
        c=IN IP4 127.0.0.1\r\n\
        a=rtpmap:97 opus/48000/2\r\n\
        a=fmtp:97 sprop-stereo=1\r\n";

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn ffmpeg_video_and_audio() {
        let s = parse(FFMPEG_BOTH).unwrap();
        assert_eq!(
            s.video,
            Some(RtpStream {
                codec: Codec::Vp8,
                payload_type: 96,
                addr: LOCAL,
                port: 5004,
                fmtp: None,
            })
        );
        assert_eq!(
            s.audio,
            Some(RtpStream {
                codec: Codec::Opus,
                payload_type: 97,
                addr: LOCAL,
                port: 5006,
                fmtp: Some("sprop-stereo=1".into()),
            })
        );
    }

    #[test]
    fn h264_session_level_address_crlf() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 10.0.0.1\r\ns=x\r\nc=IN IP4 10.0.0.2/64\r\nt=0 0\r\n\
                   m=video 6000 RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\n\
                   a=fmtp:102 packetization-mode=1; profile-level-id=42e01f\r\n";
        let v = parse(sdp).unwrap().video.unwrap();
        assert_eq!(v.codec, Codec::H264);
        assert_eq!(v.payload_type, 102);
        assert_eq!(v.addr, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(v.port, 6000);
        assert_eq!(
            v.fmtp.as_deref(),
            Some("packetization-mode=1;profile-level-id=42e01f")
        );
        let v6 = "v=0\nc=IN IP6 ::1\nm=video 6000 RTP/AVPF 96\na=rtpmap:96 vp8/90000\n";
        assert_eq!(
            parse(v6).unwrap().video.unwrap().addr,
            "::1".parse::<IpAddr>().unwrap()
        );
    }

    /// What ffmpeg 5.1 writes for `examples/media/test.h264` (`-c:v copy -f rtp ... -sdp_file`):
    /// the fmtp of the payload type is kept, another payload type's is not.
    #[test]
    fn h264_fmtp_is_kept() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\n\
                   a=tool:libavformat 59.27.100\r\nm=video 5004 RTP/AVP 96\r\n\
                   c=IN IP4 127.0.0.1\r\na=fmtp:97 x=1\r\na=rtpmap:96 H264/90000\r\n\
                   a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAH9kBQfsBEAAAAwAQAAADA8jxgySA,aMuMsg==; profile-level-id=42C01F\r\n";
        let v = parse(sdp).unwrap().video.unwrap();
        assert_eq!(v.codec, Codec::H264);
        assert_eq!(
            v.fmtp.as_deref(),
            Some(
                "packetization-mode=1;sprop-parameter-sets=Z0LAH9kBQfsBEAAAAwAQAAADA8jxgySA,aMuMsg==;profile-level-id=42C01F"
            )
        );
    }

    #[test]
    fn other_sections_are_ignored() {
        let sdp = "v=0\nc=IN IP4 127.0.0.1\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\n\
                   a=rtpmap:x y\nm=video 5004 RTP/AVP 96\na=rtpmap:97 H264/90000\n\
                   a=rtpmap:96 VP8/90000\n";
        assert_eq!(parse(sdp).unwrap().video.unwrap().codec, Codec::Vp8);
    }

    #[test]
    fn hostile_input_gets_a_clear_error() {
        let m = |body: &str| format!("v=0\nc=IN IP4 127.0.0.1\n{body}");
        let cases: Vec<(String, SdpError)> = vec![
            (String::new(), SdpError::NotSdp),
            (PRINTED.into(), SdpError::NotSdp),
            ("v=0\n".into(), SdpError::NoMedia),
            (m("garbage\n"), SdpError::Malformed(3)),
            (
                m("m=video 0 RTP/AVP 96\na=rtpmap:96 VP8/90000\n"),
                bad(3, "m= port (one non-zero port)", "0"),
            ),
            (
                m("m=video 5004/2 RTP/AVP 96\n"),
                bad(3, "m= port (one non-zero port)", "5004/2"),
            ),
            (
                m("m=video 70000 RTP/AVP 96\n"),
                bad(3, "m= port (one non-zero port)", "70000"),
            ),
            (
                m("m=video 5004 RTP/SAVP 96\n"),
                SdpError::Transport {
                    line: 3,
                    proto: "RTP/SAVP".into(),
                },
            ),
            (
                m("m=video 5004 RTP/AVP 96 97\n"),
                SdpError::SeveralFormats(3),
            ),
            (
                m("m=video 5004 RTP/AVP 200\n"),
                bad(3, "m= payload type (0-127)", "200"),
            ),
            (
                m("m=video 5004 RTP/AVP\n"),
                bad(3, "m= payload type (0-127)", ""),
            ),
            (
                m("m=video 5004 RTP/AVP 96\n"),
                SdpError::NoRtpmap {
                    line: 3,
                    payload_type: 96,
                },
            ),
            (
                m("m=video 5004 RTP/AVP 96\na=rtpmap:96 VP9/90000\n"),
                SdpError::Codec {
                    line: 4,
                    codec: "VP9/90000".into(),
                },
            ),
            (
                m("m=video 5004 RTP/AVP 96\na=rtpmap:96 VP8/48000\n"),
                SdpError::Codec {
                    line: 4,
                    codec: "VP8/48000".into(),
                },
            ),
            (
                m("m=audio 5004 RTP/AVP 96\na=rtpmap:96 VP8/90000\n"),
                SdpError::KindMismatch(3),
            ),
            (
                m(
                    "m=video 1 RTP/AVP 96\na=rtpmap:96 VP8/90000\nm=video 2 RTP/AVP 96\na=rtpmap:96 VP8/90000\n",
                ),
                SdpError::Duplicate(5, "video"),
            ),
            (
                "v=0\nm=video 5004 RTP/AVP 96\na=rtpmap:96 VP8/90000\n".into(),
                SdpError::NoAddress(2),
            ),
            (
                "v=0\nc=IN IP4 239.1.1.1/16\nm=video 5004 RTP/AVP 96\na=rtpmap:96 VP8/90000\n"
                    .into(),
                SdpError::Multicast(3, "239.1.1.1".parse().unwrap()),
            ),
            (
                "v=0\nc=IN IP4 ::1\n".into(),
                bad(2, "c= address family", "IN IP4 ::1"),
            ),
            (
                "v=0\nc=IN IP4 localhost\n".into(),
                bad(2, "c= address", "localhost"),
            ),
            ("v=0\nc=IN\n".into(), bad(2, "c=", "IN")),
            (
                m("m=video 5004 RTP/AVP 96\na=rtpmap:x\n"),
                bad(4, "a=rtpmap", "x"),
            ),
            (
                m("m=video 5004 RTP/AVP 96\na=fmtp:96\n"),
                bad(4, "a=fmtp", "96"),
            ),
            (
                m("m=video 5004 RTP/AVP 96\na=fmtp:x y=1\n"),
                bad(4, "a=fmtp", "x y=1"),
            ),
            (
                m("m=video 5004 RTP/AVP 96\na=fmtp:96 a=1; b c\n"),
                bad(4, "a=fmtp", "96 a=1; b c"),
            ),
            ("x".repeat(MAX_LEN + 1), SdpError::TooLarge(MAX_LEN + 1)),
        ];
        for (input, expected) in cases {
            let got = parse(&input);
            assert_eq!(got, Err(expected.clone()), "{input:?}");
            // Every message names what is wrong.
            assert!(!expected.to_string().is_empty());
        }
        let long = format!("v=0\nc=IN IP4 {}\n", "9".repeat(1000));
        let err = parse(&long).unwrap_err().to_string();
        assert!(
            err.len() < 200,
            "hostile input is cut in the message: {err}"
        );
    }

    proptest! {
        /// Arbitrary text never panics the parser.
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse(&text);
            let _ = parse(&format!("v=0\n{text}"));
        }

        /// Arbitrary lines after a valid header: an `Ok` always carries a stream with a
        /// non-zero port and a payload type below 128.
        #[test]
        fn ok_means_usable(lines in prop::collection::vec(
            prop::sample::select(vec![
                "c=IN IP4 127.0.0.1", "c=IN IP6 ::1", "m=video 5004 RTP/AVP 96",
                "m=audio 5006 RTP/AVP 97", "a=rtpmap:96 VP8/90000", "a=rtpmap:97 opus/48000/2",
                "a=rtpmap:96 H264/90000", "m=video 0 RTP/AVP 96", "m=text 1 RTP/AVP 1", "b=AS:1",
            ]),
            0..12,
        )) {
            let text = format!("v=0\n{}", lines.join("\n"));
            if let Ok(s) = parse(&text) {
                for stream in [s.video, s.audio].into_iter().flatten() {
                    prop_assert!(stream.port != 0 && stream.payload_type < 128);
                }
            }
        }
    }
}
