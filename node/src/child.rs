//! A child leg: one downstream peer connection, one local track per feed (a local track binds
//! to one connection only: pitfall 2), and per track a forwarding task that rewrites the
//! per-leg header fields and answers the child's NACKs from the track's packet cache, and a
//! task that sorts the child's feedback: keyframe requests go to the feed, NACKs to the
//! forwarding task (which owns the munger that maps them back to the track's numbering).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::Instrument;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use treecast_media::fmtp;
use treecast_media::munger::{Munged, Munger, MungerConfig};
use treecast_media::retransmit_budget::RetransmitBudget;

use crate::codec::{Codec, CodecExt, MediaKind};
use crate::fanout::{Feed, Forwarded};
use crate::node::{NodeState, Reservation};
use crate::peer::{Direction, Peer, PeerError};
use crate::rtcp_tap::LinkCounters;

/// NACK packets from one child waiting for its forwarding task; beyond, they are dropped (the
/// child asks again).
const NACK_QUEUE: usize = 64;

/// How long a new child may take to connect before its leg is torn down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One child leg as the rest of the node sees it.
pub struct ChildLink {
    /// The WHEP session id (the last segment of the resource URL).
    pub id: String,
    /// Per-link counters (packets, bytes, NACKs, PLIs, loss, RTT).
    pub counters: Arc<LinkCounters>,
    /// When the child attached.
    pub since: Instant,
    /// What this leg sends: per track its SSRC and payload type on this leg.
    pub tracks: Vec<LegInfo>,
    pc: Arc<dyn PeerConnection>,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for ChildLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildLink")
            .field("id", &self.id)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// One track of a child leg, as negotiated on that leg.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LegInfo {
    /// video or audio.
    pub kind: MediaKind,
    /// The SSRC this leg sends with.
    pub ssrc: u32,
    /// The payload type negotiated on this leg.
    pub payload_type: u8,
}

/// Why a child could not attach.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The offer is not an SDP offer we can answer.
    #[error("bad offer: {0}")]
    BadOffer(webrtc::error::Error),
    /// Something failed on our side.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

impl ChildLink {
    /// Completes once the leg is closed (by [`ChildLink::close`], or because the child went).
    pub async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Ends the leg: stops its tasks and closes the connection.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing child connection");
        }
    }
}

/// Answers a child's WHEP offer and starts forwarding `feeds` to it once it connects.
/// Returns the link (already registered with the node) and the SDP answer.
pub async fn attach(
    node: &Arc<NodeState>,
    slot: Reservation,
    feeds: Vec<Arc<Feed>>,
    offer_sdp: String,
    child: Option<String>,
    fast_start: bool,
) -> Result<(Arc<ChildLink>, String), AttachError> {
    let counters = Arc::new(LinkCounters::default());
    let mut peer = node
        .factory
        .build(counters.clone(), Direction::Send)
        .await?;
    let id = uuid::Uuid::new_v4().simple().to_string();

    let mut legs = Vec::new();
    for feed in feeds {
        let ssrc = random_ssrc();
        let kind = feed.kind().rtp_kind();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("treecast-{}", node.stream.as_str()),
            format!("{kind}-{ssrc}"),
            format!("{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: feed.rtp_codec.clone(),
                active: true,
                ..Default::default()
            }],
        )));
        let sender = peer
            .pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(PeerError::from)?;
        legs.push((feed, track, sender, ssrc));
    }

    let mut answer_sdp = match negotiate(&mut peer, offer_sdp).await {
        Ok(sdp) => sdp,
        Err(e) => {
            // Release the sockets and tasks of a connection that will never carry media.
            let _ = peer.pc.close().await;
            return Err(e);
        }
    };

    let span = tracing::info_span!("child", id = %&id[..8]);
    let mut accepted = Vec::new();
    for (feed, track, sender, ssrc) in legs {
        let Some((payload_type, offered_fmtp)) = negotiated_payload_type(&sender, &feed).await
        else {
            tracing::info!(parent: &span, codec = ?feed.codec, "child did not accept this track");
            continue;
        };
        if let Some(rewritten) = carry_fmtp(&answer_sdp, &feed, payload_type, &offered_fmtp) {
            answer_sdp = rewritten;
        }
        accepted.push((feed, track, ssrc, payload_type));
    }
    let tracks = accepted
        .iter()
        .map(|(feed, _, ssrc, payload_type)| LegInfo {
            kind: feed.kind(),
            ssrc: *ssrc,
            payload_type: *payload_type,
        })
        .collect();
    tracing::info!(parent: &span, ?tracks, "child attached");

    let (closed, _) = watch::channel(false);
    let link = Arc::new(ChildLink {
        tracks,
        id: id.clone(),
        counters: counters.clone(),
        since: Instant::now(),
        pc: peer.pc.clone(),
        closed,
    });
    slot.commit(link.clone());

    for (feed, track, ssrc, payload_type) in accepted {
        let (nack_tx, nacks) = mpsc::channel(NACK_QUEUE);
        let leg = Leg {
            feed: feed.clone(),
            track: track.clone(),
            ssrc,
            payload_type,
            counters: counters.clone(),
            state: peer.state.clone(),
            closed: link.closed.subscribe(),
            fast_start,
            source: None,
            child: child.clone(),
            returned: None,
            nacks,
            highest_sent: None,
            budget: RetransmitBudget::default(),
        };
        tokio::spawn(leg.forward().instrument(span.clone()));
        let feedback = feedback(track, feed, ssrc, nack_tx, link.closed.subscribe());
        tokio::spawn(feedback.instrument(span.clone()));
    }
    tokio::spawn(watch_state(node.clone(), link.clone(), peer.state).instrument(span));
    Ok((link, answer_sdp))
}

