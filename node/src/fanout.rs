//! The fan-out: one [`Feed`] per track carries the packets from the upstream (or the file
//! source) to every child leg and to the recorder.
//!
//! Each feed is a `tokio::sync::broadcast` ring of [`FEED_CAPACITY`] packets: the producer never
//! waits, every consumer reads at its own pace, and a consumer that falls more than the ring
//! behind is told how much it lost (`Lagged`). The child leg then drops to the next keyframe and
//! asks for one (see `child.rs`). Memory is bounded by the ring, whatever the number of
//! children; payloads are `Bytes`, shared, never copied.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::{broadcast, mpsc};
use treecast_media::cache::{AUDIO_CAPACITY, PacketCache, VIDEO_CAPACITY};
use treecast_media::gop::GopCache;

use crate::codec::{Codec, CodecExt, MediaKind};
use crate::node::lock;

/// Packets a feed holds for its slowest consumer: about two seconds of 1 Mb/s video.
pub const FEED_CAPACITY: usize = 512;

/// A packet as it travels through the fan-out.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The packet, header extensions already stripped (they are per leg).
    pub packet: rtp::Packet,
    /// Whether a decoder can start here (first packet of a keyframe; every audio packet).
    pub keyframe: bool,
    /// Which upstream source (parent connection) it came from; changes when the node
    /// reconnects, so each child leg's munger can switch sources.
    pub source: u32,
}

/// One track of the broadcast as this node receives it.
#[derive(Debug)]
pub struct Feed {
    /// Which codec.
    pub codec: Codec,
    /// The codec as negotiated upstream, fmtp line included (copied onto child tracks: pitfall 9).
    pub rtp_codec: RTCRtpCodec,
    packets: broadcast::Sender<Forwarded>,
    /// Lock: replaced when a new upstream session takes over the requests; otherwise only
    /// locked for a `try_send`, never across an `.await`.
    keyframe_requests: Mutex<mpsc::Sender<()>>,
    source: AtomicU32,
    /// Keyframe starts pushed so far (video), so the upstream request limiter can tell that
    /// a held request was satisfied.
    keyframes: AtomicU64,
    /// The packets since the last keyframe, for fast start (video, when enabled). Lock: taken
    /// once per pushed packet by the one producer and once per new child to copy the GOP out;
    /// never across an `.await`.
    gop: Option<Mutex<GopCache<Forwarded>>>,
    /// The recent packets of the feed by sequence number, for answering children's NACKs
    /// (`treecast_media::cache`; video and audio). Lock: taken once per pushed packet by the
    /// one producer and once per NACKed packet by a child leg; never across an `.await`.
    cache: Mutex<PacketCache<Forwarded>>,
    /// Where children's cache misses go: the upstream leg's NACK sender (`nack.rs`), if any.
    /// Lock: replaced when a new upstream session takes over; otherwise only locked for a
    /// `try_send`.
    nacks_upstream: Mutex<Option<mpsc::Sender<u16>>>,
    /// Hash of the latest keyframe start pushed (video), so a new parent's keyframe can be
    /// told apart from the one we forwarded last (see [`Feed::may_switch_at`]). Only the
    /// latest: a looped file repeats its keyframes every loop.
    keyframe_hash: AtomicU64,
    /// RTP timestamp of the last packet pushed, and of the last keyframe start (video): equal
    /// while the feed has forwarded nothing past its latest keyframe.
    last_ts: AtomicU32,
    keyframe_ts: AtomicU32,
    /// Which parent each recent source number came from (its name: a node id, a URL), so a
    /// child leg never sends a node's own packets back to it (see [`Feed::comes_from`]).
    /// Lock: taken when a source starts and when a leg sees a new source number.
    origins: Mutex<VecDeque<(u32, String)>>,
}

/// How many source numbers a feed remembers the parent of.
const MAX_ORIGINS: usize = 8;

impl Feed {
    /// A feed and the receiving end of its keyframe requests. The request channel is small;
    /// requests beyond it are dropped, which merges them (one is already on its way).
    pub fn new(codec: Codec, rtp_codec: RTCRtpCodec) -> (Arc<Feed>, mpsc::Receiver<()>) {
        Self::with_fast_start(codec, rtp_codec, false)
    }

