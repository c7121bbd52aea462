//! treecast-media: the pure per-packet building blocks of a treecast node.
//!
//! Nothing here does IO, reads a clock or draws OS randomness: time comes in as a
//! [`std::time::Duration`] since an arbitrary epoch, randomness from a seed. The webrtc shell in
//! `treecast-node` calls these on the per-packet path, so the hot-path functions do not allocate
//! (apart from the one buffer a rewritten packet needs).
//!
//! - [`rtp`]: parse RTP packets and rewrite them for a downstream leg.
//! - [`rtcp`]: split compound RTCP, read reports and feedback, build PLI/FIR/NACK.
//! - [`rtp_sdp`]: the SDP file describing a plain RTP input (ffmpeg `-sdp_file`).
//! - [`fmtp`]: H.264 profiles from `a=fmtp`, and the answer rewrite that carries a track's fmtp to a child.
//! - [`keyframe`]: does an RTP payload start a keyframe (VP8, H.264)?
//! - [`munger`]: sequence/timestamp continuity for children across parent changes.
//! - [`cache`]: recent packets by sequence number, for answering NACKs.
//! - [`nack_requests`]: merge the NACKs a node forwards upstream for its children's cache misses.
//! - [`loss`]: the loss a receiver measures on an RTP stream, per interval.
//! - [`retransmit_budget`]: how much a child's NACKs may make its parent resend.
//! - [`keyframe_requests`]: merge PLI/FIR from children into at most one upstream request per interval.
//! - [`child_queue`]: bounded per-child queue; a child that falls behind is dropped to the next keyframe.
//! - [`gop`]: optional fast start, the packets since the last keyframe for a new child.
//! - [`impairment`]: seeded loss/delay/jitter/reordering model for tests.
//! - [`rng`]: the seeded PRNG behind it.
//! - [`udp_demux`]: which peer connection a datagram on a shared UDP port belongs to.

pub mod cache;
pub mod child_queue;
pub mod fmtp;
pub mod gop;
pub mod impairment;
pub mod keyframe;
pub mod keyframe_requests;
pub mod loss;
pub mod munger;
pub mod nack_requests;
pub mod retransmit_budget;
pub mod rng;
pub mod rtcp;
pub mod rtp;
pub mod rtp_sdp;
pub mod udp_demux;
