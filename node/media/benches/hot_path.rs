//! Per-packet cost of the pure hot path, std only (no benchmark crate):
//! parse, keyframe check, munger, cache insert, and a rewrite plus queue admission for each of
//! four children. Run with `cargo bench -p treecast-media --bench hot_path`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use treecast_media::cache::PacketCache;
use treecast_media::child_queue::ChildQueue;
use treecast_media::keyframe::Codec;
use treecast_media::munger::{Munged, Munger, MungerConfig};
use treecast_media::rtp::{self, ExtensionMap, LegHeader, Packet};

const CHILDREN: usize = 4;
const PACKETS: usize = 200_000;

fn packet(seq: u16, ts: u32, keyframe: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(1200);
    b.put_slice(&[0x90, 96]);
    b.put_u16(seq);
    b.put_u32(ts);
    b.put_u32(0x1234);
    // abs-send-time (id 2) and transport-cc (id 3), as Chrome sends them.
    b.put_slice(&[0xbe, 0xde, 0, 2, 0x22, 1, 2, 3, 0x31, 0, 7, 0]);
    b.put_slice(&[0x10, if keyframe { 0x50 } else { 0x51 }]);
    b.put_bytes(0xab, 1200 - b.len());
    b.freeze()
}

fn main() {
    let input: Vec<Bytes> = (0..PACKETS)
        .map(|i| packet(i as u16, (i / 5) as u32 * 3000, i % 300 == 0))
        .collect();
    let mut maps = Vec::new();
    for child in 0..CHILDREN {
        let mut map = ExtensionMap::strip_all();
        map.set(2, Some(child as u8 + 1)); // keep abs-send-time under a per-leg id
        maps.push(map);
    }

    let mut munger = Munger::new(MungerConfig::for_codec(Codec::Vp8));
    let mut cache = PacketCache::video();
    let mut queues: Vec<ChildQueue<Bytes>> = (0..CHILDREN).map(|_| ChildQueue::new(256)).collect();
    let mut scratch = BytesMut::with_capacity(1 << 20);
    let mut now = Duration::ZERO;

    let start = Instant::now();
    for raw in &input {
        now += Duration::from_micros(500);
        let Ok(p) = Packet::parse(raw) else { continue };
        let keyframe = Codec::Vp8.is_keyframe_start(p.payload());
        let Munged::Forward {
            sequence,
            timestamp,
        } = munger.process(p.sequence, p.timestamp, keyframe, now)
        else {
            continue;
        };
        cache.insert(sequence, raw.clone());
        for (child, queue) in queues.iter_mut().enumerate() {
            let leg = LegHeader {
                ssrc: 0x100 + child as u32,
                payload_type: 102,
                sequence,
                timestamp,
            };
            rtp::rewrite_into(&p, &leg, &maps[child], &mut scratch);
            let out = scratch.split().freeze();
            let _ = queue.push(out, keyframe);
            // Drain as a fast child would.
            black_box(queue.pop());
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{PACKETS} packets of 1200 bytes to {CHILDREN} children: {:.0} ns per upstream packet, \
         {:.0} ns per forwarded copy",
        elapsed.as_nanos() as f64 / PACKETS as f64,
        elapsed.as_nanos() as f64 / (PACKETS * CHILDREN) as f64,
    );
}
