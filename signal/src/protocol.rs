//! The signalling wire between a browser and the signal server: JSON text frames over a
//! WebSocket at `/ws/{stream}`, one message per frame, tagged by `type` (docs/protocol.md,
//! "Signalling"). Fixtures of every message live in `signal/fixtures/` and are round-tripped by
//! the Rust and the JS tests.
//!
//! Node ids travel as 16 hex digits in a string: a `u64` does not survive a JavaScript number.

use serde::{Deserialize, Serialize};
use treecast_tree::{NodeId, StreamId};

/// The largest text frame accepted from a browser, in bytes. An SDP offer with a few candidates
/// is 3-6 KiB; 64 KiB leaves room for many codecs and candidates but not for abuse.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The longest SDP accepted in an offer or answer, in bytes.
pub const MAX_SDP_BYTES: usize = 48 * 1024;

/// The longest ICE candidate line accepted, in bytes (RFC 8839 lines are well under 300).
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// What a browser sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// "Place me in this stream's tree." Sent once per connection.
    Join {
        /// The stream; must be the one in the WebSocket URL.
        stream: StreamId,
        /// What this browser can do for the tree.
        capabilities: Capabilities,
    },
    /// "I am leaving": the server detaches this node at once instead of waiting for the socket.
    Leave {},
    /// The browser agrees to feed `child` (answer to [`ServerMessage::ChildRequest`]).
    ChildAccepted {
        /// The prospective child.
        #[serde(with = "hex_id")]
        child: NodeId,
    },
    /// The browser cannot feed `child` after all (no CPU, no media yet, closing).
    ChildRefused {
        /// The prospective child.
        #[serde(with = "hex_id")]
        child: NodeId,
    },
    /// An SDP offer for the parent (a child offers, recvonly, as in WHEP).
    Offer {
        /// The parent.
        #[serde(with = "hex_id")]
        to: NodeId,
        /// The offer.
        sdp: String,
    },
    /// An SDP answer for a child.
    Answer {
        /// The child.
        #[serde(with = "hex_id")]
        to: NodeId,
        /// The answer.
        sdp: String,
    },
    /// A trickled ICE candidate for the parent or a child.
    Candidate {
        /// The peer.
        #[serde(with = "hex_id")]
        to: NodeId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Measurements of the link from the parent (from `RTCPeerConnection.getStats()`).
    Stats(Stats),
    /// Media from the parent went silent or its connection failed: repair.
    ParentLost {},
    /// The connection to this child failed: free its slot.
    ChildLost {
        /// The child.
        #[serde(with = "hex_id")]
        child: NodeId,
    },
    /// Liveness probe; the server answers [`ServerMessage::Pong`] with the same nonce.
    Ping {
        /// Echoed back.
        nonce: u32,
    },
    /// Answer to a [`ServerMessage::Ping`].
    Pong {
        /// The nonce of the ping.
        nonce: u32,
    },
}

