//! File sources at the root: VP8 in IVF, H.264 Annex-B, Opus in Ogg. Each file is read once
//! into memory as a list of frames (demo clips are small), then played in a loop, paced by the
//! frame durations, packetized by rtc's payloaders into the track's feed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::media::io::h26x_reader::{H26xNAL, H26xReader};
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::{Packetizer, Payloader, new_packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use tokio::sync::mpsc;

use crate::codec::Codec;
use crate::fanout::Feed;
use crate::node::NodeState;

/// RTP payload size the packetizer aims for: leaves room for SRTP and header extensions under a
/// 1280-byte path MTU.
const MTU: usize = 1200;

/// Why a media file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The content is not what the extension promised.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The file holds no frames.
    #[error("{0}: no frames")]
    Empty(PathBuf),
}

/// A loaded clip: its codec and frames with their durations in RTP clock ticks.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The codec of every frame.
    pub codec: Codec,
    /// Frames in play order.
    pub frames: Vec<(Bytes, u32)>,
}

impl Clip {
    /// Loads a video file: `.ivf` (VP8) or `.h264`/`.264` (Annex-B, `fps` frames per second).
    pub fn load_video(path: &Path, fps: u32) -> Result<Clip, SourceError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "ivf" => load_ivf(path),
            "h264" | "264" => load_h264(path, fps),
            _ => Err(format_err(
                path,
                "video must be .ivf (VP8) or .h264 (Annex-B)",
            )),
        }
    }

    /// Loads an Ogg Opus file.
    pub fn load_audio(path: &Path) -> Result<Clip, SourceError> {
        load_ogg(path)
    }
}

/// Plays `clip` into `feed` forever, paced by the frame durations. Keyframe requests cannot be
/// honoured by a file (it has its own keyframe interval); they are drained and logged.
pub async fn play(
    node: Arc<NodeState>,
    clip: Clip,
    feed: Arc<Feed>,
    mut keyframe_requests: mpsc::Receiver<()>,
) {
    let payloader: Box<dyn Payloader> = match clip.codec {
        Codec::Vp8 => Box::new(Vp8Payloader::default()),
        Codec::H264 => Box::new(H264Payloader::default()),
        Codec::Opus => Box::new(OpusPayloader),
    };
    let payload_type = match clip.codec {
        Codec::Vp8 => 96,
        Codec::H264 => 102,
        Codec::Opus => 111,
    };
    let b = uuid::Uuid::new_v4().into_bytes();
    let ssrc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let clock = u64::from(clip.codec.clock_rate());
    let mut packetizer = new_packetizer(
        Instant::now(),
        MTU,
        payload_type,
        ssrc,
        payloader,
        Box::new(new_random_sequencer()),
        clip.codec.clock_rate(),
    );
    let start = tokio::time::Instant::now();
    let mut elapsed_ticks: u64 = 0;
    for (frame, ticks) in clip.frames.iter().cycle() {
        let due = start + Duration::from_micros(elapsed_ticks * 1_000_000 / clock);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                Some(()) = keyframe_requests.recv() => {
                    tracing::debug!("keyframe request at a file source (ignored)");
                }
            }
        }
        match packetizer.packetize(Instant::now(), frame, *ticks) {
            Ok(packets) => {
                node.media_arrived();
                for p in packets {
                    let c = &node.upstream;
                    c.packets.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    feed.push(p);
                }
            }
            Err(e) => tracing::warn!(error = %e, "packetizing a frame failed"),
        }
        elapsed_ticks += u64::from(*ticks);
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> SourceError {
    SourceError::Format {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn open(path: &Path) -> Result<BufReader<File>, SourceError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| SourceError::Io {
            path: path.to_owned(),
            source,
        })
}

