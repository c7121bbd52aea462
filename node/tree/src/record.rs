//! Node records: what each node says about itself in gossip.
//!
//! A record is a claim by its author. Relations count only where both sides agree (the child
//! names the parent and the parent lists the child); see [`crate::View`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{NodeId, StreamId};

/// The most children any node feeds. The broadcaster uploads at most this many copies.
pub const MAX_CHILDREN: usize = 4;

/// The depth a node reports while it has no parent (it is not connected to the root).
pub const DETACHED: u16 = u16::MAX;

/// The deepest a tree may grow; graph walks stop here, so hostile or cyclic gossip cannot
/// make them loop.
pub const MAX_DEPTH: u16 = 64;

/// How many of its declared refresh intervals ([`Node::refresh_tens`]) a record is kept without
/// news of its author.
pub const TTL_REFRESHES: u32 = 3;

/// What a node does for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The root: ingests the media. Exactly one per stream.
    Broadcaster,
    /// Receives from one parent and forwards to children.
    Relay,
    /// Receives and may forward too, but joined to watch.
    Viewer,
}

/// Where a node runs. Browsers re-encode what they relay, so placement prefers native parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A `treecast` process.
    Native,
    /// A browser tab, whose record the signal server publishes on its behalf.
    Browser,
}

/// How other nodes can reach this one with a media connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reachability {
    /// A public address: anyone can connect.
    Public,
    /// Behind a NAT that hole punching (STUN) gets through.
    Nat,
    /// Behind a symmetric NAT or firewall: needs TURN, so it is only ever a leaf.
    RelayOnly,
}

/// The child list of a record: at most [`MAX_CHILDREN`] distinct ids, kept sorted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C)]
pub struct Children {
    ids: [NodeId; MAX_CHILDREN],
    len: u8,
}

impl Children {
    /// No children.
    pub const fn new() -> Self {
        Children {
            len: 0,
            ids: [NodeId(0); MAX_CHILDREN],
        }
    }

    /// Builds a list from ids; `None` if there are more than [`MAX_CHILDREN`] or duplicates.
    pub fn from_ids(ids: impl IntoIterator<Item = NodeId>) -> Option<Self> {
        let mut c = Children::new();
        for id in ids {
            if !c.insert(id) {
                return None;
            }
        }
        Some(c)
    }

    /// The ids, sorted.
    pub fn as_slice(&self) -> &[NodeId] {
        &self.ids[..usize::from(self.len)]
    }

    /// Iterates the ids in order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.as_slice().iter().copied()
    }

    /// How many children.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// No children at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is listed. A linear scan: at most four ids, and every step of a walk up
    /// the tree asks this once.
    pub fn contains(&self, id: NodeId) -> bool {
        self.as_slice().contains(&id)
    }

    /// Adds `id`; false if it is already there or the list is full.
    pub fn insert(&mut self, id: NodeId) -> bool {
        let len = self.len();
        match self.as_slice().binary_search(&id) {
            Ok(_) => false,
            Err(_) if len == MAX_CHILDREN => false,
            Err(pos) => {
                self.ids.copy_within(pos..len, pos + 1);
                self.ids[pos] = id;
                self.len += 1;
                true
            }
        }
    }

    /// Removes `id`; false if it was not there.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let len = self.len();
        match self.as_slice().binary_search(&id) {
            Ok(pos) => {
                self.ids.copy_within(pos + 1..len, pos);
                self.len -= 1;
                self.ids[len - 1] = NodeId(0);
                true
            }
            Err(_) => false,
        }
    }
}

impl IntoIterator for Children {
    type Item = NodeId;
    type IntoIter = std::iter::Take<std::array::IntoIter<NodeId, MAX_CHILDREN>>;
    fn into_iter(self) -> Self::IntoIter {
        self.ids.into_iter().take(usize::from(self.len))
    }
}

impl fmt::Debug for Children {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Children {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Children {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ids = Vec::<NodeId>::deserialize(d)?;
        Children::from_ids(ids)
            .ok_or_else(|| serde::de::Error::custom("more than 4 children or duplicates"))
    }
}

/// What a node measures on the link from its parent, for the tree view and for promotion.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LinkStats {
    /// Media bitrate received, kbit/s.
    pub kbps: u32,
    /// Packets lost before repair, per thousand.
    pub loss_permille: u16,
    /// Round-trip time to the parent, ms.
    pub rtt_ms: u16,
}

