//! Recording what a viewer receives: VP8 to IVF, H.264 to Annex-B, Opus to Ogg.
//!
//! Video goes through rtc's `SampleBuilder`, which reorders, waits for retransmissions and drops
//! a frame it cannot complete, so every frame written is whole. Writing starts at the first
//! keyframe. Audio is written packet by packet with rtc's `OggWriter`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::media::io::Writer;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::codec::{Codec, vp8_descriptor_len};
use crate::fanout::{Feed, Forwarded, Tracks};

/// Packets the sample builder may hold back waiting for a missing one (a retransmission).
const MAX_LATE_PACKETS: u16 = 512;
/// How long it waits for a missing packet before it gives the frame up: several NACK round
/// trips, short enough that a permanent loss does not stall the recording for seconds.
const MAX_LATE_TIME: std::time::Duration = std::time::Duration::from_millis(500);

/// What to record and when to stop.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Video output (`.ivf` for VP8, Annex-B for H.264).
    pub video: PathBuf,
    /// Audio output (Ogg Opus); `None` skips audio.
    pub audio: Option<PathBuf>,
    /// Stop after this many video frames.
    pub frames: Option<u64>,
    /// Test only: ask for a keyframe this often (exercises the request merging upstream).
    pub keyframe_request_every: Option<std::time::Duration>,
    /// Print `recording started` at the first keyframe (scripts and tests wait for it).
    pub announce: bool,
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Creating or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The broadcast has no video.
    #[error("the broadcast has no video track")]
    NoVideo,
    /// The feed ended (the parent is gone) before enough frames arrived.
    #[error("the stream ended after {0} video frames")]
    Ended(u64),
}