    /// Like [`Feed::new`]; with `fast_start`, a video feed also keeps its current GOP
    /// (`treecast_media::gop`, bounded: 1024 packets, 1 MiB) for new children.
    pub fn with_fast_start(
        codec: Codec,
        rtp_codec: RTCRtpCodec,
        fast_start: bool,
    ) -> (Arc<Feed>, mpsc::Receiver<()>) {
        let (packets, _) = broadcast::channel(FEED_CAPACITY);
        let (keyframe_requests, rx) = mpsc::channel(16);
        let feed = Feed {
            codec,
            rtp_codec,
            packets,
            keyframe_requests: Mutex::new(keyframe_requests),
            source: AtomicU32::new(0),
            keyframes: AtomicU64::new(0),
            gop: (fast_start && codec.is_video()).then(|| Mutex::new(GopCache::default())),
            cache: Mutex::new(PacketCache::new(if codec.is_video() {
                VIDEO_CAPACITY
            } else {
                AUDIO_CAPACITY
            })),
            nacks_upstream: Mutex::new(None),
            keyframe_hash: AtomicU64::new(0),
            last_ts: AtomicU32::new(0),
            keyframe_ts: AtomicU32::new(0),
            origins: Mutex::new(VecDeque::new()),
        };
        (Arc::new(feed), rx)
    }

