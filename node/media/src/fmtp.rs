//! Carrying a track's `a=fmtp` line to the children (issue 3: "H.264 fmtp carried over").
//!
//! webrtc 0.21 answers with the *offer's* fmtp for every codec it matched, so a child learns
//! nothing of what the source really sends (profile, `sprop-parameter-sets`). A node therefore
//! rewrites the H.264 part of the answer it gives a child: it picks the child's payload type
//! whose configuration matches the track's ([`h264_compatible`]: same profile and
//! packetization mode, RFC 6184 section 8.2.2, where only the level may differ), and writes
//! the track's own fmtp there ([`rewrite_answer`]).
//!
//! All of this reads text that came from the network or a file: nothing here panics.

/// H.264 profiles as RFC 6184 section 8.1 (Table 5) derives them from `profile-level-id`:
/// `profile_idc` and the constraint flags together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Profile {
    /// Constrained Baseline (what WebRTC peers must support).
    ConstrainedBaseline,
    /// Baseline.
    Baseline,
    /// Main.
    Main,
    /// Extended.
    Extended,
    /// High.
    High,
    /// Constrained High.
    ConstrainedHigh,
    /// Another `profile_idc` (High 10, 4:2:2, 4:4:4, ...): compared by number.
    Other(u8),
}

/// The value of `key` in an fmtp line (`k=v;k=v`, spaces around `;` allowed), keys compared
/// case-insensitively.
pub fn parameter<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// The profile an H.264 fmtp line announces; `None` without a well-formed
/// `profile-level-id` (6 hex digits).
pub fn h264_profile(fmtp: &str) -> Option<H264Profile> {
    let id = parameter(fmtp, "profile-level-id")?;
    if id.len() != 6 || !id.is_ascii() {
        return None;
    }
    let idc = u8::from_str_radix(&id[0..2], 16).ok()?;
    let iop = u8::from_str_radix(&id[2..4], 16).ok()?;
    let _level = u8::from_str_radix(&id[4..6], 16).ok()?;
    let set = |n: u8| iop & (0x80 >> n) != 0;
    Some(match idc {
        // constraint_set1 makes Baseline Constrained Baseline, and so does Main or Extended
        // with the flags of a Constrained Baseline decoder (RFC 6184 Table 5).
        0x42 if set(1) => H264Profile::ConstrainedBaseline,
        0x4d if set(0) => H264Profile::ConstrainedBaseline,
        0x58 if set(0) && set(1) => H264Profile::ConstrainedBaseline,
        0x42 => H264Profile::Baseline,
        0x58 if set(0) => H264Profile::Baseline,
        0x4d => H264Profile::Main,
        0x58 => H264Profile::Extended,
        0x64 if set(4) && set(5) => H264Profile::ConstrainedHigh,
        0x64 => H264Profile::High,
        other => H264Profile::Other(other),
    })
}

/// The packetization mode an H.264 fmtp line announces (absent: 0, RFC 6184 section 8.1).
pub fn packetization_mode(fmtp: &str) -> Option<u8> {
    match parameter(fmtp, "packetization-mode") {
        None => Some(0),
        Some(m) => m.parse().ok(),
    }
}

/// Whether a receiver that offered `offered` can take a stream described by `ours` on that
/// payload type: same profile and packetization mode (the level may differ, RFC 6184 section
/// 8.2.2).
pub fn h264_compatible(ours: &str, offered: &str) -> bool {
    let profile = h264_profile(ours);
    profile.is_some()
        && profile == h264_profile(offered)
        && packetization_mode(ours).is_some()
        && packetization_mode(ours) == packetization_mode(offered)
}

/// Normalises an fmtp value from an SDP file: parameters trimmed and joined by `;` as webrtc
/// writes them. `None` if it is empty or holds a character an SDP attribute cannot carry
/// (controls, spaces inside a parameter, non-ASCII) or is longer than [`MAX_FMTP`].
pub fn normalise(value: &str) -> Option<String> {
    if value.len() > MAX_FMTP {
        return None;
    }
    let mut out = Vec::new();
    for p in value.split(';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        if !p.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        out.push(p);
    }
    (!out.is_empty()).then(|| out.join(";"))
}

