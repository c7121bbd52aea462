//! Application-level validation of gossiped records, before anything reaches the driver.
//!
//! gossipsub (strict mode) has already checked its own signature of the message. Here we
//! open the record's envelope (see [`super::envelope`]: the record sealed by its publisher,
//! so it stays verifiable when handed on by a sync) and check that it is a record of this
//! topic's stream, authored by its signer (or proxied by it for a browser) and newer than what
//! we accepted before. The verdict maps onto gossipsub's `MessageAcceptance`: a reject counts against the
//! forwarding peer's score, an ignore does not (a stale record may be an honest late copy).

use std::time::Instant;

use libp2p::PeerId;
use treecast_tree::{DecodeError, NodeId, NodeRecord, Platform, StreamId};

use super::bounded::BoundedMap;
use super::envelope::{self, EnvelopeError};
use super::id::node_id;

/// What to do with one gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived, one at a time
pub enum Verdict {
    /// A valid, new record: forward it and hand it to the driver.
    Accept {
        /// The record.
        record: NodeRecord,
        /// The peer that sealed it: its author, or the proxy of a browser.
        signer: PeerId,
        /// Where the signer says it can be dialled.
        addrs: Vec<libp2p::Multiaddr>,
    },
    /// Invalid: drop it and penalise the sender.
    Reject(Rejection),
    /// Valid but useless (stale or replayed): drop it without penalty.
    Ignore(Ignored),
}

/// Why a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// More than [`envelope::MAX_ENVELOPE_BYTES`], or a record over its cap.
    Oversized,
    /// Not a well-formed, valid record.
    Malformed,
    /// A record of another stream than the topic's.
    WrongStream,
    /// Not authored by the signing peer (nor a browser record it proxies), or a bad
    /// signature.
    Forged,
}

/// Why a message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Its seq is not newer than the last one accepted for that node.
    Stale,
    /// A topic we are not subscribed to.
    UnknownTopic,
}

/// Record bytes received as gossip before [`Stats::copies`] is measured: about 20 records.
const MIN_MEASURED: u64 = 4096;

/// Counters of validation outcomes and of what the driver never saw, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records accepted by validation (and forwarded); those the driver got are
    /// `accepted - dropped_records`.
    pub accepted: u64,
    /// Rejected: over the record size cap.
    pub rejected_oversized: u64,
    /// Rejected: not a valid record.
    pub rejected_malformed: u64,
    /// Rejected: record of another stream than its topic.
    pub rejected_wrong_stream: u64,
    /// Rejected: not authored by the signer.
    pub rejected_forged: u64,
    /// Ignored: stale or replayed seq.
    pub ignored_stale: u64,
    /// Ignored: a topic we do not follow.
    pub ignored_unknown_topic: u64,
    /// Accepted records not delivered because the driver's event channel was full.
    pub dropped_records: u64,
    /// Other events (peer and listen notices) dropped because the channel was full.
    pub dropped_events: u64,
    /// Direct messages delivered to the driver.
    pub messages: u64,
    /// Direct messages refused with `busy` because the driver's channel was full.
    pub messages_busy: u64,
    /// Direct messages refused because they spoke for a node another peer publishes.
    pub messages_forged: u64,
    /// Connections closed to stay under the peer bound (see `GossipConfig` `max_peers`).
    pub pruned: u64,
    /// Peers connected now.
    pub connected: u64,
    /// Connections established so far (each one: a noise handshake).
    pub opened: u64,
    /// Dials to known peers to stay connected (see `MIN_PEERS`).
    pub tended: u64,
    /// Records published (handed to gossipsub).
    pub published: u64,
    /// Records accepted from sync answers (counted in `accepted` too).
    pub synced: u64,
    /// Record bytes received (gossip messages' data and sync answers; libp2p framing and
    /// gossipsub control messages not included).
    pub bytes_in: u64,
    /// Of `bytes_in`, those that came as gossip (each record once, duplicates dropped).
    pub gossiped_in: u64,
    /// Record bytes published.
    pub bytes_out: u64,
    /// All bytes received on the overlay's connections: every protocol, framing included.
    pub overlay_in: u64,
    /// All bytes sent on the overlay's connections.
    pub overlay_out: u64,
    /// Of those, gossipsub messages received: records with their gossipsub framing,
    /// duplicates included; no control messages, no muxer framing.
    pub gossipsub_in: u64,
    /// Of those, gossipsub messages sent, every copy.
    pub gossipsub_out: u64,
    /// Direct messages whose receiver had to be looked up in the DHT after a failed dial.
    pub lookups: u64,
}

