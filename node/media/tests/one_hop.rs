//! The modules composed as the shell will compose them, in virtual time: a parent's VP8-like
//! stream enters a node (parse, keyframe detection, munger, cache, per-leg rewrite), crosses a
//! lossy link to a child, the child NACKs its gaps, and the node answers from its cache. Midway
//! the node's parent changes. The child must end up with every packet forwarded, numbered
//! without gaps or jumps backwards, on its own SSRC and payload type.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use treecast_media::cache::PacketCache;
use treecast_media::impairment::{Impairment, ImpairmentConfig, Verdict};
use treecast_media::keyframe::Codec;
use treecast_media::munger::{Munged, Munger, MungerConfig};
use treecast_media::rtcp::{self, Compound, RtcpPacket};
use treecast_media::rtp::{self, ExtensionMap, LegHeader, Packet};

const CHILD_SSRC: u32 = 0xc0ffee;
const CHILD_PT: u8 = 102;

/// An upstream VP8 packet: descriptor with S=1, PID=0 at frame starts, payload header with P=0
/// on keyframes, and a one-byte extension (id 3) the child leg maps to id 1.
fn upstream_packet(ssrc: u32, seq: u16, ts: u32, frame_start: bool, keyframe: bool) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0x90);
    b.put_u8(96);
    b.put_u16(seq);
    b.put_u32(ts);
    b.put_u32(ssrc);
    b.put_slice(&[0xbe, 0xde, 0, 1, 0x30, 0x55, 0, 0]);
    b.put_u8(if frame_start { 0x10 } else { 0x00 });
    b.put_u8(if keyframe { 0x50 } else { 0x51 });
    b.put_slice(&seq.to_be_bytes());
    b.freeze()
}

#[test]
fn lossy_hop_with_parent_switch_is_repaired_by_nacks() {
    let seed = 0x5eed;
    let codec = Codec::Vp8;
    let mut munger = Munger::new(MungerConfig::for_codec(codec));
    let mut cache = PacketCache::video();
    let mut map = ExtensionMap::strip_all();
    map.set(3, Some(1));
    let mut link = Impairment::new(
        ImpairmentConfig {
            loss: 0.05,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(3),
            ..Default::default()
        },
        seed,
    );
    let mut scratch = BytesMut::with_capacity(64 * 1024);
    let mut received: BTreeMap<u16, Bytes> = BTreeMap::new();
    let mut forwarded = Vec::new();

    // Two parents with unrelated numbering; 5 packets per frame, keyframe every 30 frames.
    let parents = [(0x1111u32, 65_000u16, 4_000_000_000u32), (0x2222, 123, 77)];
    let mut now = Duration::ZERO;
    for (p, &(ssrc, first_seq, first_ts)) in parents.iter().enumerate() {
        if p == 1 {
            munger.switch_source();
        }
        // The new parent joins mid-GOP: its first frames are not keyframes.
        let offset = if p == 1 { 17 * 5 } else { 0 };
        for i in offset..offset + 600 {
            now += Duration::from_millis(7);
            let frame = i / 5;
            let raw = upstream_packet(
                ssrc,
                first_seq.wrapping_add(i as u16),
                first_ts.wrapping_add(frame as u32 * 3000),
                i % 5 == 0,
                frame % 30 == 0,
            );
            let packet = Packet::parse(&raw).expect("upstream packet parses");
            let keyframe = codec.is_keyframe_start(packet.payload());
            let Munged::Forward {
                sequence,
                timestamp,
            } = munger.process(packet.sequence, packet.timestamp, keyframe, now)
            else {
                continue;
            };
            let leg = LegHeader {
                ssrc: CHILD_SSRC,
                payload_type: CHILD_PT,
                sequence,
                timestamp,
            };
            rtp::rewrite_into(&packet, &leg, &map, &mut scratch);
            let out = scratch.split().freeze();
            cache.insert(sequence, out.clone());
            forwarded.push(sequence);
            if let Verdict::DeliverAt(_) = link.decide(now, out.len()) {
                received.insert(sequence, out);
            }
        }
    }

    // The child NACKs every gap in what it saw (in ascending wrapping order from the first).
    let first = forwarded[0];
    let mut missing: Vec<u16> = forwarded
        .iter()
        .copied()
        .filter(|s| !received.contains_key(s))
        .collect();
    missing.sort_by_key(|s| s.wrapping_sub(first));
    assert!(!missing.is_empty(), "seed {seed:#x}: the link lost nothing");
    let mut feedback = BytesMut::new();
    // Only the newest `capacity` packets can still be repaired; NACK those.
    let window = forwarded.len().saturating_sub(cache.capacity());
    let recent: Vec<u16> = missing
        .iter()
        .copied()
        .filter(|s| forwarded[window..].contains(s))
        .collect();
    rtcp::nack(
        CHILD_SSRC,
        CHILD_SSRC,
        recent.iter().copied(),
        &mut feedback,
    );

    // The node answers from its cache (retransmissions take the same lossless path here).
    for item in Compound::new(&feedback) {
        let Ok(RtcpPacket::Nack(nack)) = item else {
            panic!("seed {seed:#x}: bad feedback {item:?}");
        };
        for seq in nack.seqs() {
            let packet = cache.get(seq).expect("NACKed packet is cached");
            received.insert(seq, packet.clone());
        }
    }

    // Everything in the cache window arrived, and the whole stream is gapless and on the leg.
    let mut previous: Option<(u16, u32)> = None;
    for &seq in &forwarded[window..] {
        let bytes = received
            .get(&seq)
            .unwrap_or_else(|| panic!("seed {seed:#x}: {seq} missing"));
        let p = Packet::parse(bytes).expect("forwarded packet parses");
        assert_eq!((p.ssrc, p.payload_type), (CHILD_SSRC, CHILD_PT));
        assert_eq!(p.extension().and_then(|e| e.find(1)), Some(&[0x55u8][..]));
        if let Some((s, ts)) = previous {
            assert_eq!(p.sequence, s.wrapping_add(1), "seed {seed:#x}: gap");
            assert!(
                p.timestamp.wrapping_sub(ts) as i32 >= 0,
                "seed {seed:#x}: ts back"
            );
        }
        previous = Some((p.sequence, p.timestamp));
    }
    let all: Vec<u16> = forwarded
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .collect();
    assert!(
        all.iter().all(|d| *d == 1),
        "seed {seed:#x}: outgoing numbering has a gap"
    );
}