/// Everything a node says about itself, except the stream (a [`crate::View`] holds one stream).
///
/// Laid out in declaration order (`repr(C)`) so that what a walk up the tree reads (id, parent,
/// children) shares one 64-byte cache line: at a million nodes, walks are bound by memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(C)]
pub struct Node {
    /// Who this is.
    pub id: NodeId,
    /// The node it receives from; `None` at the root and while detached.
    pub parent: Option<NodeId>,
    /// The nodes it forwards to.
    pub children: Children,
    /// Version of this record: a newer record replaces an older one. The shell starts it from
    /// wall-clock milliseconds so a restarted node's records are newer than its old ones.
    pub seq: u64,
    /// What the node does.
    pub role: Role,
    /// Native process or browser tab.
    pub platform: Platform,
    /// How it can be reached.
    pub reach: Reachability,
    /// Hops from the root as the node believes it: 0 at the root, [`DETACHED`] without parent.
    pub depth: u16,
    /// How many children it can feed (0..=4), from measured or declared upload.
    pub capacity: u8,
    /// The longest the author goes without republishing this record unchanged, in tens of
    /// seconds (0: not said). Receivers keep the record for [`TTL_REFRESHES`] such intervals
    /// at least, so an author that refreshes rarely (a large swarm, see
    /// `AgentConfig::refresh_per_node`) is not forgotten by receivers that would refresh more
    /// often. Counted up to [`crate::MAX_REFRESH`]. One byte: it fits the record's padding.
    pub refresh_tens: u8,
    /// Seconds since the node joined the stream: the stability it offers.
    pub uptime_s: u32,
    /// Protocol version of the author.
    pub version: u16,
    /// Whether media is arriving right now.
    pub receiving: bool,
    /// The node that publishes this record on this node's behalf (a signal server for browsers).
    pub via: Option<NodeId>,
    /// The link from the parent.
    pub link: LinkStats,
}

impl Node {
    /// A fresh, detached record with no children.
    pub fn new(id: NodeId, role: Role, capacity: u8) -> Self {
        Node {
            id,
            seq: 0,
            role,
            platform: Platform::Native,
            reach: Reachability::Public,
            parent: None,
            children: Children::new(),
            depth: if role == Role::Broadcaster {
                0
            } else {
                DETACHED
            },
            capacity: capacity.min(MAX_CHILDREN as u8),
            uptime_s: 0,
            version: crate::PROTOCOL_VERSION,
            refresh_tens: 0,
            receiving: false,
            via: None,
            link: LinkStats::default(),
        }
    }

    /// How long a receiver keeps this record without news: `ttl`, or [`TTL_REFRESHES`] of the
    /// author's declared refresh intervals if that is longer (counted up to
    /// [`crate::MAX_REFRESH`], so a hostile record cannot make itself kept for days).
    pub fn lifetime(&self, ttl: Duration) -> Duration {
        let declared =
            Duration::from_secs(10 * u64::from(self.refresh_tens)).min(crate::MAX_REFRESH);
        ttl.max(declared * TTL_REFRESHES)
    }

    /// Child slots this node can offer at all (relay-only nodes are leaves).
    pub fn slots(&self) -> usize {
        if self.reach == Reachability::RelayOnly {
            0
        } else {
            usize::from(self.capacity).min(MAX_CHILDREN)
        }
    }

    /// Free child slots according to this record.
    pub fn spare(&self) -> usize {
        self.slots().saturating_sub(self.children.len())
    }

    /// Checks the rules every record must follow; gossip that breaks them is rejected.
    pub fn validate(&self) -> Result<(), RecordError> {
        if usize::from(self.capacity) > MAX_CHILDREN {
            return Err(RecordError::Capacity(self.capacity));
        }
        if self.parent == Some(self.id) {
            return Err(RecordError::OwnParent);
        }
        if self.children.contains(self.id) {
            return Err(RecordError::OwnChild);
        }
        if self.parent.is_some_and(|p| self.children.contains(p)) {
            return Err(RecordError::ParentIsChild);
        }
        match (self.role, self.parent) {
            (Role::Broadcaster, Some(_)) => return Err(RecordError::RootWithParent),
            (Role::Broadcaster, None) if self.depth != 0 => return Err(RecordError::Depth),
            (_, None) if self.role != Role::Broadcaster && self.depth != DETACHED => {
                return Err(RecordError::Depth);
            }
            (_, Some(_)) if self.depth == 0 || self.depth > MAX_DEPTH => {
                return Err(RecordError::Depth);
            }
            _ => {}
        }
        if self.via == Some(self.id) {
            return Err(RecordError::OwnProxy);
        }
        Ok(())
    }
}

