//! What travels on the wire besides records: topic names and the direct-message protocol.

use libp2p::StreamProtocol;
use libp2p::gossipsub::IdentTopic;
use serde::{Deserialize, Serialize};
use treecast_tree::{Message, StreamId};

/// The request-response protocol carrying agent messages (and WebRTC offers/answers) between
/// two nodes, directly or through a relay.
pub const TREE_PROTOCOL: StreamProtocol = StreamProtocol::new("/treecast/tree/1");

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
    /// The agent message.
    pub msg: Message,
    /// A WebRTC session description (offer or answer) riding along, if any.
    pub sdp: Option<String>,
}

/// The receiver's acknowledgement of a [`Request`]: delivery to its driver, not agreement (a
/// refusal of an attach is a [`Message::Reject`] sent back as its own request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ack {
    /// Handed to the receiver's driver.
    Delivered,
    /// The receiver's driver is not keeping up; the message was dropped.
    Busy,
    /// The receiver does not take part in that stream.
    UnknownStream,
}

#[cfg(test)]
mod tests {
    use super::*;
    use treecast_tree::NodeId;

    #[test]
    fn topic_names() {
        let s = StreamId::new("demo").expect("valid name");
        assert_eq!(topic(&s).to_string(), "treecast/1/stream/demo");
    }

    #[test]
    fn json_shape_is_stable() {
        let req = Request {
            stream: StreamId::new("demo").expect("valid name"),
            msg: Message::Attach {
                replaces: Some(NodeId(7)),
            },
            sdp: Some("v=0\r\n".into()),
        };
        let json = serde_json::to_string(&req).expect("serializable");
        assert_eq!(
            json,
            r#"{"stream":"demo","msg":{"type":"attach","replaces":7},"sdp":"v=0\r\n"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(&json).expect("round trip"),
            req
        );
        assert_eq!(
            serde_json::to_string(&Ack::UnknownStream).expect("serializable"),
            r#"{"type":"unknown_stream"}"#
        );
    }
}
