//! When a node's own record goes out: a record is a state, so only the newest one pending
//! matters, and changes close together go out as one.

use std::time::Duration;

use tokio::time::Instant;

use treecast_tree::NodeRecord;

/// Least time between two publications of our record: changes within it go out together, as
/// one record (a record is a state, so only the newest matters). A join used to publish three
/// records (detached, attached, receiving) and a repair as many; every node verifies and merges
/// every record, so at 200 relays that was most of the overlay's work.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// The newest record not yet published, and when the next may go out.
#[derive(Debug)]
pub struct PublishPace {
    pending: Option<NodeRecord>,
    not_before: Instant,
}

impl PublishPace {
    /// A pace whose first publication may go out at `first`.
    pub fn new(first: Instant) -> Self {
        PublishPace {
            pending: None,
            not_before: first,
        }
    }

    /// Our newest record, replacing any still pending.
    pub fn offer(&mut self, record: NodeRecord) {
        self.pending = Some(record);
    }

    /// The record to publish at `now`, if one is pending and its time has come.
    pub fn due(&mut self, now: Instant) -> Option<NodeRecord> {
        if now < self.not_before {
            return None;
        }
        let record = self.pending.take()?;
        self.not_before = now + PUBLISH_EVERY;
        Some(record)
    }
}