impl Stats {
    /// gossipsub message bytes on the wire (in and out, every copy, with gossipsub's framing)
    /// per record byte received as gossip: what receiving one record byte costs a node,
    /// measured. `None` until 4 KiB of records (about 20) came as gossip.
    pub fn copies(&self) -> Option<f64> {
        (self.gossiped_in >= MIN_MEASURED)
            .then(|| (self.gossipsub_in + self.gossipsub_out) as f64 / self.gossiped_in as f64)
    }

    /// All rejections.
    pub fn rejected(&self) -> u64 {
        self.rejected_oversized
            + self.rejected_malformed
            + self.rejected_wrong_stream
            + self.rejected_forged
    }

    /// All ignores.
    pub fn ignored(&self) -> u64 {
        self.ignored_stale + self.ignored_unknown_topic
    }

    pub(crate) fn count(&mut self, verdict: &Verdict) {
        let c = match verdict {
            Verdict::Accept { .. } => &mut self.accepted,
            Verdict::Reject(Rejection::Oversized) => &mut self.rejected_oversized,
            Verdict::Reject(Rejection::Malformed) => &mut self.rejected_malformed,
            Verdict::Reject(Rejection::WrongStream) => &mut self.rejected_wrong_stream,
            Verdict::Reject(Rejection::Forged) => &mut self.rejected_forged,
            Verdict::Ignore(Ignored::Stale) => &mut self.ignored_stale,
            Verdict::Ignore(Ignored::UnknownTopic) => &mut self.ignored_unknown_topic,
        };
        *c += 1;
    }
}

/// The newest record accepted per (stream, node), bounded: its seq (to ignore replays), its
/// envelope and when it arrived (to hand on in a sync).
///
/// When a node's entry is evicted, an old record of it could be accepted again; the tree
/// core's view still keeps the newest record per node, so this only costs a wasted delivery.
#[derive(Debug)]
pub(crate) struct Seqs(BoundedMap<(StreamId, NodeId), Held>);

#[derive(Debug)]
struct Held {
    seq: u64,
    envelope: Vec<u8>,
    at: Instant,
    /// How long a sync still hands it on: the record's lifetime (`Node::lifetime`).
    keep: std::time::Duration,
}

impl Seqs {
    pub(crate) fn new(cap: usize) -> Self {
        Seqs(BoundedMap::new(cap))
    }

    /// Remembers that `record`, sealed in `envelope`, reached the driver; a sync hands it on
    /// for its lifetime, `min_age` at least (see [`Seqs::recent`]).
    pub(crate) fn accepted(
        &mut self,
        record: &NodeRecord,
        envelope: Vec<u8>,
        min_age: std::time::Duration,
    ) {
        self.0.insert(
            (record.stream.clone(), record.node.id),
            Held {
                seq: record.node.seq,
                envelope,
                at: Instant::now(),
                keep: record.node.lifetime(min_age),
            },
        );
    }

    /// The envelopes of `stream` still within their lifetime (as [`Seqs::accepted`] noted
    /// it), at most `limit`, newest first.
    pub(crate) fn recent(&self, stream: &StreamId, limit: usize) -> Vec<Vec<u8>> {
        let mut held: Vec<&Held> = self
            .0
            .iter()
            .filter(|((s, _), h)| s == stream && h.at.elapsed() <= h.keep)
            .map(|(_, h)| h)
            .collect();
        held.sort_by_key(|h| std::cmp::Reverse(h.at));
        held.into_iter()
            .take(limit)
            .map(|h| h.envelope.clone())
            .collect()
    }
}

