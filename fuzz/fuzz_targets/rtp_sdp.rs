//! The SDP file of a plain RTP input may come from anywhere: parsing must never panic, and an
//! accepted description must name a usable stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treecast_media::rtp_sdp::parse;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(session) = parse(&text) {
        for stream in [session.video, session.audio].into_iter().flatten() {
            assert!(stream.port != 0 && stream.payload_type < 128);
            assert!(!stream.addr.is_multicast());
        }
    }
});
