//! What travels on the wire besides records: topic names and the direct-message protocol.

use libp2p::StreamProtocol;
use libp2p::gossipsub::IdentTopic;
use serde::{Deserialize, Serialize};
use treecast_tree::{Message, NodeId, StreamId};

/// The request-response protocol carrying agent messages (and WebRTC offers/answers) between
/// two nodes, directly or through a relay.
pub const TREE_PROTOCOL: StreamProtocol = StreamProtocol::new("/treecast/tree/1");

/// Most records in one [`Ack::Records`].
pub const MAX_SYNC_RECORDS: usize = 2048;

/// The prefix of every stream topic; the version moves with the record format.
pub const TOPIC_PREFIX: &str = "treecast/1/stream/";

/// The gossipsub topic of a stream: `treecast/1/stream/<name>`.
pub fn topic(stream: &StreamId) -> IdentTopic {
    IdentTopic::new(format!("{TOPIC_PREFIX}{stream}"))
}

/// One direct message (CBOR on the wire; see docs/protocol.md for the JSON shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The stream the message is about.
    pub stream: StreamId,
    /// What it says.
    pub body: Body,
    /// The browser a signal server sends this for; absent when the sending peer speaks for
    /// itself. Accepted only from the peer that publishes that browser's records (or, for a
    /// node this receiver has not heard of yet, from the first peer that speaks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeId>,
    /// The node meant: the receiver itself, or one of the browsers it speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NodeId>,
}

impl Request {
    /// A request from the sending peer itself to `to`.
    pub fn new(stream: StreamId, body: Body, to: NodeId) -> Request {
        Request {
            stream,
            body,
            from: None,
            to: Some(to),
        }
    }
}

/// What a direct message says: an agent message, a step of the media link's offer/answer
/// exchange, or a liveness probe.
///
/// The media link between a child and its parent is negotiated after the agents agreed on it
/// (the parent sent [`Message::Accept`], or a swap or move named the parent): the child sends
/// an [`Body::Offer`], the parent answers with [`Body::Answer`] or [`Body::Refused`] in a
/// request of its own. Sessions are numbered by the child so that a late answer to an
/// abandoned offer is recognised and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// An agent message.
    Tree {
        /// The message.
        msg: Message,
    },
    /// A child's WebRTC offer (receive-only) for the media link from the receiver.
    Offer {
        /// Chosen by the child; echoed in the answer.
        session: u64,
        /// The SDP offer.
        sdp: String,
        /// The child plays the stream already (it is switching parents): start it at the next
        /// keyframe, not with the fast-start GOP, so that its new path is live rather than a
        /// GOP behind the old one. Absent (false) from older peers and for browsers.
        #[serde(default)]
        live: bool,
    },
    /// The parent's answer to offer `session`.
    Answer {
        /// The offer's session.
        session: u64,
        /// The SDP answer.
        sdp: String,
    },
    /// The parent will not feed this child (not its child in the tree, or a bad offer).
    Refused {
        /// The offer's session.
        session: u64,
        /// Why, for the log.
        reason: String,
    },
    /// Is the receiver alive, and does it receive media? The receiver's event loop answers
    /// [`Ack::Alive`] itself, so a busy driver does not delay the answer.
    /// A trickled ICE candidate between two browsers of different signal servers (native
    /// nodes put theirs in the SDP and ignore these).
    Candidate {
        /// The `candidate:` line, or empty for end-of-candidates.
        candidate: String,
        /// The media stream id.
        #[serde(default)]
        sdp_mid: Option<String>,
        /// The m-line index.
        #[serde(default)]
        sdp_m_line_index: Option<u16>,
    },
    Probe,
    /// What records of the stream do you hold? Answered by the receiver's event loop with
    /// [`Ack::Records`]: the sealed records it accepted recently, which the asker checks
    /// one by one as if they came from gossip. A newcomer asks the first peers it meets, so
    /// it knows the tree at once rather than after everyone's next republish.
    Sync,
}

/// The receiver's acknowledgement of a [`Request`]: delivery to its driver, not agreement (a
/// refusal of an attach is a [`Message::Reject`] sent back as its own request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ack {
    /// Handed to the receiver's driver.
    Delivered,
    /// The receiver's driver is not keeping up; the message was dropped.
    Busy,
    /// The answer to a [`Body::Probe`]: alive, and whether media arrives.
    Alive {
        /// Whether the receiver gets media (the root: whether its source plays).
        receiving: bool,
    },
    /// The answer to a [`Body::Sync`]: sealed records (see `gossip::envelope`), newest first,
    /// at most [`MAX_SYNC_RECORDS`].
    Records {
        /// The envelopes.
        records: Vec<serde_bytes::ByteBuf>,
    },
    /// The receiver does not take part in that stream.
    UnknownStream,
    /// The request spoke for a node whose records another peer publishes: dropped.
    NotYours,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        let s = StreamId::new("demo").expect("valid name");
        assert_eq!(topic(&s).to_string(), "treecast/1/stream/demo");
    }

    #[test]
    fn json_shape_is_stable() {
        let req = Request {
            stream: StreamId::new("demo").expect("valid name"),
            body: Body::Tree {
                msg: Message::Attach {
                    replaces: Some(NodeId(7)),
                },
            },
            from: None,
            to: None,
        };
        let json = serde_json::to_string(&req).expect("serializable");
        assert_eq!(
            json,
            r#"{"stream":"demo","body":{"type":"tree","msg":{"type":"attach","replaces":7}}}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(&json).expect("round trip"),
            req
        );
        let proxied = Request {
            from: Some(NodeId(9)),
            to: Some(NodeId(3)),
            ..req
        };
        let json = serde_json::to_string(&proxied).expect("serializable");
        assert!(json.ends_with(r#","from":9,"to":3}"#), "{json}");
        assert_eq!(
            serde_json::to_string(&Ack::UnknownStream).expect("serializable"),
            r#"{"type":"unknown_stream"}"#
        );
    }
}
