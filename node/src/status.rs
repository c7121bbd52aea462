//! The JSON served at `GET /api/status`.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::child::{ChildLink, LegInfo};
use crate::codec::{CodecExt, MediaKind};
use crate::config::{NodeId, RoleName, StreamId};
use crate::node::NodeState;
use crate::rtcp_tap::LinkCounters;
use crate::udp_mux::UdpMux;

/// A node's status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This node.
    pub node_id: NodeId,
    /// The stream.
    pub stream: StreamId,
    /// broadcast, relay or view.
    pub role: RoleName,
    /// The parent: its WHEP URL (`--pull`), or its tree id; null at the root and while a
    /// tree node looks for a parent.
    pub parent: Option<String>,
    /// Media arrived within the last second (at the root: the source is playing).
    pub receiving: bool,
    /// The child limit.
    pub max_children: usize,
    /// The tracks carried, once known.
    pub tracks: Vec<TrackStatus>,
    /// The upstream leg (at the root: what the source produced).
    pub upstream: LinkStatus,
    /// One entry per child leg.
    pub children: Vec<ChildStatus>,
    /// Totals of the children that have left.
    pub departed_children: DepartedStatus,
    /// The shared media port of `--udp-port`; null without it.
    pub udp_port: Option<UdpPortStatus>,
}

/// The shared media port (`--udp-port`) and what it dropped.
#[derive(Debug, Serialize)]
pub struct UdpPortStatus {
    /// The bound port.
    pub port: u16,
    /// Peer connections using it now.
    pub connections: usize,
    /// Datagrams received and handed to a connection.
    pub delivered: u64,
    /// STUN checks for a ufrag no connection has (dropped).
    pub unknown_ufrag: u64,
    /// Datagrams from an address no connection owns (dropped).
    pub unknown_source: u64,
    /// Datagrams dropped because a connection's inbox was full.
    pub inbox_full: u64,
    /// Sends dropped because the socket was not writable.
    pub send_dropped: u64,
}

impl UdpPortStatus {
    fn of(mux: &UdpMux) -> Self {
        let c = mux.counters();
        UdpPortStatus {
            port: mux.local_addr().port(),
            connections: mux.connections(),
            delivered: c.delivered.load(Ordering::Relaxed),
            unknown_ufrag: c.unknown_ufrag.load(Ordering::Relaxed),
            unknown_source: c.unknown_source.load(Ordering::Relaxed),
            inbox_full: c.inbox_full.load(Ordering::Relaxed),
            send_dropped: c.send_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Children that have left.
#[derive(Debug, Serialize)]
pub struct DepartedStatus {
    /// How many.
    pub count: u64,
    /// Their summed counters (gauges are zero).
    #[serde(flatten)]
    pub link: LinkStatus,
}

/// One track.
#[derive(Debug, Serialize)]
pub struct TrackStatus {
    /// video or audio.
    pub kind: MediaKind,
    /// The MIME type.
    pub codec: String,
    /// The format parameters as this node received them (`a=fmtp`; H.264: profile,
    /// packetization mode, parameter sets), carried to its children.
    pub fmtp: String,
}

/// One child leg.
#[derive(Debug, Serialize)]
pub struct ChildStatus {
    /// The WHEP session id.
    pub id: String,
    /// Seconds since the child attached.
    pub age_s: u64,
    /// Per track: SSRC and payload type on this leg.
    pub tracks: Vec<LegInfo>,
    /// The link's counters.
    #[serde(flatten)]
    pub link: LinkStatus,
}

/// Counters of one link.
#[derive(Debug, Serialize)]
pub struct LinkStatus {
    /// RTP packets sent (child) or received (upstream).
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Bits per second over the last second.
    pub bitrate_bps: u64,
    /// Packets dropped by the child queue policy.
    pub dropped: u64,
    /// Fraction lost as last reported by the receiver, 0..1.
    pub loss: f64,
    /// Round-trip time in milliseconds; null until measured.
    pub rtt_ms: Option<f64>,
    /// NACK packets received.
    pub nacks: u64,
    /// Sequence numbers those NACKs asked for.
    pub nacked_packets: u64,
    /// PLIs received.
    pub plis: u64,
    /// FIRs received.
    pub firs: u64,
    /// NACKed packets resent from the node's packet cache (child legs).
    pub retransmitted: u64,
    /// Of those, audio packets.
    pub retransmitted_audio: u64,
    /// NACKed packets the cache lacked (child legs); NACKed upstream if still current.
    pub nack_misses: u64,
    /// Sequence numbers NACKed to the parent for children's misses (upstream leg).
    pub nacks_forwarded: u64,
    /// NACKed packets not resent: the leg's resend budget was spent (child legs).
    pub resends_refused: u64,
}

impl LinkStatus {
    fn of(c: &LinkCounters) -> Self {
        let rtt = c.rtt_us.load(Ordering::Relaxed);
        LinkStatus {
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            bitrate_bps: c.bitrate_bps.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            loss: c.fraction_lost.load(Ordering::Relaxed) as f64 / 256.0,
            rtt_ms: (rtt > 0).then(|| rtt as f64 / 1000.0),
            nacks: c.nacks.load(Ordering::Relaxed),
            nacked_packets: c.nacked_packets.load(Ordering::Relaxed),
            plis: c.plis.load(Ordering::Relaxed),
            firs: c.firs.load(Ordering::Relaxed),
            retransmitted: c.retransmitted.load(Ordering::Relaxed),
            retransmitted_audio: c.retransmitted_audio.load(Ordering::Relaxed),
            nack_misses: c.nack_misses.load(Ordering::Relaxed),
            nacks_forwarded: c.nacks_forwarded.load(Ordering::Relaxed),
            resends_refused: c.resends_refused.load(Ordering::Relaxed),
        }
    }
}

impl Status {
    /// A snapshot of `node`.
    pub fn of(node: &NodeState) -> Status {
        let tracks = node
            .tracks()
            .map(|t| {
                t.iter()
                    .map(|f| TrackStatus {
                        kind: f.kind(),
                        codec: f.codec.mime().to_owned(),
                        fmtp: f.rtp_codec.sdp_fmtp_line.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Status {
            node_id: node.node_id.clone(),
            stream: node.stream.clone(),
            role: node.role,
            parent: node.parent.clone().or_else(|| node.tree().parent),
            receiving: node.receiving(),
            max_children: node.max_children,
            tracks,
            upstream: LinkStatus::of(&node.upstream),
            children: node.children().iter().map(|l| child(l)).collect(),
            departed_children: DepartedStatus {
                count: node.departed_count(),
                link: LinkStatus::of(&node.departed),
            },
            udp_port: node.factory.mux().map(|m| UdpPortStatus::of(m)),
        }
    }
}

fn child(l: &ChildLink) -> ChildStatus {
    ChildStatus {
        id: l.id.clone(),
        age_s: l.since.elapsed().as_secs(),
        tracks: l.tracks.clone(),
        link: LinkStatus::of(&l.counters),
    }
}