fn load_ivf(path: &Path) -> Result<Clip, SourceError> {
    let (mut reader, header) =
        IVFReader::new(open(path)?).map_err(|e| format_err(path, e.to_string()))?;
    if &header.four_cc != b"VP80" {
        return Err(format_err(path, "only VP8 IVF files are supported"));
    }
    let (num, den) = (
        u64::from(header.timebase_numerator.max(1)),
        u64::from(header.timebase_denominator.max(1)),
    );
    let mut raw = Vec::new();
    while let Ok((frame, fh)) = reader.parse_next_frame() {
        raw.push((frame.freeze(), fh.timestamp));
    }
    let to_ticks = |pts_delta: u64| (pts_delta * 90_000 * num / den).clamp(1, 90_000) as u32;
    let default_ticks = to_ticks(1);
    let frames = raw
        .iter()
        .enumerate()
        .map(|(i, (frame, pts))| {
            let ticks = raw
                .get(i + 1)
                .map(|(_, next)| to_ticks(next.saturating_sub(*pts)))
                .unwrap_or(default_ticks);
            (frame.clone(), ticks)
        })
        .collect::<Vec<_>>();
    non_empty(path, Codec::Vp8, frames)
}

/// Groups NAL units into access units (H.264 section 7.4.1.2.3): a new one starts at a
/// parameter set, SEI or AUD after a slice, or at a slice whose `first_mb_in_slice` is 0 after a
/// slice. x264 with `-tune zerolatency` writes several slices per picture, so "one slice, one
/// frame" would give every slice its own timestamp and break decoding.
fn load_h264(path: &Path, fps: u32) -> Result<Clip, SourceError> {
    let mut reader = H26xReader::new(open(path)?, 1 << 20, false);
    let ticks = 90_000 / fps.clamp(1, 240);
    let mut frames = Vec::new();
    let mut au = BytesMut::new();
    let mut au_has_slice = false;
    while let Ok(nal) = reader.next_nal() {
        let H26xNAL::H264(nal) = nal else { continue };
        let data = nal.data;
        let Some(&header) = data.first() else {
            continue;
        };
        let nal_type = header & 0x1f;
        let is_slice = matches!(nal_type, 1 | 5);
        // first_mb_in_slice is ue(v); 0 is coded as a single 1 bit.
        let first_slice_of_picture = is_slice && data.get(1).is_some_and(|b| b & 0x80 != 0);
        let starts_au = matches!(nal_type, 6..=9) || first_slice_of_picture;
        if au_has_slice && starts_au {
            frames.push((au.split().freeze(), ticks));
            au_has_slice = false;
        }
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(&data);
        au_has_slice |= is_slice;
    }
    if au_has_slice {
        frames.push((au.split().freeze(), ticks));
    }
    non_empty(path, Codec::H264, frames)
}

fn load_ogg(path: &Path) -> Result<Clip, SourceError> {
    let (mut reader, header) =
        OggReader::new(open(path)?, true).map_err(|e| format_err(path, e.to_string()))?;
    if header.sample_rate == 0 {
        return Err(format_err(path, "not an Opus stream"));
    }
    let mut frames = Vec::new();
    let mut last_granule = 0u64;
    while let Ok((payload, page)) = reader.parse_next_page() {
        if payload.starts_with(b"OpusTags") || payload.starts_with(b"OpusHead") {
            continue;
        }
        // Opus granule positions count 48 kHz samples (RFC 7845 section 4).
        let delta = page.granule_position.saturating_sub(last_granule);
        last_granule = page.granule_position;
        let ticks = if (120..=5_760).contains(&delta) {
            delta as u32
        } else {
            960
        };
        frames.push((payload.freeze(), ticks));
    }
    non_empty(path, Codec::Opus, frames)
}

fn non_empty(path: &Path, codec: Codec, frames: Vec<(Bytes, u32)>) -> Result<Clip, SourceError> {
    if frames.is_empty() {
        return Err(SourceError::Empty(path.to_owned()));
    }
    Ok(Clip { codec, frames })
}
