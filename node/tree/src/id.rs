//! Identifiers and time: the newtypes every other module speaks in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's identity in the tree.
///
/// The shell derives it from the node's libp2p `PeerId` (a hash of it), so a gossip record can be
/// checked against the peer that signed it. 64 bits keep the view small at a million nodes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{:016x}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s.trim_start_matches('n'), 16).map(NodeId)
    }
}

/// The name of a broadcast: 1 to 64 characters from `[A-Za-z0-9._-]`.
///
/// Shared, not copied: every record carries its stream, and a record is cloned for every node
/// it reaches (one reference count instead of one allocation).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(Arc<str>);

/// The longest stream name accepted, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 64;

/// A stream name that is empty, too long or has characters outside `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
pub struct InvalidStreamId(pub String);

impl StreamId {
    /// Validates and wraps a stream name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidStreamId> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_STREAM_ID_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(StreamId(name.into()))
        } else {
            Err(InvalidStreamId(name))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StreamId::new(s)
    }
}

impl From<StreamId> for String {
    fn from(s: StreamId) -> String {
        s.0.to_string()
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream:{}", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time, in microseconds since an epoch the shell chooses (usually its start).
///
/// The core never reads a clock: every input carries the time, so the simulator can run the
/// same code in virtual time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1000)
    }

    /// `s` seconds after the epoch.
    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_validated() {
        assert!(StreamId::new("demo").is_ok());
        assert!(StreamId::new("a.b_c-9").is_ok());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("has space").is_err());
        assert!(StreamId::new("x".repeat(65)).is_err());
        assert!(StreamId::new("x".repeat(64)).is_ok());
        assert!(serde_json::from_str::<StreamId>("\"bad/name\"").is_err());
    }

    #[test]
    fn node_ids_print_and_parse() {
        let id = NodeId(0xabc);
        assert_eq!(format!("{id:?}"), "n0000000000000abc");
        assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn time_arithmetic_saturates() {
        let t = Time::from_millis(5);
        assert_eq!(t + Duration::from_millis(1), Time::from_millis(6));
        assert_eq!(Time::ZERO.since(t), Duration::ZERO);
        assert_eq!(t.since(Time::ZERO), Duration::from_millis(5));
    }
}
