//! Sequence number and timestamp continuity for children when the upstream source changes.
//!
//! A node forwards one track to its children under one outgoing sequence/timestamp space. When
//! the node's parent changes, the new parent's packets carry the same media under unrelated
//! numbers (every relay keeps its own numbering, or the root restarted). Children must see
//! neither a gap nor a jump backwards, or their jitter buffers stall or drop everything. The
//! munger (LiveKit's name for the idea) keeps an offset per source:
//!
//! - while forwarding a source, `out = in + offset` for both sequence number (mod 2^16) and
//!   timestamp (mod 2^32), so loss gaps, reordering and duplicates from that source map
//!   consistently and NACKs translate back with [`Munger::incoming_seq`];
//! - on [`Munger::switch_source`] it drops packets until the new source's keyframe, then picks
//!   offsets so that keyframe continues at the last outgoing sequence number + 1 and the last
//!   outgoing timestamp + the time that passed (wall clock, or an estimated frame interval);
//! - packets of the new source older than that keyframe are dropped: they would map onto
//!   numbers already used by the previous source.
//!
//! A jump of more than [`MAX_JUMP`] sequence numbers within a source is taken as a restart of
//! that source and handled like a switch.
//!
//! The same mechanism, without the timestamp jump, serves a per-child instance after the child's
//! queue dropped packets ([`Munger::resync`]): the child then sees no gap to NACK, and the
//! child's NACKs map back to the track's numbering (and its cache) through
//! [`Munger::incoming_seq`].

use std::time::Duration;

use crate::keyframe::Codec;

#[cfg(test)]
mod tests;

/// A sequence number this far from the newest one (either way) means the source restarted.
pub const MAX_JUMP: i64 = 3000;

/// How the timestamp advances across a source switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampGap {
    /// By the estimated frame interval (the last timestamp step seen in the old source).
    FrameInterval,
    /// By the wall-clock time since the last forwarded packet, at least one frame interval.
    /// Keeps the gap true to real time, so audio and video tracks switched together stay
    /// aligned. The default.
    WallClock,
}

/// Munger settings. [`MungerConfig::for_codec`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MungerConfig {
    /// RTP clock rate in Hz (90 000 for video, 48 000 for Opus).
    pub clock_rate: u32,
    /// Frame interval in timestamp units until one is observed: 3 000 (30 fps at 90 kHz) for
    /// video, 960 (20 ms at 48 kHz) for Opus.
    pub frame_interval: u32,
    /// How the timestamp advances across a switch.
    pub gap: TimestampGap,
}

impl MungerConfig {
    /// Defaults for `codec`.
    pub fn for_codec(codec: Codec) -> Self {
        let clock_rate = codec.clock_rate();
        MungerConfig {
            clock_rate,
            frame_interval: if codec.is_video() {
                clock_rate / 30
            } else {
                clock_rate / 50
            },
            gap: TimestampGap::WallClock,
        }
    }
}

/// What to do with one incoming packet.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Munged {
    /// Forward it with these outgoing numbers.
    Forward {
        /// Outgoing sequence number.
        sequence: u16,
        /// Outgoing timestamp.
        timestamp: u32,
    },
    /// Do not forward it.
    Drop(DropReason),
}

/// Why a packet is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No keyframe since the start, a source switch or a resync.
    WaitingForKeyframe,
    /// Older than the first packet forwarded from the current source: its outgoing number
    /// would collide with the previous source's.
    BeforeSourceStart,
}

/// Sequence/timestamp rewriting for one track. Pure: time is passed in, nothing is allocated.
#[derive(Debug, Clone)]
pub struct Munger {
    config: MungerConfig,
    state: State,
    /// The newest packet forwarded, across all sources; `None` before the first.
    last: Option<Last>,
    /// Latest observed timestamp step between frames, in timestamp units.
    frame_interval: u32,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Dropping until a keyframe. After [`Munger::resync`] the source's timestamp offset is kept.
    Waiting {
        keep_ts_offset: Option<u32>,
    },
    Forwarding(Source),
}

/// The mapping for the current source. Extended (unwrapped) sequence numbers are `i64`.
#[derive(Debug, Clone, Copy)]
struct Source {
    first_in: i64,
    highest_in: i64,
    /// `out_ext = in_ext + seq_offset`.
    seq_offset: i64,
    /// `out_ts = in_ts + ts_offset` (wrapping).
    ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    /// Extended outgoing sequence number of the newest packet forwarded.
    seq: i64,
    /// Its outgoing timestamp.
    ts: u32,
    /// When it was forwarded.
    at: Duration,
}

impl Munger {
    /// A munger that waits for the first keyframe, then forwards with the source's own numbers.
    pub fn new(config: MungerConfig) -> Self {
        Munger {
            config,
            state: State::Waiting {
                keep_ts_offset: None,
            },
            last: None,
            frame_interval: config.frame_interval,
        }
    }