    /// Video or audio.
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }

    /// Hands a packet to every consumer: strips header extensions (their ids are negotiated
    /// per leg, pitfall 1) and marks keyframe starts once here rather than per child.
    pub fn push(&self, mut packet: rtp::Packet) {
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        let keyframe = self.codec.is_keyframe_start(&packet.payload);
        let ts = packet.header.timestamp;
        self.last_ts.store(ts, Ordering::Relaxed);
        if keyframe && self.codec.is_video() {
            self.keyframe_ts.store(ts, Ordering::Relaxed);
            self.keyframe_hash
                .store(payload_hash(&packet.payload), Ordering::Relaxed);
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let source = self.source.load(Ordering::Relaxed);
        let f = Forwarded {
            packet,
            keyframe,
            source,
        };
        if let Some(gop) = &self.gop {
            let len = f.packet.payload.len();
            lock(gop).push(f.clone(), len, keyframe);
        }
        lock(&self.cache).insert(f.packet.header.sequence_number, f.clone());
        // No receivers is normal (no child yet).
        let _ = self.packets.send(f);
    }

    /// Whether a new parent's keyframe starting with `payload` is a good place to switch to
    /// it while the current source still feeds us (make-before-break).
    ///
    /// Every hop forwards payloads untouched, so the same frame from another parent has the
    /// same bytes. A keyframe other than the one we forwarded last is taken to be ahead of us
    /// (the switching child asks for a live start, `Body::Offer::live`, so the new parent
    /// does not replay older ones): switch. The one we forwarded last, with nothing after it
    /// yet, is a new path a little slower than the old one: switch, and that one frame is
    /// shown twice. The one we forwarded last with later frames forwarded too is a path
    /// behind ours (or a fast-start replay of our GOP): switching there would show those
    /// frames again, so wait for the next keyframe.
    pub fn may_switch_at(&self, payload: &[u8]) -> bool {
        payload_hash(payload) != self.keyframe_hash.load(Ordering::Relaxed)
            || self.last_ts.load(Ordering::Relaxed) == self.keyframe_ts.load(Ordering::Relaxed)
    }

    /// Names the parent the current source comes from.
    pub fn set_origin(&self, origin: &str) {
        let mut origins = lock(&self.origins);
        if origins.len() == MAX_ORIGINS {
            origins.pop_front();
        }
        origins.push_back((self.source_id(), origin.to_owned()));
    }

    /// Whether packets of `source` come from the parent named `node`. During a swap a node's
    /// new child is, for a moment, still the parent it receives from: sending those packets
    /// back would make them circle between the two for as long as the swap lasts.
    pub fn comes_from(&self, source: u32, node: &str) -> bool {
        lock(&self.origins)
            .iter()
            .any(|(s, origin)| *s == source && origin == node)
    }

    /// The current upstream source number (see [`Feed::switch_source`]).
    pub fn source_id(&self) -> u32 {
        self.source.load(Ordering::Relaxed)
    }

    /// Keyframe starts pushed so far (0 for audio).
    pub fn keyframes_seen(&self) -> u64 {
        self.keyframes.load(Ordering::Relaxed)
    }

    /// The packets since the last keyframe, oldest first (empty without fast start or before
    /// the first keyframe).
    pub fn gop_snapshot(&self) -> Vec<Forwarded> {
        self.gop
            .as_ref()
            .map(|g| lock(g).iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The packet of `source` that arrived as `seq`, if the cache still holds it.
    pub fn cached(&self, source: u32, seq: u16) -> Option<Forwarded> {
        lock(&self.cache)
            .get(seq)
            .filter(|f| f.source == source)
            .cloned()
    }

    /// A child asked for `seq` of `source` and the cache lacks it: hand it to the upstream
    /// leg's NACK sender. False when it cannot go up (no upstream, another source by now, or
    /// the sender's queue is full: the child will ask again).
    pub fn nack_upstream(&self, source: u32, seq: u16) -> bool {
        if source != self.source.load(Ordering::Relaxed) {
            return false;
        }
        lock(&self.nacks_upstream)
            .as_ref()
            .is_some_and(|tx| tx.try_send(seq).is_ok())
    }

    /// The receiving end of the cache misses to NACK upstream, for the current source;
    /// replaces the previous one (whose channel closes).
    pub fn nack_requests(&self) -> mpsc::Receiver<u16> {
        let (tx, rx) = mpsc::channel(256);
        *lock(&self.nacks_upstream) = Some(tx);
        rx
    }

    /// A new consumer, starting with the next packet.
    pub fn subscribe(&self) -> broadcast::Receiver<Forwarded> {
        self.packets.subscribe()
    }

    /// Asks the source for a keyframe. Never blocks; merges with a request already pending.
    pub fn request_keyframe(&self) {
        let _ = lock(&self.keyframe_requests).try_send(());
    }

    /// A new upstream source feeds this track from now on (the node reconnected): packets get
    /// the next source number, the cached GOP (of the old source) is dropped, and keyframe
    /// requests go to the returned receiver; the previous receiver's channel closes.
    pub fn switch_source(&self) -> mpsc::Receiver<()> {
        self.source.fetch_add(1, Ordering::Relaxed);
        if let Some(gop) = &self.gop {
            lock(gop).clear();
        }
        lock(&self.cache).clear();
        *lock(&self.nacks_upstream) = None;
        let (tx, rx) = mpsc::channel(16);
        *lock(&self.keyframe_requests) = tx;
        rx
    }
}

/// The tracks of the broadcast, at most one per kind, fixed once known.
#[derive(Debug, Clone, Default)]
pub struct Tracks {
    /// The video feed, if the broadcast has video.
    pub video: Option<Arc<Feed>>,
    /// The audio feed, if the broadcast has audio.
    pub audio: Option<Arc<Feed>>,
}

impl Tracks {
    /// All feeds, video first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Feed>> {
        self.video.iter().chain(self.audio.iter())
    }

    /// Adds a feed in the slot of its kind; a second feed of a kind is refused.
    pub fn insert(&mut self, feed: Arc<Feed>) -> bool {
        let slot = match feed.kind() {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
        };
        if slot.is_some() {
            return false;
        }
        *slot = Some(feed);
        true
    }
}

/// A 64-bit hash of a payload (not cryptographic: it tells frames of one stream apart).
fn payload_hash(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.payload = bytes::Bytes::from_static(&[0x10, 0, 0, 0]);
        p
    }

    #[test]
    fn the_cache_answers_for_the_current_source_only() {
        let (feed, _requests) = Feed::new(Codec::Vp8, Codec::Vp8.rtp_codec());
        for seq in 100..110 {
            feed.push(packet(seq));
        }
        assert_eq!(
            feed.cached(0, 105).map(|f| f.packet.header.sequence_number),
            Some(105)
        );
        assert!(feed.cached(0, 110).is_none(), "never pushed");
        assert!(feed.cached(1, 105).is_none(), "another source");
        let _requests = feed.switch_source();
        assert!(
            feed.cached(0, 105).is_none(),
            "a new source clears the cache"
        );
        feed.push(packet(7));
        assert!(feed.cached(1, 7).is_some());
    }

    #[test]
    fn misses_go_upstream_only_while_an_upstream_listens() {
        let (feed, _requests) = Feed::new(Codec::Vp8, Codec::Vp8.rtp_codec());
        assert!(!feed.nack_upstream(0, 5), "no upstream yet (the root)");
        let mut misses = feed.nack_requests();
        assert!(feed.nack_upstream(0, 5));
        assert_eq!(misses.try_recv().ok(), Some(5));
        assert!(!feed.nack_upstream(1, 6), "a miss of another source");
        let _requests = feed.switch_source();
        assert!(
            !feed.nack_upstream(1, 6),
            "the old upstream's sender is gone"
        );
        assert!(misses.try_recv().is_err());
    }

    #[test]
    fn audio_has_a_cache_too() {
        let (feed, _requests) = Feed::new(Codec::Opus, Codec::Opus.rtp_codec());
        for seq in 0..200 {
            feed.push(packet(seq));
        }
        assert!(feed.cached(0, 199).is_some());
        assert!(
            feed.cached(0, 199 - AUDIO_CAPACITY as u16).is_none(),
            "audio keeps {AUDIO_CAPACITY} packets"
        );
    }
}
