//! An interceptor at the application end of every peer connection's chain: it counts the RTCP
//! feedback a link receives (NACK, PLI, FIR, receiver reports) into that link's [`LinkCounters`]
//! and passes keyframe requests and NACKs on to the application.
//!
//! Why an interceptor: in webrtc 0.21 inbound RTCP stops at the end of the chain unless an
//! interceptor marks it `DeliverToApplication` (pitfall 3). NACKs are answered by the child leg
//! from the track's packet cache (`child.rs`), not by webrtc's NACK responder (not in the chain:
//! `peer.rs`), so a miss can go on to the parent. Each delivered packet travels as its own
//! message: webrtc routes a message to a track by the first packet's media SSRC, and a compound
//! packet may start with a report about another track.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

/// Counters of one link (a child leg or the upstream leg), shared between the peer
/// connection's interceptor chain and the status endpoint. Atomics, no lock: each counter is
/// independent and a status snapshot does not need them to be mutually consistent.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// RTP packets handed to the link (downstream) or received from it (upstream).
    pub packets: AtomicU64,
    /// Payload bytes, same direction as `packets`.
    pub bytes: AtomicU64,
    /// Packets dropped by the child queue policy (a child that fell behind).
    pub dropped: AtomicU64,
    /// NACK packets received from the peer.
    pub nacks: AtomicU64,
    /// Sequence numbers those NACKs asked for.
    pub nacked_packets: AtomicU64,
    /// PLIs received from the peer.
    pub plis: AtomicU64,
    /// FIRs received from the peer.
    pub firs: AtomicU64,
    /// NACKed packets resent from the node's packet cache (child leg).
    pub retransmitted: AtomicU64,
    /// Of those, packets of the audio track (Opus NACK, negotiated between treecast nodes).
    pub retransmitted_audio: AtomicU64,
    /// NACKed packets the cache did not hold (child leg); those still of the current source
    /// are NACKed upstream.
    pub nack_misses: AtomicU64,
    /// Sequence numbers NACKed to the parent on behalf of children (upstream leg).
    pub nacks_forwarded: AtomicU64,
    /// NACKed packets not resent because the leg's resend budget was spent (child leg).
    pub resends_refused: AtomicU64,
    /// Last fraction lost, in 1/256 (RFC 3550 section 6.4.1): on a child leg as the child's
    /// receiver report says; on the upstream leg as this node measures it
    /// (`treecast_media::loss`), since no receiver report passes the tap there.
    pub fraction_lost: AtomicU64,
    /// Last round-trip time from a receiver report, in microseconds; 0 when unknown.
    pub rtt_us: AtomicU64,
    /// Bits per second over the last second (updated by the link's forwarding task).
    pub bitrate_bps: AtomicU64,
}

impl LinkCounters {
    /// Adds `other`'s event counts into these (for the totals of departed children); the
    /// gauges (loss, RTT, bitrate) are not summed.
    pub fn absorb(&self, other: &LinkCounters) {
        let add = |a: &AtomicU64, b: &AtomicU64| {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&self.packets, &other.packets);
        add(&self.bytes, &other.bytes);
        add(&self.dropped, &other.dropped);
        add(&self.nacks, &other.nacks);
        add(&self.nacked_packets, &other.nacked_packets);
        add(&self.plis, &other.plis);
        add(&self.firs, &other.firs);
        add(&self.retransmitted, &other.retransmitted);
        add(&self.retransmitted_audio, &other.retransmitted_audio);
        add(&self.nack_misses, &other.nack_misses);
        add(&self.nacks_forwarded, &other.nacks_forwarded);
        add(&self.resends_refused, &other.resends_refused);
    }
}

/// The interceptor; build one per peer connection with [`RtcpTap::new`].
pub struct RtcpTap {
    counters: Arc<LinkCounters>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    /// A tap feeding `counters`.
    pub fn new(counters: Arc<LinkCounters>) -> Self {
        Self {
            counters,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn count(&self, packet: &dyn rtc::rtcp::Packet) {
        let any = packet.as_any();
        let c = &self.counters;
        if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            c.nacks.fetch_add(1, Ordering::Relaxed);
            let n: usize = nack.nacks.iter().map(|p| p.packet_list().len()).sum();
            c.nacked_packets.fetch_add(n as u64, Ordering::Relaxed);
        } else if any.is::<PictureLossIndication>() {
            c.plis.fetch_add(1, Ordering::Relaxed);
        } else if any.is::<FullIntraRequest>() {
            c.firs.fetch_add(1, Ordering::Relaxed);
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            for report in &rr.reports {
                c.fraction_lost
                    .store(u64::from(report.fraction_lost), Ordering::Relaxed);
                if let Some(rtt) = rtt_us(report.last_sender_report, report.delay, ntp_now()) {
                    c.rtt_us.store(rtt, Ordering::Relaxed);
                }
            }
        }
    }
}

impl std::fmt::Debug for RtcpTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcpTap")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// What the application acts on: keyframe requests and NACKs.
fn is_for_application(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
}

/// RTT from a reception report (RFC 3550 section 6.4.1): arrival - LSR - DLSR, all in the
/// middle 32 bits of NTP time (1/65536 s). `None` when no SR was received yet or the clocks
/// disagree.
fn rtt_us(lsr: u32, dlsr: u32, now_mid: u32) -> Option<u64> {
    if lsr == 0 {
        return None;
    }
    let rtt = now_mid.wrapping_sub(lsr).wrapping_sub(dlsr);
    // More than 10 s means a wrap or a foreign clock: report nothing rather than nonsense.
    (rtt < 10 * 65_536).then(|| u64::from(rtt) * 1_000_000 / 65_536)
}

/// The middle 32 bits of the current NTP time.
fn ntp_now() -> u32 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (((secs << 32) | frac) >> 16) as u32
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            self.read_queue.push_back(msg);
            return Ok(());
        };
        for p in packets {
            self.count(p.as_ref());
            if !is_for_application(p.as_ref()) {
                // The interceptors before us have acted on it; the application has no use.
                continue;
            }
            let message = AttributedPacket::new(Packet::Rtcp(vec![p.clone()]))
                .with(Attribute::DeliverToApplication);
            self.read_queue.push_back(TaggedPacket {
                now: msg.now,
                transport: msg.transport,
                message,
            });
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_from_report() {
        // 100 ms between LSR and arrival, 40 ms held by the receiver -> 60 ms.
        let lsr = 1_000_000;
        let now = lsr + 6_554; // ~100 ms
        let dlsr = 2_621; // ~40 ms
        let rtt = rtt_us(lsr, dlsr, now).unwrap();
        assert!((59_000..61_000).contains(&rtt), "{rtt}");
        assert_eq!(rtt_us(0, dlsr, now), None);
        // A report from the future (foreign clock) gives nothing.
        assert_eq!(rtt_us(now, dlsr, lsr), None);
    }
}