/// Validates one message of the topic of `stream` (`None`: a topic we do not follow): an
/// envelope sealing a record. Never panics, whatever the bytes.
pub(crate) fn validate(stream: Option<&StreamId>, data: &[u8], seqs: &Seqs) -> Verdict {
    let Some(stream) = stream else {
        return Verdict::Ignore(Ignored::UnknownTopic);
    };
    let bad_envelope = |e: EnvelopeError| match e {
        EnvelopeError::TooLarge => Verdict::Reject(Rejection::Oversized),
        EnvelopeError::Malformed => Verdict::Reject(Rejection::Malformed),
        EnvelopeError::BadKey | EnvelopeError::BadSignature => Verdict::Reject(Rejection::Forged),
    };
    let parsed = match envelope::parse(data) {
        Ok(p) => p,
        Err(e) => return bad_envelope(e),
    };
    let record = match NodeRecord::decode(parsed.record) {
        Ok(r) => r,
        Err(DecodeError::TooLarge(_)) => return Verdict::Reject(Rejection::Oversized),
        Err(_) => return Verdict::Reject(Rejection::Malformed),
    };
    if &record.stream != stream {
        return Verdict::Reject(Rejection::WrongStream);
    }
    // What we hold already is dropped before the signature is checked: a verification is most
    // of the cost of a message, and a newcomer's second sync is mostly records it has.
    let key = (record.stream.clone(), record.node.id);
    if seqs
        .0
        .get(&key)
        .is_some_and(|last| record.node.seq <= last.seq)
    {
        return Verdict::Ignore(Ignored::Stale);
    }
    let envelope::Opened { signer, addrs, .. } = match parsed.verify() {
        Ok(opened) => opened,
        Err(e) => return bad_envelope(e),
    };
    let signer_id = node_id(&signer);
    let authored = match record.node.via {
        None => record.node.id == signer_id,
        // A signal server publishes its browsers' records, naming itself as `via`.
        Some(via) => record.node.platform == Platform::Browser && via == signer_id,
    };
    if !authored {
        return Verdict::Reject(Rejection::Forged);
    }
    Verdict::Accept {
        record,
        signer,
        addrs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use treecast_tree::{Node, Role};

    fn key() -> Keypair {
        Keypair::generate_ed25519()
    }

    fn id(k: &Keypair) -> NodeId {
        node_id(&k.public().to_peer_id())
    }

    fn record(id: NodeId, seq: u64) -> NodeRecord {
        let mut node = Node::new(id, Role::Relay, 2);
        node.seq = seq;
        NodeRecord {
            stream: StreamId::new("demo").expect("valid name"),
            node,
        }
    }

    fn sealed(k: &Keypair, rec: &NodeRecord) -> Vec<u8> {
        envelope::seal(k, &rec.encode(), &[]).expect("ed25519 signs")
    }

    fn accept(k: &Keypair, rec: &NodeRecord) -> Verdict {
        Verdict::Accept {
            record: rec.clone(),
            signer: k.public().to_peer_id(),
            addrs: Vec::new(),
        }
    }

    #[test]
    fn accepts_own_new_records_and_ignores_replays() {
        let p = key();
        let demo = StreamId::new("demo").expect("valid name");
        let mut seqs = Seqs::new(16);
        let rec = record(id(&p), 5);
        let v = validate(Some(&demo), &sealed(&p, &rec), &seqs);
        assert_eq!(v, accept(&p, &rec));
        seqs.accepted(&rec, sealed(&p, &rec), std::time::Duration::from_secs(60));
        let again = validate(Some(&demo), &sealed(&p, &rec), &seqs);
        assert_eq!(again, Verdict::Ignore(Ignored::Stale));
        let older = validate(Some(&demo), &sealed(&p, &record(id(&p), 4)), &seqs);
        assert_eq!(older, Verdict::Ignore(Ignored::Stale));
        let newer = record(id(&p), 6);
        let v = validate(Some(&demo), &sealed(&p, &newer), &seqs);
        assert_eq!(v, accept(&p, &newer));
        assert_eq!(seqs.recent(&demo, 10), vec![sealed(&p, &rec)]);
    }

    #[test]
    fn a_sync_hands_on_a_record_for_its_declared_lifetime() {
        let (p, q) = (key(), key());
        let demo = StreamId::new("demo").expect("valid name");
        let mut seqs = Seqs::new(16);
        let silent = record(id(&p), 5);
        let mut paced = record(id(&q), 5);
        paced.node.refresh_tens = 60; // 10 minutes: kept 30
        seqs.accepted(&silent, sealed(&p, &silent), std::time::Duration::ZERO);
        seqs.accepted(&paced, sealed(&q, &paced), std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(seqs.recent(&demo, 10), vec![sealed(&q, &paced)]);
    }

    #[test]
    fn rejects_forged_malformed_oversized_and_misplaced() {
        let (p, q) = (key(), key());
        let demo = StreamId::new("demo").expect("valid name");
        let other = StreamId::new("other").expect("valid name");
        let seqs = Seqs::new(16);
        // q's record sealed by p.
        let forged = sealed(&p, &record(id(&q), 1));
        assert_eq!(
            validate(Some(&demo), &forged, &seqs),
            Verdict::Reject(Rejection::Forged)
        );
        // A bare record, without envelope.
        assert_eq!(
            validate(Some(&demo), &record(id(&p), 1).encode(), &seqs),
            Verdict::Reject(Rejection::Malformed)
        );
        // A valid envelope around bytes that are not a record.
        let junk = envelope::seal(&p, b"hello", &[]).expect("ed25519 signs");
        assert_eq!(
            validate(Some(&demo), &junk, &seqs),
            Verdict::Reject(Rejection::Malformed)
        );
        assert_eq!(
            validate(Some(&demo), &[1; 1000], &seqs),
            Verdict::Reject(Rejection::Oversized)
        );
        let own = sealed(&p, &record(id(&p), 1));
        // A flipped signature bit: forged.
        let mut tampered = own.clone();
        *tampered.last_mut().expect("not empty") ^= 1;
        assert_eq!(
            validate(Some(&demo), &tampered, &seqs),
            Verdict::Reject(Rejection::Forged)
        );
        // A flipped record bit: rejected, as malformed if the record no longer decodes (that
        // is checked first), else as forged.
        let mut tampered = own.clone();
        tampered[5] ^= 1;
        assert!(
            matches!(
                validate(Some(&demo), &tampered, &seqs),
                Verdict::Reject(Rejection::Malformed | Rejection::Forged)
            ),
            "a tampered record was not rejected"
        );
        assert_eq!(
            validate(Some(&other), &own, &seqs),
            Verdict::Reject(Rejection::WrongStream)
        );
        assert_eq!(
            validate(None, &own, &seqs),
            Verdict::Ignore(Ignored::UnknownTopic)
        );
    }

    #[test]
    fn a_proxy_may_publish_browser_records_only() {
        let (proxy, browser) = (key(), key());
        let demo = StreamId::new("demo").expect("valid name");
        let seqs = Seqs::new(16);
        let mut rec = record(id(&browser), 1);
        rec.node.via = Some(id(&proxy));
        // A native record cannot be proxied.
        assert_eq!(
            validate(Some(&demo), &sealed(&proxy, &rec), &seqs),
            Verdict::Reject(Rejection::Forged)
        );
        rec.node.platform = Platform::Browser;
        assert_eq!(
            validate(Some(&demo), &sealed(&proxy, &rec), &seqs),
            accept(&proxy, &rec)
        );
        // Naming a proxy that did not sign is forging.
        assert_eq!(
            validate(Some(&demo), &sealed(&browser, &rec), &seqs),
            Verdict::Reject(Rejection::Forged)
        );
    }

    #[test]
    fn copies_are_measured_once_enough_records_came_as_gossip() {
        let mut stats = Stats {
            gossiped_in: 4000,
            gossipsub_in: 8000,
            gossipsub_out: 8000,
            ..Stats::default()
        };
        assert_eq!(stats.copies(), None, "under 4 KiB of records: not yet");
        // 2 copies in and 2 out per record byte; sync answers count for neither.
        stats.gossiped_in = 5000;
        stats.bytes_in = 40_000;
        stats.gossipsub_in = 10_000;
        stats.gossipsub_out = 10_000;
        assert_eq!(stats.copies(), Some(4.0));
    }
}