    /// Maps one incoming packet of the current source. `keyframe_start` comes from
    /// [`Codec::is_keyframe_start`]; `now` is the arrival time since any fixed epoch.
    pub fn process(&mut self, seq: u16, ts: u32, keyframe_start: bool, now: Duration) -> Munged {
        if let State::Forwarding(source) = self.state {
            let jump = i64::from(seq.wrapping_sub(source.highest_in as u16) as i16);
            if jump.abs() > MAX_JUMP {
                // No reordering is this large: the source restarted its numbering (same SSRC,
                // e.g. a publisher reconnecting) or lost seconds of packets. Either way, treat
                // it as a new source.
                self.switch_source();
            }
        }
        let (source, started) = match self.state {
            State::Forwarding(source) => (source, false),
            State::Waiting { .. } if !keyframe_start => {
                return Munged::Drop(DropReason::WaitingForKeyframe);
            }
            State::Waiting { keep_ts_offset } => (self.start(seq, ts, keep_ts_offset, now), true),
        };
        let diff = i64::from(seq.wrapping_sub(source.highest_in as u16) as i16);
        let in_ext = source.highest_in + diff;
        if in_ext < source.first_in {
            return Munged::Drop(DropReason::BeforeSourceStart);
        }
        let out_seq = in_ext + source.seq_offset;
        let out_ts = ts.wrapping_add(source.ts_offset);
        match self.last {
            Some(last) if out_seq <= last.seq => {} // reordered or duplicate: map, keep state
            last => {
                if let (Some(last), false) = (last, started) {
                    let step = out_ts.wrapping_sub(last.ts);
                    // A new frame of the same source within a second: remember its spacing.
                    if step > 0 && step < self.config.clock_rate {
                        self.frame_interval = step;
                    }
                }
                self.last = Some(Last {
                    seq: out_seq,
                    ts: out_ts,
                    at: now,
                });
                self.state = State::Forwarding(Source {
                    highest_in: in_ext,
                    ..source
                });
            }
        }
        Munged::Forward {
            sequence: out_seq as u16, // the low 16 bits are the wire value
            timestamp: out_ts,
        }
    }

    /// The upstream source changes (a new parent): drop until its keyframe, then continue at the
    /// last outgoing sequence number + 1 and timestamp + the elapsed time.
    pub fn switch_source(&mut self) {
        self.state = State::Waiting {
            keep_ts_offset: None,
        };
    }

    /// Same source, but packets were dropped downstream of this munger (a child fell behind):
    /// drop until the next keyframe, then continue at the last outgoing sequence number + 1
    /// with the source's timestamps unchanged (they already reflect the elapsed time).
    pub fn resync(&mut self) {
        if let State::Forwarding(source) = self.state {
            self.state = State::Waiting {
                keep_ts_offset: Some(source.ts_offset),
            };
        }
    }

    /// Whether packets are being dropped until a keyframe.
    pub fn is_waiting_for_keyframe(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// The incoming sequence number of the current source that maps to outgoing `seq`: how a
    /// NACK from a child becomes a NACK upstream. `None` while waiting, or when `seq` was sent
    /// before the current source started.
    pub fn incoming_seq(&self, seq: u16) -> Option<u16> {
        let State::Forwarding(source) = self.state else {
            return None;
        };
        let in_seq = seq.wrapping_sub(source.seq_offset as u16);
        let diff = i64::from(in_seq.wrapping_sub(source.highest_in as u16) as i16);
        (source.highest_in + diff >= source.first_in).then_some(in_seq)
    }

    /// The current frame interval estimate, in timestamp units.
    pub fn frame_interval(&self) -> u32 {
        self.frame_interval
    }

    /// Starts forwarding a source whose keyframe `(seq, ts)` just arrived.
    fn start(&self, seq: u16, ts: u32, keep_ts_offset: Option<u32>, now: Duration) -> Source {
        // Extended numbers start high so that i64 arithmetic never goes negative in practice.
        let in_ext = (1 << 32) + i64::from(seq);
        let (out_seq, ts_offset) = match (self.last, keep_ts_offset) {
            (None, _) => (in_ext, 0),
            (Some(last), Some(ts_offset)) => (last.seq + 1, ts_offset),
            (Some(last), None) => {
                let out_ts = last.ts.wrapping_add(self.gap(last.at, now));
                (last.seq + 1, out_ts.wrapping_sub(ts))
            }
        };
        Source {
            first_in: in_ext,
            highest_in: in_ext,
            seq_offset: out_seq - in_ext,
            ts_offset,
        }
    }

    fn gap(&self, since: Duration, now: Duration) -> u32 {
        let interval = self.frame_interval.max(1);
        match self.config.gap {
            TimestampGap::FrameInterval => interval,
            TimestampGap::WallClock => {
                let elapsed = now.saturating_sub(since).as_micros();
                let ticks = elapsed * u128::from(self.config.clock_rate) / 1_000_000;
                // Beyond 2^31 ticks (6.6 hours at 90 kHz) the direction would be ambiguous.
                u32::try_from(ticks)
                    .unwrap_or(u32::MAX)
                    .min(i32::MAX as u32)
                    .max(interval)
            }
        }
    }
}
