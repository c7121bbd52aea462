//! Application-level validation of gossiped records, before anything reaches the driver.
//!
//! gossipsub (strict mode) has already checked the signature, so `source` is the peer that
//! signed the message. Here we check that the bytes are a record of this topic's stream,
//! authored by that peer (or proxied by it for a browser) and newer than what we accepted
//! before. The verdict maps onto gossipsub's `MessageAcceptance`: a reject counts against the
//! forwarding peer's score, an ignore does not (a stale record may be an honest late copy).

use libp2p::PeerId;
use treecast_tree::{DecodeError, MAX_RECORD_BYTES, NodeId, NodeRecord, Platform, StreamId};

use super::bounded::BoundedMap;
use super::id::node_id;

/// What to do with one gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid, new record: forward it and hand it to the driver.
    Accept(NodeRecord),
    /// Invalid: drop it and penalise the sender.
    Reject(Rejection),
    /// Valid but useless (stale or replayed): drop it without penalty.
    Ignore(Ignored),
}

/// Why a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// More than [`MAX_RECORD_BYTES`].
    Oversized,
    /// Not a well-formed, valid record.
    Malformed,
    /// A record of another stream than the topic's.
    WrongStream,
    /// Not authored by the signing peer (nor a browser record it proxies).
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
    /// Records published (handed to gossipsub).
    pub published: u64,
    /// Direct messages whose receiver had to be looked up in the DHT after a failed dial.
    pub lookups: u64,
}

impl Stats {
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
            Verdict::Accept(_) => &mut self.accepted,
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

/// The last seq accepted per (stream, node), bounded.
///
/// When a node's entry is evicted, an old record of it could be accepted again; the tree
/// core's view still keeps the newest record per node, so this only costs a wasted delivery.
#[derive(Debug)]
pub(crate) struct Seqs(BoundedMap<(StreamId, NodeId), u64>);

impl Seqs {
    pub(crate) fn new(cap: usize) -> Self {
        Seqs(BoundedMap::new(cap))
    }

    /// Remembers that `record` reached the driver.
    pub(crate) fn accepted(&mut self, record: &NodeRecord) {
        self.0
            .insert((record.stream.clone(), record.node.id), record.node.seq);
    }
}

/// Validates one message of the topic of `stream` (`None`: a topic we do not follow), signed
/// by `source`. Never panics, whatever the bytes.
pub(crate) fn validate(
    stream: Option<&StreamId>,
    source: Option<&PeerId>,
    data: &[u8],
    seqs: &Seqs,
) -> Verdict {
    let Some(stream) = stream else {
        return Verdict::Ignore(Ignored::UnknownTopic);
    };
    // Strict mode guarantees a source; without one nobody vouches for the record.
    let Some(source) = source else {
        return Verdict::Reject(Rejection::Forged);
    };
    let record = match NodeRecord::decode(data) {
        Ok(r) => r,
        Err(DecodeError::TooLarge(_)) => return Verdict::Reject(Rejection::Oversized),
        Err(_) => return Verdict::Reject(Rejection::Malformed),
    };
    debug_assert!(data.len() <= MAX_RECORD_BYTES);
    if &record.stream != stream {
        return Verdict::Reject(Rejection::WrongStream);
    }
    let signer = node_id(source);
    let authored = match record.node.via {
        None => record.node.id == signer,
        // A signal server publishes its browsers' records, naming itself as `via`.
        Some(via) => record.node.platform == Platform::Browser && via == signer,
    };
    if !authored {
        return Verdict::Reject(Rejection::Forged);
    }
    let key = (record.stream.clone(), record.node.id);
    if seqs
        .0
        .get(&key)
        .is_some_and(|&last| record.node.seq <= last)
    {
        return Verdict::Ignore(Ignored::Stale);
    }
    Verdict::Accept(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use treecast_tree::{Node, Role};

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    fn record(id: NodeId, seq: u64) -> NodeRecord {
        let mut node = Node::new(id, Role::Relay, 2);
        node.seq = seq;
        NodeRecord {
            stream: StreamId::new("demo").expect("valid name"),
            node,
        }
    }

    #[test]
    fn accepts_own_new_records_and_ignores_replays() {
        let p = peer();
        let demo = StreamId::new("demo").expect("valid name");
        let mut seqs = Seqs::new(16);
        let rec = record(node_id(&p), 5);
        let v = validate(Some(&demo), Some(&p), &rec.encode(), &seqs);
        assert_eq!(v, Verdict::Accept(rec.clone()));
        seqs.accepted(&rec);
        let again = validate(Some(&demo), Some(&p), &rec.encode(), &seqs);
        assert_eq!(again, Verdict::Ignore(Ignored::Stale));
        let older = validate(
            Some(&demo),
            Some(&p),
            &record(node_id(&p), 4).encode(),
            &seqs,
        );
        assert_eq!(older, Verdict::Ignore(Ignored::Stale));
        let newer = record(node_id(&p), 6);
        let v = validate(Some(&demo), Some(&p), &newer.encode(), &seqs);
        assert_eq!(v, Verdict::Accept(newer));
    }

    #[test]
    fn rejects_forged_malformed_oversized_and_misplaced() {
        let (p, q) = (peer(), peer());
        let demo = StreamId::new("demo").expect("valid name");
        let other = StreamId::new("other").expect("valid name");
        let seqs = Seqs::new(16);
        let forged = record(node_id(&q), 1).encode();
        assert_eq!(
            validate(Some(&demo), Some(&p), &forged, &seqs),
            Verdict::Reject(Rejection::Forged)
        );
        assert_eq!(
            validate(Some(&demo), None, &forged, &seqs),
            Verdict::Reject(Rejection::Forged)
        );
        assert_eq!(
            validate(Some(&demo), Some(&p), b"hello", &seqs),
            Verdict::Reject(Rejection::Malformed)
        );
        assert_eq!(
            validate(Some(&demo), Some(&p), &[0; 1000], &seqs),
            Verdict::Reject(Rejection::Oversized)
        );
        let own = record(node_id(&p), 1).encode();
        assert_eq!(
            validate(Some(&other), Some(&p), &own, &seqs),
            Verdict::Reject(Rejection::WrongStream)
        );
        assert_eq!(
            validate(None, Some(&p), &own, &seqs),
            Verdict::Ignore(Ignored::UnknownTopic)
        );
    }

    #[test]
    fn a_proxy_may_publish_browser_records_only() {
        let (proxy, browser) = (peer(), peer());
        let demo = StreamId::new("demo").expect("valid name");
        let seqs = Seqs::new(16);
        let mut rec = record(node_id(&browser), 1);
        rec.node.via = Some(node_id(&proxy));
        // A native record cannot be proxied.
        assert_eq!(
            validate(Some(&demo), Some(&proxy), &rec.encode(), &seqs),
            Verdict::Reject(Rejection::Forged)
        );
        rec.node.platform = Platform::Browser;
        assert_eq!(
            validate(Some(&demo), Some(&proxy), &rec.encode(), &seqs),
            Verdict::Accept(rec.clone())
        );
        // Naming a proxy that did not sign is forging.
        assert_eq!(
            validate(Some(&demo), Some(&browser), &rec.encode(), &seqs),
            Verdict::Reject(Rejection::Forged)
        );
    }
}
