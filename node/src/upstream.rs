//! The upstream leg: pull the broadcast from a parent's WHEP URL, then feed every packet into
//! the fan-out and send merged, rate-limited keyframe requests back up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use treecast_media::keyframe_requests::KeyframeRequests;
use treecast_media::loss::LossMeter;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use crate::codec::{Codec, CodecExt, MediaKind};
use crate::fanout::{Feed, Tracks};
use crate::node::NodeState;
use crate::peer::{Direction, Peer, PeerError};
use crate::whep_client::{WhepAnswer, WhepError, parent_status, post_offer};

/// At most one keyframe request per this interval goes upstream per track (pitfall 7; LiveKit
/// and Galène use the same figure). Requests in between merge into one.
pub const KEYFRAME_REQUEST_INTERVAL: Duration =
    treecast_media::keyframe_requests::DEFAULT_MIN_INTERVAL;

/// How long the tracks announced in the answer may take to start.
const TRACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why pulling from the parent failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The WHEP exchange failed.
    #[error(transparent)]
    Whep(#[from] WhepError),
    /// The peer connection failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The answer was not usable.
    #[error("bad answer from parent: {0}")]
    BadAnswer(String),
    /// The parent sent nothing we can forward.
    #[error("parent sends no supported track")]
    NoTracks,
    /// The connection to the parent failed or closed.
    #[error("lost the parent")]
    Lost,
}

/// Pulls from `url` (retrying while the parent is busy or not up yet) until the connection is
/// up and the tracks are known, then keeps forwarding until the parent is lost, or until `stop`
/// turns true: then it closes the connection (so the parent frees the slot at once) and
/// returns `Ok`.
pub async fn run(
    node: Arc<NodeState>,
    url: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), UpstreamError> {
    let mut reconnecting = false;
    loop {
        let mut peer = tokio::select! {
            p = connect_retrying(&node, &url, reconnecting) => p?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let parent_id = parent_status(&url).await.map(|(id, _)| id);
        let lost = tokio::select! {
            _ = peer.state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                )
            }) => true,
            _ = parent_gone(&node, &url, parent_id.as_deref()) => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        let _ = peer.pc.close().await;
        if !lost {
            return Ok(());
        }
        // Pitfall 10: ICE notices a dead parent only after many seconds; media silence
        // tells sooner. Pull again; the feeds (and every child) stay, with a new source.
        tracing::warn!(parent = url, "lost the parent; reconnecting");
        reconnecting = true;
    }
}