/// Longest fmtp value accepted: a `sprop-parameter-sets` of a 1080p stream is under 200 bytes.
pub const MAX_FMTP: usize = 1024;

/// `answer` with the `m=` section of `kind` (`video`, `audio`) that lists `payload_type`
/// reduced to that one payload type, whose `a=fmtp` becomes `fmtp`: the child learns exactly
/// what it will receive. The other formats' `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines go too
/// (an answer may list a subset of the offered formats, RFC 3264 section 6.1); keeping them
/// would also make webrtc 0.21 on a treecast child negotiate only the formats that match its
/// own exactly and drop ours. Everything else is left as it was. `None` when there is no such
/// section.
pub fn rewrite_answer(answer: &str, kind: &str, payload_type: u8, fmtp: &str) -> Option<String> {
    let pt = payload_type.to_string();
    let mut out = String::with_capacity(answer.len() + fmtp.len());
    let mut in_section = false;
    let mut found = false;
    let mut wrote_fmtp = false;
    for line in answer.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        let eol = &line[bare.len()..];
        if let Some(m) = bare.strip_prefix("m=") {
            if in_section && !wrote_fmtp {
                // The section had no line of our format to put it after.
                out.push_str(&format!("a=fmtp:{pt} {fmtp}\r\n"));
                wrote_fmtp = true;
            }
            // `m=<media> <port> <proto> <fmt> ...`
            let fields: Vec<&str> = m.split(' ').collect();
            in_section = !found
                && fields.first() == Some(&kind)
                && fields.len() > 3
                && fields[3..].contains(&pt.as_str());
            if in_section {
                found = true;
                out.push_str(&format!(
                    "m={} {} {} {pt}{eol}",
                    fields[0], fields[1], fields[2]
                ));
                continue;
            }
        } else if in_section {
            let attr = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|a| bare.strip_prefix(a).map(|rest| (*a, rest)));
            if let Some((attr, rest)) = attr {
                let of = rest.split([' ', '\t']).next().unwrap_or_default();
                if of != pt {
                    continue; // another format's line: that format is gone
                }
                if attr == "a=fmtp:" {
                    if !wrote_fmtp {
                        out.push_str(&format!("a=fmtp:{pt} {fmtp}{eol}"));
                        wrote_fmtp = true;
                    }
                    continue;
                }
                out.push_str(line);
                if attr == "a=rtpmap:" && !wrote_fmtp {
                    // Right after the rtpmap, where webrtc writes it; a later fmtp line of
                    // this payload type is then dropped above.
                    out.push_str(&format!("a=fmtp:{pt} {fmtp}{eol}"));
                    wrote_fmtp = true;
                }
                continue;
            }
        }
        out.push_str(line);
    }
    if in_section && !wrote_fmtp {
        if !out.ends_with('\n') {
            out.push_str("\r\n");
        }
        out.push_str(&format!("a=fmtp:{pt} {fmtp}\r\n"));
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What ffmpeg 5.1 writes (`-sdp_file`) for `examples/media/test.h264` (x264 baseline, 3.1).
    const FFMPEG: &str = "packetization-mode=1; sprop-parameter-sets=Z0LAH9kBQfsBEAAAAwAQAAADA8jxgySA,aMuMsg==; profile-level-id=42C01F";

    #[test]
    fn profiles_follow_rfc_6184_table_5() {
        let p = |id: &str| h264_profile(&format!("profile-level-id={id}"));
        assert_eq!(p("42e01f"), Some(H264Profile::ConstrainedBaseline));
        assert_eq!(p("42C01F"), Some(H264Profile::ConstrainedBaseline));
        assert_eq!(p("42001f"), Some(H264Profile::Baseline));
        assert_eq!(p("4d001f"), Some(H264Profile::Main));
        assert_eq!(p("4d801f"), Some(H264Profile::ConstrainedBaseline));
        assert_eq!(p("640c1f"), Some(H264Profile::ConstrainedHigh));
        assert_eq!(p("64001f"), Some(H264Profile::High));
        assert_eq!(p("f4001f"), Some(H264Profile::Other(0xf4)));
        assert_eq!(p("42e0"), None);
        assert_eq!(p("42é01"), None);
        assert_eq!(p("zz001f"), None);
        assert_eq!(h264_profile("packetization-mode=1"), None);
    }

    #[test]
    fn parameters_and_compatibility() {
        assert_eq!(parameter(FFMPEG, "Profile-Level-Id"), Some("42C01F"));
        assert_eq!(packetization_mode(FFMPEG), Some(1));
        assert_eq!(packetization_mode("profile-level-id=42e01f"), Some(0));
        assert_eq!(packetization_mode("packetization-mode=x"), None);
        let chrome = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        assert!(
            h264_compatible(FFMPEG, chrome),
            "the level and iop spelling may differ"
        );
        assert!(!h264_compatible(
            FFMPEG,
            "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"
        ));
        assert!(!h264_compatible(
            FFMPEG,
            "packetization-mode=1;profile-level-id=640c1f"
        ));
        assert!(!h264_compatible(
            "packetization-mode=1",
            "packetization-mode=1"
        ));
    }

    #[test]
    fn normalise_joins_and_refuses_what_sdp_cannot_carry() {
        assert_eq!(
            normalise(FFMPEG).as_deref(),
            Some(
                "packetization-mode=1;sprop-parameter-sets=Z0LAH9kBQfsBEAAAAwAQAAADA8jxgySA,aMuMsg==;profile-level-id=42C01F"
            )
        );
        assert_eq!(normalise(" ; "), None);
        assert_eq!(normalise("a=1; b c=2"), None);
        assert_eq!(normalise("a=\u{7}"), None);
        assert_eq!(normalise(&"a".repeat(MAX_FMTP + 1)), None);
    }

    const ANSWER: &str = "v=0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102 103\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack\r\na=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\n\
        a=rtcp-fb:102 nack pli\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=ssrc:1 cname:x\r\n";

    #[test]
    fn the_answer_names_only_our_format_with_our_fmtp() {
        let ours = normalise(FFMPEG).unwrap();
        let out = rewrite_answer(ANSWER, "video", 102, &ours).unwrap();
        let expected = format!(
            "v=0\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\na=rtpmap:102 H264/90000\r\n\
             a=fmtp:102 {ours}\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
             a=ssrc:1 cname:x\r\n"
        );
        assert_eq!(out, expected);
        // Without an fmtp line in the answer, one is added after the rtpmap.
        let bare = ANSWER.replace(
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
            "",
        );
        assert_eq!(
            rewrite_answer(&bare, "video", 102, &ours).unwrap(),
            expected
        );
        assert_eq!(rewrite_answer(ANSWER, "video", 111, &ours), None);
        assert_eq!(rewrite_answer(ANSWER, "audio", 102, &ours), None);
    }

    proptest! {
        /// Arbitrary answers never panic the rewrite, and every kept format line names the
        /// kept payload type.
        #[test]
        fn rewrite_never_panics(lines in prop::collection::vec(
            prop::sample::select(vec![
                "m=video 9 UDP/TLS/RTP/SAVPF 96 102", "m=video 9", "m=audio 9 X 102",
                "a=rtpmap:102 H264/90000", "a=fmtp:102 x=1", "a=fmtp:96", "a=rtcp-fb:",
                "a=rtpmap:96 VP8/90000", "a=fmtp:", "\r", "m=", "a=rtcp-fb:102 nack",
            ]),
            0..16,
        ), text in ".{0,200}") {
            let answer = lines.join("\r\n");
            if let Some(out) = rewrite_answer(&answer, "video", 102, "y=2") {
                prop_assert!(out.contains("a=fmtp:102 y=2"));
            }
            let _ = rewrite_answer(&text, "video", 102, "y=2");
        }
    }
}