/// What the server sends to a browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// First message on every connection.
    Welcome {
        /// The id the server gives this browser in the tree.
        #[serde(with = "hex_id")]
        node_id: NodeId,
        /// The stream.
        stream: StreamId,
        /// Whether a broadcaster is known: without one there is nothing to watch.
        live: bool,
        /// The limits this connection is held to.
        limits: Limits,
        /// STUN/TURN servers for `RTCPeerConnection`.
        ice_servers: Vec<IceServer>,
    },
    /// The stream went live or stopped being live.
    Status {
        /// Whether a broadcaster is known.
        live: bool,
    },
    /// Attached (or moved) under `parent`: offer to it.
    Placed {
        /// This browser.
        #[serde(with = "hex_id")]
        node_id: NodeId,
        /// The parent to receive from.
        #[serde(with = "hex_id")]
        parent: NodeId,
        /// Whether the parent is a native node or a browser.
        parent_platform: PeerPlatform,
        /// Hops from the root.
        depth: u16,
    },
    /// No place right now; the server keeps trying.
    Unplaced {
        /// Why.
        reason: UnplacedReason,
    },
    /// Another browser wants to attach to this one: reply `child_accepted` or `child_refused`.
    ChildRequest {
        /// The prospective child.
        #[serde(with = "hex_id")]
        child: NodeId,
    },
    /// Feed this child (its offer follows).
    ChildAdded {
        /// The child.
        #[serde(with = "hex_id")]
        child: NodeId,
    },
    /// Stop feeding this child.
    ChildRemoved {
        /// The child.
        #[serde(with = "hex_id")]
        child: NodeId,
    },
    /// An SDP offer from a child.
    Offer {
        /// The child.
        #[serde(with = "hex_id")]
        from: NodeId,
        /// The offer.
        sdp: String,
    },
    /// An SDP answer from the parent.
    Answer {
        /// The parent.
        #[serde(with = "hex_id")]
        from: NodeId,
        /// The answer.
        sdp: String,
    },
    /// A trickled ICE candidate from the parent or a child.
    Candidate {
        /// The peer.
        #[serde(with = "hex_id")]
        from: NodeId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The parent is gone; the server is already re-attaching this browser (a `placed` follows).
    ParentLost {
        /// The lost parent.
        #[serde(with = "hex_id")]
        parent: NodeId,
    },
    /// The last message was refused; the session goes on.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Liveness probe; answer with `pong`.
    Ping {
        /// Echo this back.
        nonce: u32,
    },
    /// Answer to a client `ping`.
    Pong {
        /// The nonce of the ping.
        nonce: u32,
    },
}

/// What a browser declares it can do. The browser decides `relay` itself (see
/// `browser/src/relay.js`); the server turns it into a capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Whether the browser offers to feed children.
    pub relay: bool,
    /// Measured (or estimated) upload, kbit/s; 0 if unknown.
    pub uplink_kbps: u32,
    /// Whether `RTCRtpScriptTransform` (encoded-frame forwarding) is available.
    #[serde(default)]
    pub encoded_transform: bool,
}

/// Link statistics a browser reports about its parent link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Media bitrate received, kbit/s.
    pub kbps: u32,
    /// Packets lost, per thousand.
    pub loss_permille: u16,
    /// Round-trip time to the parent, ms.
    pub rtt_ms: u16,
    /// Whether frames are being decoded right now.
    pub receiving: bool,
    /// Frames decoded so far.
    #[serde(default)]
    pub frames_decoded: u64,
}

/// One trickled ICE candidate, as `RTCIceCandidateInit` (`candidate` empty: end of candidates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceCandidate {
    /// The `candidate:` attribute line, or empty for end-of-candidates.
    pub candidate: String,
    /// The media stream id (`a=mid`).
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The index of the m-line.
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
}

/// A STUN or TURN server, as `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
}

/// The limits of one connection, told to the browser so it can stay within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message, bytes.
    pub max_message_bytes: u32,
    /// Sustained messages per second.
    pub messages_per_second: u32,
    /// Burst allowance above the sustained rate.
    pub burst: u32,
}

/// Where a parent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerPlatform {
    /// A `treecast` process (reached through the server over libp2p).
    Native,
    /// Another browser (reached through this server's WebSocket).
    Browser,
}

/// Why a browser has no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnplacedReason {
    /// No broadcaster is known: the stream is not live.
    NotLive,
    /// Every slot is taken; retrying with back-off.
    NoSlot,
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a message this protocol knows.
    BadMessage,
    /// A binary frame: the protocol is text only.
    Binary,
    /// Larger than [`Limits::max_message_bytes`] or a field limit.
    TooLarge,
    /// Faster than [`Limits::messages_per_second`]; messages are dropped for a while.
    RateLimited,
    /// `join` for another stream than the URL's.
    WrongStream,
    /// A second `join` on one connection.
    AlreadyJoined,
    /// A message that needs `join` first.
    NotJoined,
    /// Too many joins from this address recently.
    TooManyJoins,
    /// Too many open connections from this address.
    TooManyConnections,
    /// The addressee is neither this browser's parent nor one of its children.
    NotYourPeer,
    /// The addressee cannot be reached right now.
    Unreachable,
    /// The server is shutting down or overloaded.
    Unavailable,
}