/// Connects, retrying while the parent is busy or unreachable, and after any other failure
/// (a handshake that stalled, tracks that never started) too: a parent may be briefly broken,
/// and a node without a parent has nothing better to do. `reconnecting` only changes the log.
async fn connect_retrying(
    node: &Arc<NodeState>,
    url: &str,
    reconnecting: bool,
) -> Result<Peer, UpstreamError> {
    loop {
        match connect(node, url).await {
            Ok(peer) => return Ok(peer),
            Err(UpstreamError::Whep(WhepError::RetryAfter(d))) => {
                tracing::info!(retry_in = ?d, "parent busy or not ready");
                tokio::time::sleep(d).await;
            }
            Err(UpstreamError::Whep(e @ WhepError::Http(_))) => {
                tracing::info!(error = %e, "parent unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                if reconnecting {
                    tracing::info!(error = %e, "parent not back yet");
                } else {
                    tracing::warn!(error = %e, "pulling from the parent failed; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Media silence this long means the parent is gone (tree heartbeats are the tree's job).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(2);

/// Completes when the parent is gone: media stopped for [`SILENCE_LIMIT`] and the parent's
/// status does not explain it. A treecast parent that still answers with the same node id and
/// says it is not receiving either is waiting for its own parent: reconnecting to it would not
/// help, so the whole subtree does not stampede when a node far up is lost.
async fn parent_gone(node: &NodeState, url: &str, parent_id: Option<&str>) {
    loop {
        silence(node).await;
        match parent_status(url).await {
            Some((id, false)) if Some(id.as_str()) == parent_id => {
                tracing::debug!("parent alive but starved too; waiting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => return,
        }
    }
}

/// Completes once media that was flowing has stopped for [`SILENCE_LIMIT`].
async fn silence(node: &NodeState) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if node.silent_for().is_some_and(|d| d >= SILENCE_LIMIT) {
            return;
        }
    }
}

async fn connect(node: &Arc<NodeState>, url: &str) -> Result<Peer, UpstreamError> {
    connect_via(node, url, |offer| async move {
        Ok(post_offer(url, offer).await?.sdp)
    })
    .await
}

/// Connects to a parent: builds a receive-only peer connection, hands its offer to `exchange`
/// (a WHEP POST, or a direct message over the gossip overlay) and applies the answer it
/// returns; then waits for the tracks to start. On a reconnect the existing feeds switch to
/// the new source as its tracks start. `parent` names the parent in logs.
pub async fn connect_via<F, Fut>(
    node: &Arc<NodeState>,
    parent: &str,
    exchange: F,
) -> Result<Peer, UpstreamError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, UpstreamError>>,
{
    let url = parent;
    let mut peer = node
        .factory
        .build(node.upstream.clone(), Direction::Receive)
        .await?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        peer.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(PeerError::from)?;
    }
    let offer = peer.pc.create_offer(None).await.map_err(PeerError::from)?;
    let offer_sdp = peer.finish_local(offer).await?;
    let answer = match exchange(offer_sdp).await {
        Ok(sdp) => WhepAnswer {
            sdp,
            location: None,
        },
        Err(e) => {
            let _ = peer.pc.close().await;
            return Err(e);
        }
    };
    let expected = sending_kinds(&answer.sdp);
    let answer_sdp_for_log = answer.sdp.clone();
    if expected.is_empty() {
        let _ = peer.pc.close().await;
        return Err(UpstreamError::NoTracks);
    }
    let applied = match RTCSessionDescription::answer(answer.sdp) {
        Ok(desc) => peer.pc.set_remote_description(desc).await,
        Err(e) => Err(e),
    };
    if let Err(e) = applied {
        let _ = peer.pc.close().await;
        return Err(UpstreamError::BadAnswer(e.to_string()));
    }
    tracing::info!(parent = url, ?expected, "answer from parent");
    tracing::trace!(sdp = %answer_sdp_for_log, "answer");

    let tracks = adopt_tracks(node, &mut peer.tracks, &expected, url).await;
    if tracks.iter().next().is_none() {
        let _ = peer.pc.close().await;
        return Err(UpstreamError::NoTracks);
    }
    // First connection: fix the tracks. After a reconnect they are the same feeds.
    node.set_tracks(tracks);
    Ok(peer)
}

/// Turns the remote tracks of a connection (from a parent, or a WHIP publisher) into feeds as
/// they start, until one per `expected` kind arrived or [`TRACK_TIMEOUT`] passed. Each track
/// is drained from its first packet on (pitfall 5) and gets its keyframe request sender.
pub async fn adopt_tracks(
    node: &Arc<NodeState>,
    remote: &mut mpsc::Receiver<Arc<dyn TrackRemote>>,
    expected: &[MediaKind],
    origin: &str,
) -> Tracks {
    let mut tracks = Tracks::default();
    let deadline = tokio::time::Instant::now() + TRACK_TIMEOUT;
    while tracks.iter().count() < expected.len() {
        let Ok(Some(track)) = tokio::time::timeout_at(deadline, remote.recv()).await else {
            break;
        };
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            continue;
        };
        let Some(rtp_codec) = track.codec(ssrc).await else {
            continue;
        };
        let Some(codec) = Codec::from_mime(&rtp_codec.mime_type) else {
            tracing::warn!(mime = rtp_codec.mime_type, "unsupported codec from parent");
            continue;
        };
        // After a reconnect the feeds already exist: the new parent's track continues the
        // one of its kind, as a new source. A different codec cannot: children negotiated
        // the old one.
        let existing = node.tracks().and_then(|t| match codec.kind() {
            MediaKind::Video => t.video,
            MediaKind::Audio => t.audio,
        });
        // Video switches at a keyframe (see `switch_to_track`); audio at once.
        let (feed, requests) = match existing {
            Some(feed) if feed.codec == codec && codec.is_video() => (feed, None),
            Some(feed) if feed.codec == codec => {
                let requests = feed.switch_source();
                feed.set_origin(origin);
                (feed, Some(requests))
            }
            Some(feed) => {
                tracing::error!(old = ?feed.codec, new = ?codec, "new parent sends another codec");
                continue;
            }
            None => {
                let (feed, requests) = Feed::with_fast_start(codec, rtp_codec, node.fast_start);
                feed.set_origin(origin);
                (feed, Some(requests))
            }
        };
        if tracks.insert(feed.clone()) {
            // Drain at once, even before the other tracks start (pitfall 5).
            let span = tracing::info_span!("upstream", kind = ?feed.kind());
            let (node, origin) = (node.clone(), origin.to_owned());
            let task = async move {
                match requests {
                    Some(requests) => follow_track(node, feed, track, ssrc, requests).await,
                    None => switch_to_track(node, feed, track, ssrc, origin).await,
                }
            };
            tokio::spawn(task.instrument(span));
        }
    }
    tracks
}

/// Feeds `feed` from `track` (whose source the feed follows now): the packets, the
/// children's NACK misses up, the keyframe requests up.
async fn follow_track(
    node: Arc<NodeState>,
    feed: Arc<Feed>,
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    requests: mpsc::Receiver<()>,
) {
    let source = feed.source_id();
    let nacks =
        crate::nack::send_upstream(feed.clone(), track.clone(), ssrc, node.upstream.clone());
    tokio::spawn(nacks.in_current_span());
    tokio::spawn(
        send_keyframe_requests(feed.clone(), track.clone(), requests, ssrc).in_current_span(),
    );
    read_track(node, feed, track, source).await;
}

/// Make-before-break for video: the current parent keeps feeding while the new parent's
/// track is drained, until it brings a keyframe where switching shows no old frame again
/// ([`Feed::may_switch_at`]) or the current source has gone silent (the old parent is gone:
/// any keyframe will do). Then the feed switches to this track, from that keyframe on.
async fn switch_to_track(
    node: Arc<NodeState>,
    feed: Arc<Feed>,
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    origin: String,
) {
    let mut skipped = 0u32;
    while let Some(ev) = track.poll().await {
        let packet = match ev {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => return,
            _ => continue,
        };
        if !feed.codec.is_keyframe_start(&packet.payload) {
            continue;
        }
        let old_live = node.silent_for().is_some_and(|s| s < SWITCH_SILENCE);
        if old_live && !feed.may_switch_at(&packet.payload) {
            skipped += 1;
            tracing::debug!(
                skipped,
                ts = packet.header.timestamp,
                seq = packet.header.sequence_number,
                "new parent's keyframe already forwarded; the old parent still feeds"
            );
            continue;
        }
        tracing::debug!(skipped, old_live, "switching to the new parent's track");
        let requests = feed.switch_source();
        feed.set_origin(&origin);
        let c = &node.upstream;
        // A new link: the old one's loss says nothing about it.
        c.fraction_lost.store(0, Ordering::Relaxed);
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        node.media_arrived();
        feed.push(packet);
        follow_track(node, feed, track, ssrc, requests).await;
        return;
    }
}

/// Silence of the current source after which a new parent's track is switched to at its first
/// keyframe, whatever it shows again (the old parent is gone: repair, not a planned switch).
pub(crate) const SWITCH_SILENCE: Duration = Duration::from_millis(250);

/// Drains the remote track continuously (pitfall 5) into the feed, as long as the feed's
/// source is still `source`: once a new parent's track took over (a make-before-break
/// switch), the old connection's packets are drained and dropped until it closes.
async fn read_track(
    node: Arc<NodeState>,
    feed: Arc<Feed>,
    track: Arc<dyn TrackRemote>,
    source: u32,
) {
    let c = node.upstream.clone();
    // The loss this link leaves after NACK repair, for our record: children judge their parent
    // by it (`View::is_struggling`), and the agent leaves a parent that keeps it high.
    let mut loss = LossMeter::default();
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(_) if feed.source_id() != source => {}
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let now = node.media_arrived();
                if let Some(fraction) = loss.packet(packet.header.sequence_number, now) {
                    c.fraction_lost
                        .store(u64::from(fraction), Ordering::Relaxed);
                }
                c.packets.fetch_add(1, Ordering::Relaxed);
                c.bytes
                    .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
                feed.push(packet);
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    tracing::info!("upstream track ended");
}

/// Turns the feed's keyframe requests into PLIs upstream through `treecast-media`'s limiter:
/// at most one per [`KEYFRAME_REQUEST_INTERVAL`]; a request held back is sent when the
/// interval ends, unless a keyframe arrived meanwhile.
async fn send_keyframe_requests(
    feed: Arc<Feed>,
    track: Arc<dyn TrackRemote>,
    mut requests: mpsc::Receiver<()>,
    media_ssrc: u32,
) {
    let epoch = tokio::time::Instant::now();
    let mut limiter = KeyframeRequests::new(KEYFRAME_REQUEST_INTERVAL);
    let mut keyframes_at_hold = feed.keyframes_seen();
    loop {
        let deadline = limiter.next_deadline().map(|d| epoch + d);
        let send = tokio::select! {
            r = requests.recv() => match r {
                Some(()) => {
                    let send = limiter.request(epoch.elapsed());
                    if send.is_none() {
                        keyframes_at_hold = feed.keyframes_seen();
                    }
                    send
                }
                None => return,
            },
            _ = sleep_until_some(deadline) => {
                if feed.keyframes_seen() != keyframes_at_hold {
                    limiter.keyframe_arrived();
                }
                limiter.poll(epoch.elapsed())
            }
        };
        if send.is_none() {
            continue;
        }
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!(error = %e, "PLI upstream failed");
            return;
        }
        tracing::debug!(stats = ?limiter.stats(), "keyframe request sent upstream");
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The media kinds an SDP answer says the parent will send: m-sections with a non-zero port,
/// a sending direction (RFC 8866 section 6.7; sendrecv is the default) and a source (`a=ssrc`
/// or `a=msid`). The source check matters: webrtc 0.21 answers `a=sendonly` for a section it
/// has no track for.
pub fn sending_kinds(sdp: &str) -> Vec<MediaKind> {
    #[derive(Clone, Copy)]
    struct Section {
        kind: MediaKind,
        open: bool,
        sends: bool,
        has_source: bool,
    }
    let mut kinds = Vec::new();
    let mut current: Option<Section> = None;
    let close = |cur: Option<Section>, kinds: &mut Vec<MediaKind>| {
        if let Some(s) = cur
            && s.open
            && s.sends
            && s.has_source
            && !kinds.contains(&s.kind)
        {
            kinds.push(s.kind);
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            close(current.take(), &mut kinds);
            let mut parts = m.split_whitespace();
            let kind = match parts.next() {
                Some("video") => Some(MediaKind::Video),
                Some("audio") => Some(MediaKind::Audio),
                _ => None,
            };
            let open = parts.next().is_some_and(|p| p != "0");
            current = kind.map(|kind| Section {
                kind,
                open,
                sends: true,
                has_source: false,
            });
        } else if let Some(s) = current.as_mut() {
            match line {
                "a=recvonly" | "a=inactive" => s.sends = false,
                l if l.starts_with("a=ssrc:") || l.starts_with("a=msid:") => s.has_source = true,
                _ => {}
            }
        }
    }
    close(current, &mut kinds);
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_answer() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:1 cname:x\r\na=sendonly\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:s a\r\na=inactive\r\n";
        assert_eq!(sending_kinds(sdp), vec![MediaKind::Video]);
        let sdp = "m=audio 9 RTP 111\r\na=msid:s a\r\nm=video 0 RTP 96\r\na=ssrc:2 x\r\n\
                   m=application 9 x\r\n";
        assert_eq!(sending_kinds(sdp), vec![MediaKind::Audio]);
        // What webrtc 0.21 answers for a section without a track: sendonly, but no source.
        let sdp =
            "m=video 9 RTP 96\r\na=ssrc:3 x\r\na=sendonly\r\nm=audio 9 RTP 111\r\na=sendonly\r\n";
        assert_eq!(sending_kinds(sdp), vec![MediaKind::Video]);
        assert!(sending_kinds("garbage\0\u{fffd}").is_empty());
    }
}