/// Applies the child's offer and produces our answer.
async fn negotiate(peer: &mut Peer, offer_sdp: String) -> Result<String, AttachError> {
    let offer = RTCSessionDescription::offer(offer_sdp).map_err(AttachError::BadOffer)?;
    peer.pc
        .set_remote_description(offer)
        .await
        .map_err(AttachError::BadOffer)?;
    let answer = peer
        .pc
        .create_answer(None)
        .await
        .map_err(AttachError::BadOffer)?;
    Ok(peer.finish_local(answer).await?)
}

/// The payload type this leg negotiated for the feed's codec (pitfall 1: it differs per leg),
/// and the fmtp the child offered with it. For H.264 the child's first payload type whose
/// profile and packetization mode match the feed's (Chrome offers several), else its first.
async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, feed: &Feed) -> Option<(u8, String)> {
    let params = sender.get_parameters().await.ok()?;
    let mut same_codec = params.rtp_parameters.codecs.iter().filter(|c| {
        c.rtp_codec
            .mime_type
            .eq_ignore_ascii_case(feed.codec.mime())
    });
    let first = same_codec.clone().next()?;
    let chosen = match feed.codec {
        Codec::H264 => same_codec
            .find(|c| {
                fmtp::h264_compatible(&feed.rtp_codec.sdp_fmtp_line, &c.rtp_codec.sdp_fmtp_line)
            })
            .unwrap_or(first),
        _ => first,
    };
    Some((chosen.payload_type, chosen.rtp_codec.sdp_fmtp_line.clone()))
}

/// The answer with the feed's own fmtp on the leg's H.264 payload type (issue 3: "H.264
/// fmtp carried over"; webrtc answers with the child's fmtp), when the child offered that
/// profile and packetization mode; `None` to leave the answer as it is.
fn carry_fmtp(answer: &str, feed: &Feed, payload_type: u8, offered: &str) -> Option<String> {
    let ours = &feed.rtp_codec.sdp_fmtp_line;
    if feed.codec != Codec::H264 || ours.is_empty() {
        return None;
    }
    if !fmtp::h264_compatible(ours, offered) {
        tracing::warn!(
            ours,
            offered,
            "the child offered no H.264 format matching the stream's profile; it may not decode it"
        );
        return None;
    }
    fmtp::rewrite_answer(answer, "video", payload_type, ours)
}

fn random_ssrc() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(1)
}