/// Why a text frame was not a valid [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Above [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is above the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// A field above its own limit.
    #[error("{0} is too long")]
    FieldTooLarge(&'static str),
    /// Not JSON or not a known message.
    #[error("{0}")]
    Bad(String),
}

impl DecodeError {
    /// The error code the browser is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge(_) | DecodeError::FieldTooLarge(_) => ErrorCode::TooLarge,
            DecodeError::Bad(_) => ErrorCode::BadMessage,
        }
    }
}

impl ClientMessage {
    /// Parses and checks one text frame. Never panics, whatever the input.
    pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(text.len()));
        }
        let msg: ClientMessage = serde_json::from_str(text).map_err(|e| {
            // serde_json's message names the field and position but never echoes input at length.
            DecodeError::Bad(truncate(&e.to_string(), 200))
        })?;
        msg.check_fields()?;
        Ok(msg)
    }

    fn check_fields(&self) -> Result<(), DecodeError> {
        match self {
            ClientMessage::Offer { sdp, .. } | ClientMessage::Answer { sdp, .. }
                if sdp.len() > MAX_SDP_BYTES =>
            {
                Err(DecodeError::FieldTooLarge("sdp"))
            }
            ClientMessage::Candidate { candidate, .. }
                if candidate.candidate.len() > MAX_CANDIDATE_BYTES
                    || candidate.sdp_mid.as_ref().is_some_and(|m| m.len() > 64) =>
            {
                Err(DecodeError::FieldTooLarge("candidate"))
            }
            _ => Ok(()),
        }
    }
}

impl ServerMessage {
    /// An error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// The JSON text of this message.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no foreign types.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"unavailable","message":"encode failed"}"#.to_owned()
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// Node ids as 16 hex digits in a JSON string.
pub mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};
    use treecast_tree::NodeId;

    /// Writes `id` as 16 hex digits.
    pub fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Reads 1 to 16 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom("node id: expected 1 to 16 hex digits"))
    }

    /// Parses 1 to 16 hex digits.
    pub fn parse(s: &str) -> Option<NodeId> {
        let ok = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| u64::from_str_radix(s, 16).ok().map(NodeId))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_strings() {
        let m = ClientMessage::ChildLost {
            child: NodeId(0xdead_beef_0000_0001),
        };
        let text = serde_json::to_string(&m).expect("serializes");
        assert_eq!(text, r#"{"type":"child_lost","child":"deadbeef00000001"}"#);
        assert_eq!(ClientMessage::decode(&text), Ok(m));
        assert!(ClientMessage::decode(r#"{"type":"child_lost","child":"xyz"}"#).is_err());
        assert!(
            ClientMessage::decode(r#"{"type":"child_lost","child":"11112222333344445"}"#).is_err()
        );
        assert!(ClientMessage::decode(r#"{"type":"child_lost","child":17}"#).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "{",
            "null",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"ping","nonce":-1}"#,
            r#"{"type":"leave","extra":1}"#,
            "\u{0}\u{ffff}",
        ] {
            let e = ClientMessage::decode(text).expect_err(text);
            assert_eq!(e.code(), ErrorCode::BadMessage, "{text}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let big = format!(
            r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
            "x".repeat(70_000)
        );
        assert_eq!(
            ClientMessage::decode(&big).map_err(|e| e.code()),
            Err(ErrorCode::TooLarge)
        );
        let sdp = format!(
            r#"{{"type":"offer","to":"1","sdp":"{}"}}"#,
            "v".repeat(MAX_SDP_BYTES + 1)
        );
        assert_eq!(
            ClientMessage::decode(&sdp),
            Err(DecodeError::FieldTooLarge("sdp"))
        );
    }
}