/// A record with the stream it belongs to: the unit that travels in gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The stream this node takes part in.
    pub stream: StreamId,
    /// What the node says about itself.
    pub node: Node,
}

/// A record that breaks a structural rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Capacity above [`MAX_CHILDREN`].
    #[error("capacity {0} is above 4")]
    Capacity(u8),
    /// The node names itself as parent.
    #[error("node is its own parent")]
    OwnParent,
    /// The node lists itself as child.
    #[error("node is its own child")]
    OwnChild,
    /// The parent is also listed as a child.
    #[error("parent is also listed as a child")]
    ParentIsChild,
    /// A broadcaster with a parent.
    #[error("a broadcaster has no parent")]
    RootWithParent,
    /// Depth inconsistent with role and parent.
    #[error("depth does not fit role and parent")]
    Depth,
    /// The node publishes on its own behalf through itself.
    #[error("node names itself as proxy")]
    OwnProxy,
}

/// Child slots a node can offer given its upload and the stream's bitrate.
///
/// Keeps a fifth of the upload in reserve for retransmissions and control traffic, and never
/// offers more than [`MAX_CHILDREN`].
pub fn capacity_for(upload_kbps: u32, stream_kbps: u32) -> u8 {
    if stream_kbps == 0 {
        return MAX_CHILDREN as u8;
    }
    let usable = u64::from(upload_kbps) * 4 / 5;
    let slots = usable / u64::from(stream_kbps);
    slots.min(MAX_CHILDREN as u64) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_stay_sorted_unique_and_bounded() {
        let mut c = Children::new();
        assert!(c.insert(NodeId(3)));
        assert!(c.insert(NodeId(1)));
        assert!(!c.insert(NodeId(3)));
        assert!(c.insert(NodeId(2)));
        assert!(c.insert(NodeId(9)));
        assert!(!c.insert(NodeId(5)), "a fifth child is refused");
        assert_eq!(c.as_slice(), &[NodeId(1), NodeId(2), NodeId(3), NodeId(9)]);
        assert!(c.remove(NodeId(2)));
        assert!(!c.remove(NodeId(2)));
        assert_eq!(c.as_slice(), &[NodeId(1), NodeId(3), NodeId(9)]);
        assert_eq!(Children::from_ids([NodeId(1), NodeId(1)]), None);
    }

    #[test]
    fn validation_catches_broken_records() {
        let mut n = Node::new(NodeId(1), Role::Relay, 2);
        assert_eq!(n.validate(), Ok(()));
        n.parent = Some(NodeId(1));
        assert_eq!(n.validate(), Err(RecordError::OwnParent));
        n.parent = Some(NodeId(2));
        n.depth = 1;
        assert_eq!(n.validate(), Ok(()));
        n.children.insert(NodeId(2));
        assert_eq!(n.validate(), Err(RecordError::ParentIsChild));
        let mut root = Node::new(NodeId(7), Role::Broadcaster, 4);
        assert_eq!(root.validate(), Ok(()));
        root.parent = Some(NodeId(1));
        assert_eq!(root.validate(), Err(RecordError::RootWithParent));
        let mut detached = Node::new(NodeId(8), Role::Viewer, 0);
        detached.depth = 3;
        assert_eq!(detached.validate(), Err(RecordError::Depth));
    }

    #[test]
    fn capacity_follows_upload_with_headroom() {
        assert_eq!(capacity_for(10_000, 2_000), 4);
        assert_eq!(capacity_for(5_000, 2_000), 2);
        assert_eq!(capacity_for(2_000, 2_000), 0);
        assert_eq!(capacity_for(0, 2_000), 0);
        assert_eq!(capacity_for(1, 0), 4);
    }

    #[test]
    fn relay_only_nodes_are_leaves() {
        let mut n = Node::new(NodeId(1), Role::Relay, 4);
        n.reach = Reachability::RelayOnly;
        assert_eq!(n.slots(), 0);
    }
}