/// One feed forwarded to one child.
struct Leg {
    feed: Arc<Feed>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    counters: Arc<LinkCounters>,
    state: watch::Receiver<RTCPeerConnectionState>,
    closed: watch::Receiver<bool>,
    /// Start with the cached GOP instead of waiting for the next keyframe.
    fast_start: bool,
    /// The upstream source of the last packet sent.
    source: Option<u32>,
    /// The child's node id (tree children), so its own packets are never sent back to it.
    child: Option<String>,
    /// The last source number checked against `child`, and whether it comes from the child.
    returned: Option<(u32, bool)>,
    /// Sequence numbers the child NACKed (this leg's numbering), from [`feedback`].
    nacks: mpsc::Receiver<Vec<u16>>,
    /// The newest outgoing sequence number sent.
    highest_sent: Option<u16>,
    /// Resends allowed: a share of what was forwarded (a NACK flood cannot multiply the stream).
    budget: RetransmitBudget,
}

impl Leg {
    async fn forward(mut self) {
        // Packets written before DTLS is up are lost; start when the child can receive, at a
        // keyframe, and ask for one right away so the child does not wait a whole GOP.
        let connected = self
            .state
            .wait_for(|s| *s == RTCPeerConnectionState::Connected);
        if tokio::time::timeout(CONNECT_TIMEOUT, connected)
            .await
            .is_err()
        {
            return;
        }
        let mut rx = self.feed.subscribe();
        // Fast start: the current GOP at once, from its keyframe. Otherwise ask for a keyframe
        // so the child does not wait a whole GOP.
        let backlog = if self.fast_start {
            self.feed.gop_snapshot()
        } else {
            Vec::new()
        };
        if backlog.is_empty() {
            self.feed.request_keyframe();
        }
        // Per leg: the munger starts at a keyframe and, after a drop, resumes at the next one
        // with no sequence gap for the child to NACK in vain.
        let mut munger = Munger::new(MungerConfig::for_codec(self.feed.codec));
        let epoch = Instant::now();
        // Packets pushed between subscribing and the snapshot arrive twice: skip those.
        let mut replayed_up_to = backlog.last().map(|f| f.packet.header.sequence_number);
        for f in backlog {
            if self.send(&mut munger, epoch, f).await.is_err() {
                return;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut bytes_at_tick = 0u64;
        let c = self.counters.clone();
        loop {
            let f: Forwarded = tokio::select! {
                _ = self.closed.changed() => return,
                _ = tick.tick() => {
                    let bytes = c.bytes.load(Ordering::Relaxed);
                    c.bitrate_bps.store((bytes - bytes_at_tick) * 8, Ordering::Relaxed);
                    bytes_at_tick = bytes;
                    continue;
                }
                r = rx.recv() => match r {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Fell behind the ring: drop to the next keyframe, never grow.
                        c.dropped.fetch_add(n, Ordering::Relaxed);
                        if !munger.is_waiting_for_keyframe() {
                            tracing::debug!(skipped = n, "child fell behind; waiting for a keyframe");
                        }
                        munger.resync();
                        self.feed.request_keyframe();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(seqs) = self.nacks.recv() => {
                    if self.answer_nacks(&mut munger, epoch, seqs).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if let Some(last) = replayed_up_to {
                let seq = f.packet.header.sequence_number;
                if seq.wrapping_sub(last) == 0 || seq.wrapping_sub(last) >= 0x8000 {
                    continue; // already sent from the GOP
                }
                replayed_up_to = None;
            }
            if self.send(&mut munger, epoch, f).await.is_err() {
                return;
            }
        }
    }

    /// Whether packets of `source` come from this leg's own child (checked once per source).
    fn comes_from_child(&mut self, source: u32) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        match self.returned {
            Some((s, back)) if s == source => back,
            _ => {
                let back = self.feed.comes_from(source, child);
                self.returned = Some((source, back));
                back
            }
        }
    }

    /// Maps one packet through the munger, rewrites the per-leg fields and writes it.
    /// `Err` when the leg is over.
    async fn send(&mut self, munger: &mut Munger, epoch: Instant, f: Forwarded) -> Result<(), ()> {
        if self.comes_from_child(f.source) {
            return Ok(());
        }
        if self.source != Some(f.source) {
            if self.source.is_some() {
                // A new parent: drop to its keyframe, continue our numbering (the munger).
                munger.switch_source();
            }
            self.source = Some(f.source);
        }
        let c = &self.counters;
        let mut packet = f.packet;
        let h = &mut packet.header;
        match munger.process(h.sequence_number, h.timestamp, f.keyframe, epoch.elapsed()) {
            Munged::Forward {
                sequence,
                timestamp,
            } => {
                h.sequence_number = sequence;
                h.timestamp = timestamp;
            }
            Munged::Drop(_) => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        h.ssrc = self.ssrc;
        h.payload_type = self.payload_type;
        let len = packet.payload.len() as u64;
        let sent = packet.header.sequence_number;
        if let Err(e) = self.track.write_rtp(packet).await {
            tracing::debug!(error = %e, "write to child failed; leg ends");
            return Err(());
        }
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(len, Ordering::Relaxed);
        self.budget.forwarded();
        // Reordered packets map below the newest; keep the newest (wrap-aware).
        if self
            .highest_sent
            .is_none_or(|h| sent.wrapping_sub(h) != 0 && sent.wrapping_sub(h) < 0x8000)
        {
            self.highest_sent = Some(sent);
        }
        Ok(())
    }

    /// Answers a child's NACK: each asked sequence number maps back through the munger to the
    /// track's numbering; a packet the feed's cache holds is resent with this leg's numbers,
    /// a miss of the current source goes to the feed for a NACK upstream (`nack.rs`).
    async fn answer_nacks(
        &mut self,
        munger: &mut Munger,
        epoch: Instant,
        seqs: Vec<u16>,
    ) -> Result<(), ()> {
        let (Some(source), Some(highest)) = (self.source, self.highest_sent) else {
            return Ok(());
        };
        let c = self.counters.clone();
        for seq in seqs {
            if seq.wrapping_sub(highest) != 0 && seq.wrapping_sub(highest) < 0x8000 {
                continue; // not sent yet: on its way
            }
            let Some(incoming) = munger.incoming_seq(seq) else {
                // Sent before a resync or a source switch: nobody can resend it.
                c.nack_misses.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(f) = self.feed.cached(source, incoming) else {
                c.nack_misses.fetch_add(1, Ordering::Relaxed);
                self.feed.nack_upstream(source, incoming);
                continue;
            };
            if !self.budget.try_resend() {
                c.resends_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut packet = f.packet;
            let h = &mut packet.header;
            let Munged::Forward {
                sequence,
                timestamp,
            } = munger.process(h.sequence_number, h.timestamp, f.keyframe, epoch.elapsed())
            else {
                continue;
            };
            h.sequence_number = sequence;
            h.timestamp = timestamp;
            h.ssrc = self.ssrc;
            h.payload_type = self.payload_type;
            if let Err(e) = self.track.write_rtp(packet).await {
                tracing::debug!(error = %e, "retransmission to child failed; leg ends");
                return Err(());
            }
            c.retransmitted.fetch_add(1, Ordering::Relaxed);
            if self.feed.kind() == MediaKind::Audio {
                c.retransmitted_audio.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// The child's feedback for this track (delivered by the `RtcpTap`): keyframe requests
/// (PLI/FIR) go to the feed, which merges and rate-limits them upstream; NACKs for this leg's
/// SSRC go to the forwarding task.
async fn feedback(
    track: Arc<TrackLocalStaticRTP>,
    feed: Arc<Feed>,
    ssrc: u32,
    nacks: mpsc::Sender<Vec<u16>>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        let packets = tokio::select! {
            _ = closed.changed() => return,
            ev = track.poll() => match ev {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => packets,
                Some(_) => continue,
                None => return,
            },
        };
        for p in packets {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                feed.request_keyframe();
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>()
                && nack.media_ssrc == ssrc
            {
                let seqs = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
                // Full: the forwarding task is busy; the child asks again.
                let _ = nacks.try_send(seqs);
            }
        }
    }
}

/// Removes the link when the connection fails or closes, or never connects.
async fn watch_state(
    node: Arc<NodeState>,
    link: Arc<ChildLink>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
) {
    let mut closed = link.closed.subscribe();
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if connected {
        tracing::info!("child connected");
        tokio::select! {
            _ = closed.changed() => {}
            _ = state.wait_for(|s| matches!(
                s,
                RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Disconnected
            )) => {}
        }
    }
    tracing::info!("child gone");
    if let Some(link) = node.remove_child(&link.id) {
        link.close().await;
    }
}