/// Records `tracks` until `rec.frames` video frames are written or `finish` turns true, then
/// finishes the files. Returns the number of video frames written.
pub async fn record(
    tracks: Tracks,
    rec: Recording,
    mut finish: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, RecordError> {
    let video_feed = tracks.video.clone().ok_or(RecordError::NoVideo)?;
    let mut video_rx = video_feed.subscribe();
    // The packets that arrived before we subscribed, from the last keyframe on (fast start's
    // GOP cache): the upstream leg feeds the feed from its first packet, a keyframe start,
    // while the tracks are still being set up, so without these the first keyframe is lost
    // and the recording starts a GOP later.
    let backlog = video_feed.gop_snapshot();
    if backlog.is_empty() {
        // The recorder starts mid-stream: ask for a keyframe now rather than wait a GOP.
        video_feed.request_keyframe();
    }
    let mut video = VideoFile::create(&rec.video, video_feed.codec)?;
    video.announce = rec.announce;
    // Packets pushed between subscribing and the snapshot arrive twice: skip those.
    let mut replayed_up_to = backlog
        .last()
        .map(|f| (f.source, f.packet.header.sequence_number));
    for f in backlog {
        video.push(f, rec.frames)?;
    }
    let mut audio = match (&rec.audio, &tracks.audio) {
        (Some(path), Some(feed)) => Some(AudioFile::create(path, feed)?),
        (Some(_), None) => {
            tracing::warn!("the broadcast has no audio; no audio file written");
            None
        }
        _ => None,
    };
    let mut nag = rec
        .keyframe_request_every
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let result = loop {
        let nag_tick = async {
            match nag.as_mut() {
                Some(i) => i.tick().await,
                None => std::future::pending().await,
            }
        };
        let audio_rx = async {
            match audio.as_mut() {
                Some(a) => a.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = video_rx.recv() => match r {
                Ok(f) => {
                    if let Some((source, last)) = replayed_up_to {
                        let ahead = f.packet.header.sequence_number.wrapping_sub(last);
                        if f.source == source && (ahead == 0 || ahead >= 0x8000) {
                            continue; // already recorded from the backlog
                        }
                        replayed_up_to = None;
                    }
                    video.push(f, rec.frames)?;
                    if rec.frames.is_some_and(|n| video.frames >= n) {
                        break Ok(video.frames);
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(lost = n, "recorder fell behind"),
                Err(RecvError::Closed) => break Err(RecordError::Ended(video.frames)),
            },
            _ = nag_tick => video_feed.request_keyframe(),
            _ = finish.wait_for(|f| *f) => break Ok(video.frames),
            r = audio_rx => match r {
                Ok(f) => {
                    if let Some(a) = audio.as_mut() {
                        a.write(&f);
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(lost = n, "audio recorder fell behind"),
                Err(RecvError::Closed) => audio = None,
            },
        }
    };
    video.finish()?;
    if let Some(mut a) = audio {
        let _ = a.writer.close();
    }
    result
}

struct AudioFile {
    rx: broadcast::Receiver<Forwarded>,
    writer: OggWriter<BufWriter<File>>,
    /// RTP timestamp of the first packet written; later ones are written relative to it.
    first_ts: Option<u32>,
    /// Relative timestamp of the newest packet written.
    last_rel: Option<u32>,
}

impl AudioFile {
    fn create(path: &Path, feed: &Arc<Feed>) -> Result<AudioFile, RecordError> {
        let file = create(path)?;
        let channels = feed.rtp_codec.channels.clamp(1, 2) as u8;
        let writer = OggWriter::new(file, 48_000, channels).map_err(|e| RecordError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(AudioFile {
            rx: feed.subscribe(),
            writer,
            first_ts: None,
            last_rel: None,
        })
    }

    /// Writes packets in timestamp order only. rc's `OggWriter` subtracts the previous RTP
    /// timestamp unchecked: a reordered or retransmitted packet (or a timestamp wrap) panics in
    /// a debug build and corrupts the granule position in release. So late packets are dropped
    /// (an Ogg page cannot be inserted afterwards anyway) and timestamps are handed over
    /// relative to the first one, which does not wrap for 24 hours of 48 kHz audio.
    fn write(&mut self, f: &Forwarded) {
        let ts = f.packet.header.timestamp;
        let first = *self.first_ts.get_or_insert(ts);
        let rel = ts.wrapping_sub(first);
        let late = rel >= 0x8000_0000 || self.last_rel.is_some_and(|last| rel <= last);
        if late {
            return;
        }
        self.last_rel = Some(rel);
        let mut packet = f.packet.clone();
        // 1 is the writer's "no previous packet" marker; start above it.
        packet.header.timestamp = rel.wrapping_add(2);
        if let Err(e) = self.writer.write_rtp(&packet) {
            tracing::debug!(error = %e, "audio packet not written");
        }
    }
}

enum Builder {
    Vp8(SampleBuilder<Vp8Depacketizer>),
    H264(SampleBuilder<H264Packet>),
}

struct VideoFile {
    path: PathBuf,
    announce: bool,
    out: BufWriter<File>,
    codec: Codec,
    builder: Builder,
    started: bool,
    first_ts: u32,
    /// The feed source of the packets in the builder; a new one (the node reconnected) gets a
    /// fresh builder, since its sequence numbers are unrelated.
    source: u32,
    /// Presentation time of the last frame written, in 90 kHz ticks.
    last_pts: u64,
    /// Video frames written.
    frames: u64,
}

impl VideoFile {
    fn create(path: &Path, codec: Codec) -> Result<VideoFile, RecordError> {
        let mut out = create(path)?;
        let builder = Self::builder(codec);
        if codec == Codec::Vp8 {
            // IVF header (width/height patched at the first keyframe, count at the end).
            let mut h = Vec::with_capacity(32);
            h.extend_from_slice(b"DKIF");
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&32u16.to_le_bytes());
            h.extend_from_slice(b"VP80");
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&90_000u32.to_le_bytes());
            h.extend_from_slice(&1u32.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            out.write_all(&h).map_err(|e| io_err(path, e))?;
        }
        Ok(VideoFile {
            path: path.to_owned(),
            announce: true,
            out,
            codec,
            builder,
            started: false,
            first_ts: 0,
            source: 0,
            last_pts: 0,
            frames: 0,
        })
    }

    fn builder(codec: Codec) -> Builder {
        match codec {
            Codec::H264 => Builder::H264(
                SampleBuilder::new(MAX_LATE_PACKETS, H264Packet::default(), 90_000)
                    .with_max_time_delay(MAX_LATE_TIME),
            ),
            _ => Builder::Vp8(
                SampleBuilder::new(MAX_LATE_PACKETS, Vp8Depacketizer::default(), 90_000)
                    .with_max_time_delay(MAX_LATE_TIME),
            ),
        }
    }

    /// Adds a packet and writes the frames it completes, at most up to `limit` frames in all.
    fn push(&mut self, f: Forwarded, limit: Option<u64>) -> Result<(), RecordError> {
        let now = Instant::now();
        if f.source != self.source {
            self.source = f.source;
            self.builder = Self::builder(self.codec);
            // Continue the timeline after the last frame, from the new source's keyframe.
            self.started = false;
        }
        let mut samples = Vec::new();
        match &mut self.builder {
            Builder::Vp8(b) => {
                b.push(now, f.packet);
                while let Some(s) = b.pop_with_timestamp(now) {
                    samples.push(s);
                }
            }
            Builder::H264(b) => {
                b.push(now, f.packet);
                while let Some(s) = b.pop_with_timestamp(now) {
                    samples.push(s);
                }
            }
        }
        for (sample, ts) in samples {
            if limit.is_some_and(|n| self.frames >= n) {
                break;
            }
            self.write_frame(&sample.data, ts)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, data: &[u8], ts: u32) -> Result<(), RecordError> {
        if !self.started {
            if !is_keyframe(self.codec, data) {
                return Ok(());
            }
            let resumed = self.frames > 0;
            self.started = true;
            // Continue the timeline: the first frame at 0, a resumed one a frame after the last.
            let next_pts = if resumed { self.last_pts + 3_000 } else { 0 };
            self.first_ts = ts.wrapping_sub(next_pts as u32);
            if !resumed && self.announce {
                // A line for scripts and tests: the whole path up to here is carrying media.
                println!("recording started");
            }
            if self.codec == Codec::Vp8 && data.len() >= 10 && !resumed {
                // Keyframe header (RFC 6386 section 9.1): 14-bit width and height at 6..10.
                self.out.flush().map_err(|e| io_err(&self.path, e))?;
                let file = self.out.get_mut();
                let size = [data[6], data[7] & 0x3f, data[8], data[9] & 0x3f];
                patch(file, 12, &size).map_err(|e| io_err(&self.path, e))?;
            }
        }
        let r = match self.codec {
            Codec::Vp8 => {
                let pts = u64::from(ts.wrapping_sub(self.first_ts));
                self.last_pts = pts;
                let mut h = [0u8; 12];
                h[..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
                h[4..].copy_from_slice(&pts.to_le_bytes());
                self.out
                    .write_all(&h)
                    .and_then(|_| self.out.write_all(data))
            }
            _ => self.out.write_all(data),
        };
        r.map_err(|e| io_err(&self.path, e))?;
        self.frames += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|e| io_err(&self.path, e))?;
        if self.codec == Codec::Vp8 {
            let count = (self.frames as u32).to_le_bytes();
            patch(self.out.get_mut(), 24, &count).map_err(|e| io_err(&self.path, e))?;
        }
        Ok(())
    }
}

/// Whether a depacketized frame is a whole one a decoder can start from.
fn is_keyframe(codec: Codec, data: &[u8]) -> bool {
    match codec {
        // VP8 frame tag (RFC 6386 section 9.1): bit 0 clear for a key frame.
        Codec::Vp8 => data.first().is_some_and(|b| b & 1 == 0),
        // Annex-B: the first NAL unit is an SPS. An IDR picture without its parameter sets in
        // front lost its first packet (the STAP-A), typically the very first packet of a new
        // connection, sent before the receiver had its SRTP keys; the file would not decode.
        // x264 (repeat-headers), Chromium and OBS put SPS/PPS before every IDR.
        _ => data
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1])
            .and_then(|i| data.get(i + 3))
            .is_some_and(|h| h & 0x1f == 7),
    }
}

fn patch(file: &mut File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let end = file.stream_position()?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(end))?;
    Ok(())
}

fn create(path: &Path) -> Result<BufWriter<File>, RecordError> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: std::io::Error) -> RecordError {
    RecordError::Io {
        path: path.to_owned(),
        source,
    }
}

/// rtc's `Vp8Packet` refuses payloads under 4 bytes, yet its own `Vp8Payloader` produces them
/// (a frame one byte over a packet's room leaves a 1-byte tail), so such frames would be
/// dropped. This handles short payloads itself and delegates the rest.
#[derive(Default)]
struct Vp8Depacketizer(Vp8Packet);

impl Depacketizer for Vp8Depacketizer {
    fn depacketize(&mut self, b: &Bytes) -> rtc::shared::error::Result<Bytes> {
        if b.len() >= 4 {
            return self.0.depacketize(b);
        }
        match vp8_descriptor_len(b) {
            Some(n) if n < b.len() => Ok(b.slice(n..)),
            _ => Err(rtc::shared::error::Error::ErrShortPacket),
        }
    }

    fn is_partition_head(&self, payload: &Bytes) -> bool {
        // A frame starts at S=1 with PID=0 (RFC 7741 section 4.2).
        payload
            .first()
            .is_some_and(|b| b & 0x10 != 0 && b & 0x07 == 0)
    }

    fn is_partition_tail(&self, marker: bool, _payload: &Bytes) -> bool {
        marker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_recording_starts_at_an_sps() {
        assert!(is_keyframe(
            Codec::H264,
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65]
        ));
        // An IDR picture whose parameter sets were lost.
        assert!(!is_keyframe(Codec::H264, &[0, 0, 0, 1, 0x65, 0x88]));
        assert!(!is_keyframe(Codec::H264, &[0, 0, 0, 1, 0x41, 0x9a]));
        assert!(!is_keyframe(Codec::H264, &[0, 0, 1]));
    }

    #[test]
    fn audio_survives_reordering_and_timestamp_wrap() {
        use crate::codec::CodecExt;
        let (feed, _requests) = Feed::new(Codec::Opus, Codec::Opus.rtp_codec());
        let path = std::env::temp_dir().join(format!("treecast-ogg-{}.ogg", std::process::id()));
        let mut audio = AudioFile::create(&path, &feed).unwrap();
        let mut written = 0;
        for ts in [
            u32::MAX - 1919,
            u32::MAX - 959,
            u32::MAX - 1919,
            0,
            960,
            0,
            1920,
        ] {
            let mut packet = rtc::rtp::Packet::default();
            packet.header.timestamp = ts;
            packet.payload = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
            let before = audio.last_rel;
            audio.write(&Forwarded {
                packet,
                keyframe: true,
                source: 0,
            });
            written += usize::from(audio.last_rel != before);
        }
        assert_eq!(written, 5, "two late packets dropped, the wrap followed");
        audio.writer.close().unwrap();
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn short_vp8_tail_is_depacketized() {
        let mut d = Vp8Depacketizer::default();
        assert_eq!(
            &d.depacketize(&Bytes::from_static(&[0x00, 0xab])).unwrap()[..],
            &[0xab]
        );
        assert!(d.depacketize(&Bytes::from_static(&[0x00])).is_err());
        assert!(d.depacketize(&Bytes::from_static(&[0x80])).is_err());
        let long = Bytes::from_static(&[0x10, 1, 2, 3, 4]);
        assert_eq!(&d.depacketize(&long).unwrap()[..], &[1, 2, 3, 4]);
    }
}
