//! NACKs to the parent for the packets children asked for and the node's cache lacks.
//!
//! A child leg answers a child's NACK from the track's packet cache (`Feed::cached`); a miss
//! means the packet was lost on this node's own upstream leg, so the leg hands its sequence
//! number (in the parent's numbering) to the feed, and the task here NACKs it to the parent,
//! merged and rate-limited by `treecast_media::nack_requests` (many children share one loss
//! and ask repeatedly). The retransmission arrives like any packet: into the feed, the cache,
//! and on to every child. webrtc's NACK generator on the upstream leg keeps asking for the
//! node's own losses independently; this task only adds the children's view.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use tokio::time::Instant;
use treecast_media::nack_requests::NackRequests;
use webrtc::media_stream::track_remote::TrackRemote;

use crate::fanout::Feed;
use crate::rtcp_tap::LinkCounters;

/// Sends the feed's cache misses upstream as NACKs on `track` (the parent's track with
/// `media_ssrc`) until the feed takes another source or the track's connection ends.
pub async fn send_upstream(
    feed: Arc<Feed>,
    track: Arc<dyn TrackRemote>,
    media_ssrc: u32,
    counters: Arc<LinkCounters>,
) {
    let mut misses = feed.nack_requests();
    let epoch = Instant::now();
    let mut merger = NackRequests::default();
    while let Some(seq) = misses.recv().await {
        let _ = merger.request(seq, epoch.elapsed());
        // Everything that queued meanwhile goes up in the same NACK.
        while let Ok(seq) = misses.try_recv() {
            let _ = merger.request(seq, epoch.elapsed());
        }
        let seqs = merger.drain(epoch.elapsed());
        if seqs.is_empty() {
            continue;
        }
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&seqs),
        };
        counters
            .nacks_forwarded
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        if let Err(e) = track.write_rtcp(vec![Box::new(nack)]).await {
            tracing::debug!(error = %e, "NACK upstream failed");
            return;
        }
        tracing::trace!(?seqs, stats = ?merger.stats(), "children's misses NACKed upstream");
    }
}
