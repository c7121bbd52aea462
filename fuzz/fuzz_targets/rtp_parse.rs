//! RTP packets arrive from any parent: parsing and rewriting must never panic, and a rewritten
//! packet must parse again with the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treecast_media::keyframe::Codec;
use treecast_media::rtp::{ExtensionMap, LegHeader, Packet, rewrite};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::parse(data) else { return };
    let _ = p.csrcs().count();
    if let Some(ext) = p.extension() {
        let _ = ext.elements().count();
    }
    for codec in [Codec::Vp8, Codec::H264, Codec::Opus] {
        let _ = codec.is_keyframe_start(p.payload());
    }
    let leg = LegHeader { ssrc: 1, payload_type: 96, sequence: 2, timestamp: 3 };
    for map in [ExtensionMap::strip_all(), ExtensionMap::identity()] {
        let out = rewrite(&p, &leg, &map);
        let again = Packet::parse(&out).expect("a rewritten packet parses");
        assert_eq!(again.payload(), p.payload());
    }
});
