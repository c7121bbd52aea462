//! The `View`: one node's picture of the tree, merged from gossiped records.
//!
//! Merging keeps, for each node, the record with the highest `seq` (ties broken by the record's
//! total order), so merging the same set of records in any order gives the same view, and
//! merging a record twice changes nothing. Relations count only where both sides agree.
//! Indexes kept beside the records make placement and promotion O(log n).

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::id::{NodeId, StreamId, Time};
use crate::record::{
    DETACHED, MAX_CHILDREN, MAX_DEPTH, Node, NodeRecord, Platform, RecordError, Role,
};
use crate::store::{Keyed, Store};

/// How many of the nodes heard longest ago [`View::expire`] keeps an eye on between scans.
pub const EXPIRY_CANDIDATES: usize = 32;

/// Loss on the link from a parent, per mille, from which the child counts the link as poor
/// (see [`View::is_struggling`]). The shell measures it after NACK repair: what is lost for
/// good, which is what a viewer sees.
pub const POOR_LOSS_PERMILLE: u16 = 80;

/// One stream's tree as this node knows it.
#[derive(Debug, Clone)]
pub struct View {
    stream: StreamId,
    trusted_root: Option<NodeId>,
    nodes: Store<Entry>,
    /// Every node claiming to be a broadcaster (normally one).
    broadcasters: BTreeSet<NodeId>,
    /// Attached nodes with a free slot, best placement first.
    open: Lazy<OpenKey>,
    /// How many of `open` there are at each depth: the shallowest free slot in O(depth), so
    /// a placement limited in depth (a move, a repair) that cannot succeed reads no index.
    open_counts: Vec<u32>,
    /// Attached non-root nodes by (depth, capacity): promotion looks for the weakest high up.
    ranks: Lazy<RankKey>,
    /// How many of `ranks` there are at each depth with each capacity (0..=4): the weakest
    /// capacity at a depth in O(1), so promotion skips hopeless levels without a B-tree search.
    rank_counts: Vec<[u32; MAX_CHILDREN + 1]>,
    /// No node expires before this (a lower bound, exact after each expiry scan): refreshes
    /// cost no index update, and `expire` scans only when something may really be due.
    earliest_expiry: Option<Time>,
    /// The nodes due to expire first at the last expiry scan, earliest first, each with when
    /// it was due then (see [`View::expire`]).
    expiring: Vec<(Time, NodeId)>,
    /// Every node outside `expiring` (bar the scan's `keep`) expires at or after this.
    expiry_floor: Option<Time>,
    /// The `keep` and `ttl` of the last expiry scan.
    scanned: Option<(NodeId, Duration)>,
    /// How many records report a poor link from their parent: while none does, no node is
    /// struggling, and placement need not look at anyone's children.
    poor_links: usize,
}

/// Aligned to a cache line, so the fields a walk reads (the record's id, parent and children,
/// its first 64 bytes) are always one line, never split across two.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    node: Node,
    heard: Time,
}

impl Entry {
    /// When this record expires if nothing newer comes, for a view's `ttl`.
    fn expires(&self, ttl: Duration) -> Time {
        self.heard + self.node.lifetime(ttl)
    }
}

impl Keyed for Entry {
    fn key(&self) -> NodeId {
        self.node.id
    }
}

/// Placement order: shallow first, native before browser, most spare slots, most stable, id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OpenKey {
    pub depth: u16,
    pub platform: Platform,
    pub used: u8,
    pub instability: u8,
    pub id: NodeId,
}

/// Promotion order: shallow first, then weakest, then least stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RankKey {
    pub depth: u16,
    pub capacity: u8,
    pub stability: u8,
    pub id: NodeId,
}

/// What merging a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// A node we did not know.
    Inserted,
    /// A newer record that changed the node's place, capacity or role.
    Updated,
    /// A newer record that only refreshed liveness and statistics.
    Refreshed,
    /// The same or an older record: nothing changed.
    Stale,
}

impl Merge {
    /// What merging a valid record `new` does to a view holding `old` for its node.
    pub fn of(old: Option<&Node>, new: &Node) -> Merge {
        match old {
            None => Merge::Inserted,
            Some(old) if (old.seq, *old) >= (new.seq, *new) => Merge::Stale,
            Some(old) if same_place(old, new) => Merge::Refreshed,
            Some(_) => Merge::Updated,
        }
    }

    /// Whether the record was taken (it is the view's record of its node now).
    pub fn taken(self) -> bool {
        self != Merge::Stale
    }
}

/// Why a record was not merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The record belongs to another stream.
    #[error("record for another stream")]
    WrongStream,
    /// The record breaks a structural rule.
    #[error(transparent)]
    Invalid(#[from] RecordError),
    /// A broadcaster record from a node that is not this stream's root.
    #[error("broadcaster record from a node that is not the stream's root")]
    NotRoot,
}

/// A broken invariant, found by [`View::check_invariants`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A node lists more children than allowed.
    TooManyChildren(NodeId),
    /// Following agreed parents from this node loops.
    Cycle(NodeId),
    /// More than one broadcaster.
    SeveralRoots(Vec<NodeId>),
    /// The child names a parent that does not list it, or the reverse.
    Disagreement {
        /// The parent side.
        parent: NodeId,
        /// The child side.
        child: NodeId,
    },
    /// The depth a node reports differs from its distance to the root.
    WrongDepth {
        /// The node.
        node: NodeId,
        /// What it reports.
        claimed: u16,
        /// What the agreed relations give.
        actual: Option<u16>,
    },
}

impl View {
    /// An empty view of `stream`.
    pub fn new(stream: StreamId) -> Self {
        View {
            stream,
            trusted_root: None,
            nodes: Store::default(),
            broadcasters: BTreeSet::new(),
            open: Lazy::default(),
            open_counts: Vec::new(),
            ranks: Lazy::default(),
            rank_counts: Vec::new(),
            earliest_expiry: None,
            expiring: Vec::new(),
            expiry_floor: None,
            scanned: None,
            poor_links: 0,
        }
    }

    /// Pins the stream's root: broadcaster records from any other node are rejected.
    pub fn set_trusted_root(&mut self, root: NodeId) {
        self.trusted_root = Some(root);
        let impostors: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|e| e.node.role == Role::Broadcaster && e.node.id != root)
            .map(|e| e.node.id)
            .collect();
        for id in impostors {
            self.remove(id);
        }
    }

    /// The stream this view is of.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The root: the trusted one if pinned, else the broadcaster with the lowest id.
    pub fn root(&self) -> Option<NodeId> {
        match self.trusted_root {
            Some(r) => self.nodes.contains_key(&r).then_some(r),
            None => self.broadcasters.first().copied(),
        }
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No nodes known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's record.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id).map(|e| &e.node)
    }

    /// When a node's newest record arrived.
    pub fn heard(&self, id: NodeId) -> Option<Time> {
        self.nodes.get(&id).map(|e| e.heard)
    }

    /// All records, in no particular order (the same order for the same history).
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.values().map(|e| &e.node)
    }

    /// Merges a gossiped record heard at `now`.
    pub fn merge(&mut self, record: &NodeRecord, now: Time) -> Result<Merge, MergeError> {
        if record.stream != self.stream {
            return Err(MergeError::WrongStream);
        }
        self.merge_node(record.node, now)
    }

    /// Merges a record of this view's stream (the stream was already checked).
    pub fn merge_node(&mut self, node: Node, now: Time) -> Result<Merge, MergeError> {
        node.validate()?;
        if node.role == Role::Broadcaster && self.trusted_root.is_some_and(|r| r != node.id) {
            return Err(MergeError::NotRoot);
        }
        let Some(old) = self.nodes.get(&node.id).copied() else {
            self.insert(node, now);
            return Ok(Merge::Inserted);
        };
        let merge = Merge::of(Some(&old.node), &node);
        if merge == Merge::Stale {
            return Ok(merge);
        }
        let new = Entry {
            node,
            heard: now.max(old.heard),
        };
        self.reindex(&old, &new);
        self.nodes.insert(new);
        Ok(merge)
    }

    /// Sets what the view holds for `id` to `entry` (a record and when it was heard; `None`:
    /// nothing), whatever it held (no check, no ordering by `seq`), and returns what it held.
    ///
    /// For a shell that runs many agents over one shared view (see [`Agent::new_shared`]):
    /// what one agent knows differently (its own newest record, above all) goes in for the
    /// length of one of its calls, and a second `replace` with what the first returned puts
    /// back what everyone else knows. The indexes answer as if the view had been merged
    /// that way; only the order of [`View::nodes`] may change.
    ///
    /// [`Agent::new_shared`]: crate::Agent::new_shared
    pub fn replace(&mut self, id: NodeId, entry: Option<(Node, Time)>) -> Option<(Node, Time)> {
        let old = self.nodes.get(&id).copied();
        match entry {
            Some((node, heard)) if node.id == id => {
                let new = Entry { node, heard };
                match old {
                    Some(old) => {
                        self.reindex(&old, &new);
                        self.nodes.insert(new);
                    }
                    None => self.insert(node, heard),
                }
            }
            _ => {
                self.remove(id);
            }
        }
        old.map(|e| (e.node, e.heard))
    }

    /// Forgets a node (it crashed, left or expired). Returns its last record.
    pub fn remove(&mut self, id: NodeId) -> Option<Node> {
        let entry = self.nodes.remove(&id)?;
        self.unindex(&entry);
        Some(entry.node)
    }

    /// Forgets every node not heard from for its lifetime, except `keep` (this node itself):
    /// `ttl`, or longer for a node that declares a long refresh interval
    /// ([`Node::lifetime`]). A view is expired with one `ttl` throughout.
    ///
    /// Returns them in the order of a scan of the store. A full scan notes the
    /// `EXPIRY_CANDIDATES` nodes due first; until one due after them may be due, only those
    /// are looked at. Live nodes are heard every refresh, so the due ones are the silent
    /// (crashed or departed) ones, and under churn they fall due one after another: a scan of
    /// the whole view each time took 6% of the message-level simulator.
    pub fn expire(&mut self, now: Time, ttl: Duration, keep: NodeId) -> Vec<NodeId> {
        let due = |t: Time| now > t;
        if self.earliest_expiry.is_none_or(|t| !due(t)) {
            return Vec::new();
        }
        let scan = |v: &View| v.expiry_floor.is_some_and(due) || v.scanned != Some((keep, ttl));
        let gone: Vec<NodeId> = if scan(self) {
            self.nodes
                .values()
                .filter(|e| e.node.id != keep && due(e.expires(ttl)))
                .map(|e| e.node.id)
                .collect()
        } else {
            // Nobody else can be due: every other node expires at or after the floor, and
            // merging only ever moves an expiry later (or lowers the floor, see `index`).
            let mut due_slots: Vec<(usize, NodeId)> = self
                .expiring
                .iter()
                .filter_map(|&(_, id)| {
                    let slot = self.nodes.slot(&id)?;
                    (id != keep && due(self.nodes.at(slot).expires(ttl))).then_some((slot, id))
                })
                .collect();
            due_slots.sort_unstable();
            due_slots.into_iter().map(|(_, id)| id).collect()
        };
        for &id in &gone {
            self.remove(id);
        }
        if scan(self) {
            self.scan_expiring(keep, ttl);
        } else {
            let nodes = &self.nodes;
            self.expiring.retain_mut(|(t, id)| match nodes.get(id) {
                Some(e) => {
                    *t = e.expires(ttl);
                    true
                }
                None => false,
            });
        }
        self.earliest_expiry = self
            .expiring
            .iter()
            .map(|&(t, _)| t)
            .chain(self.expiry_floor)
            .min();
        gone
    }

    /// Notes the `EXPIRY_CANDIDATES` nodes (other than `keep`) due to expire first, and
    /// when the others expire at the earliest: one pass over the view.
    fn scan_expiring(&mut self, keep: NodeId, ttl: Duration) {
        let mut first: Vec<(Time, NodeId)> = Vec::with_capacity(EXPIRY_CANDIDATES + 1);
        let mut floor: Option<Time> = None;
        for e in self.nodes.values().filter(|e| e.node.id != keep) {
            let item = (e.expires(ttl), e.node.id);
            let earlier = |f: Option<Time>, t: Time| Some(f.map_or(t, |f| f.min(t)));
            if first.len() == EXPIRY_CANDIDATES && first.last().is_some_and(|&l| item >= l) {
                floor = earlier(floor, item.0);
                continue;
            }
            let pos = first.partition_point(|&x| x < item);
            first.insert(pos, item);
            if first.len() > EXPIRY_CANDIDATES
                && let Some((t, _)) = first.pop()
            {
                floor = earlier(floor, t);
            }
        }
        self.expiring = first;
        self.expiry_floor = floor;
        self.scanned = Some((keep, ttl));
    }

    /// The earliest time a node may expire (possibly early: a bound), for the `ttl` the view
    /// is expired with.
    pub fn next_expiry(&self) -> Option<Time> {
        self.earliest_expiry
    }

    /// The parent of `id`, if both sides agree on it.
    pub fn parent_of(&self, id: NodeId) -> Option<NodeId> {
        let p = self.get(id)?.parent?;
        self.get(p)?.children.contains(id).then_some(p)
    }

    /// The children of `id` that agree they are its children.
    pub fn children_of(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let listed = self.get(id).map(|n| n.children).unwrap_or_default();
        (0..listed.len()).filter_map(move |i| {
            let c = listed.as_slice()[i];
            (self.get(c)?.parent == Some(id)).then_some(c)
        })
    }

    /// Distance from the root over agreed relations; `None` if not connected to the root (or
    /// the chain loops or is deeper than [`MAX_DEPTH`]).
    pub fn depth_of(&self, id: NodeId) -> Option<u16> {
        self.depth_avoiding(id, &[])
    }

    /// The distance from the root over agreed relations, walking up from `id`, or `None` if the
    /// chain is broken, too deep, or passes through one of `forbidden` (including `id` itself):
    /// one walk answers both "is it attached?" and "is it outside these subtrees?".
    pub fn depth_avoiding(&self, id: NodeId, forbidden: &[NodeId]) -> Option<u16> {
        let root = self.root()?;
        let mut at = self.get(id)?;
        for steps in 0..=MAX_DEPTH {
            if forbidden.contains(&at.id) {
                return None;
            }
            if at.id == root {
                return Some(steps);
            }
            // One lookup a step: the parent's record, which must list this node.
            let parent = self.get(at.parent?)?;
            if !parent.children.contains(at.id) {
                return None;
            }
            at = parent;
        }
        None
    }

    /// Whether `id` fails its children: at least half of its agreed children (and at least one)
    /// report loss on the link from it that is [`POOR_LOSS_PERMILLE`] or more above the loss
    /// `id` reports itself (the loss its hop adds: under a lossy path every node below sees
    /// the loss of the hops above, and no parent there is to blame). Capacity is declared
    /// by the node itself; this is what its children measure, so a node that overstates its
    /// upload is found out by the records of the nodes it feeds.
    pub fn is_struggling(&self, id: NodeId) -> bool {
        if self.poor_links == 0 {
            return false;
        }
        let parent = self.get(id);
        let (mut total, mut poor) = (0, 0);
        for c in self.children_of(id).filter_map(|c| self.get(c)) {
            total += 1;
            if poor_link(c) && adds_poor_loss(c.link.loss_permille, parent) {
                poor += 1;
            }
        }
        poor > 0 && poor * 2 >= total
    }

    /// Whether `id` lies in the subtree rooted at `top` (including `top` itself), over agreed
    /// relations. A walk up from `id`, capped at [`MAX_DEPTH`].
    pub fn in_subtree(&self, id: NodeId, top: NodeId) -> bool {
        let Some(mut at) = self.get(id) else {
            return id == top;
        };
        for _ in 0..=MAX_DEPTH {
            if at.id == top {
                return true;
            }
            match at.parent.and_then(|p| self.get(p)) {
                Some(parent) if parent.children.contains(at.id) => at = parent,
                _ => return false,
            }
        }
        false
    }

    /// The nodes of the subtree under `top` (itself first), breadth-first over agreed relations,
    /// at most `limit` of them.
    pub fn subtree(&self, top: NodeId, limit: usize) -> Vec<NodeId> {
        let mut out = vec![top];
        let mut i = 0;
        while i < out.len() && out.len() < limit {
            let at = out[i];
            for c in self.children_of(at) {
                if out.len() < limit && !out.contains(&c) {
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }

    /// Attached nodes with a free slot, best placement first (claimed depth, then native before
    /// browser, more spare slots, more stable, lower id).
    pub(crate) fn open_slots(&self) -> impl Iterator<Item = &OpenKey> + '_ {
        self.open
            .read(|| {
                self.nodes
                    .values()
                    .filter_map(|e| open_key(&e.node))
                    .collect()
            })
            .iter()
    }

    /// The smallest depth at which some node claims a free slot: a cheap lower bound for
    /// [`crate::place`] (which also checks the claim), used to skip hopeless searches.
    pub fn shallowest_open_depth(&self) -> Option<u16> {
        self.open_counts
            .iter()
            .position(|&n| n > 0)
            .map(|d| d as u16)
    }

    /// The smallest capacity claimed by an attached node at `depth`: a cheap bound for
    /// [`crate::plan_promotion`], used to skip hopeless searches.
    pub fn weakest_capacity_at(&self, depth: u16) -> Option<u8> {
        let counts = self.rank_counts.get(usize::from(depth))?;
        counts.iter().position(|&n| n > 0).map(|c| c as u8)
    }

    /// Attached non-root nodes at `depth`, weakest first.
    pub(crate) fn ranked_at(&self, depth: u16) -> impl Iterator<Item = &RankKey> + '_ {
        let lo = RankKey {
            depth,
            capacity: 0,
            stability: 0,
            id: NodeId(0),
        };
        let hi = RankKey {
            depth: depth.saturating_add(1),
            capacity: 0,
            stability: 0,
            id: NodeId(0),
        };
        self.ranks
            .read(|| {
                self.nodes
                    .values()
                    .filter_map(|e| rank_key(&e.node))
                    .collect()
            })
            .range(lo..hi)
    }

    /// Checks the invariants that hold at every step: at most [`MAX_CHILDREN`] children per
    /// node, no cycle in agreed relations, one root per stream. O(n · depth): for a big view
    /// after a small change, [`View::check_nodes`] checks just the nodes it touched.
    pub fn check_invariants(&self) -> Result<(), Vec<Violation>> {
        self.check_invariants_with(&self.depths())
    }

    /// [`View::check_invariants`] given [`View::depths`].
    fn check_invariants_with(&self, depths: &[u16]) -> Result<(), Vec<Violation>> {
        // Nodes reached from the root over agreed relations cannot be on a cycle (each has one
        // agreed parent, and that chain ends at the root); only the others need a walk.
        let ids: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| depths[i] == DETACHED)
            .map(|i| self.nodes.at(i).node.id)
            .collect();
        let mut v = self.check_nodes(&ids).err().unwrap_or_default();
        for e in self.nodes.values() {
            if e.node.children.len() > MAX_CHILDREN {
                v.push(Violation::TooManyChildren(e.node.id));
            }
        }
        if v.is_empty() { Ok(()) } else { Err(v) }
    }

    /// The nodes not connected to the root over agreed relations (detached, repairing, or in
    /// a hostile cycle), found in one breadth-first pass.
    pub fn unattached(&self) -> Vec<NodeId> {
        let depths = self.depths();
        (0..self.nodes.len())
            .filter(|&i| depths[i] == DETACHED)
            .map(|i| self.nodes.at(i).node.id)
            .collect()
    }

    /// Every node's distance from the root over agreed relations, by store slot ([`DETACHED`]
    /// where the root is not reached): one breadth-first pass, one lookup a node.
    fn depths(&self) -> Vec<u16> {
        let mut depth = vec![DETACHED; self.nodes.len()];
        let Some(root) = self.root().and_then(|r| self.nodes.slot(&r)) else {
            return depth;
        };
        depth[root] = 0;
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(at) = queue.pop_front() {
            let n = &self.nodes.at(at).node;
            if depth[at] >= MAX_DEPTH {
                continue;
            }
            for c in n.children.iter() {
                let Some(slot) = self.nodes.slot(&c) else {
                    continue;
                };
                if depth[slot] == DETACHED && self.nodes.at(slot).node.parent == Some(n.id) {
                    depth[slot] = depth[at] + 1;
                    queue.push_back(slot);
                }
            }
        }
        depth
    }

    /// [`View::check_invariants`] restricted to `ids` (and the root count).
    pub fn check_nodes(&self, ids: &[NodeId]) -> Result<(), Vec<Violation>> {
        let mut v = Vec::new();
        if self.broadcasters.len() > 1 {
            v.push(Violation::SeveralRoots(
                self.broadcasters.iter().copied().collect(),
            ));
        }
        // Nodes whose chain was walked to its end without a loop: a later walk that reaches
        // one of them ends there too (a node on a cycle never reaches a node off it).
        let mut fine = [NodeId(0); 128];
        let mut fine_len = 0;
        let cap = self.nodes.len().min(usize::from(MAX_DEPTH) * 4);
        for &id in ids {
            let Some(n) = self.get(id) else { continue };
            if n.children.len() > MAX_CHILDREN {
                v.push(Violation::TooManyChildren(n.id));
            }
            // A cycle: walking agreed parents comes back to where it started (one lookup a
            // step: the parent's record, which must list the node below it).
            let mark = fine_len;
            if fine[..fine_len].contains(&n.id) {
                continue;
            }
            let mut at = n;
            let mut ended = false;
            for _ in 0..=cap {
                if fine_len < fine.len() {
                    fine[fine_len] = at.id;
                    fine_len += 1;
                }
                let Some(parent) = at.parent.and_then(|p| self.get(p)) else {
                    ended = true;
                    break;
                };
                if !parent.children.contains(at.id) || fine[..mark].contains(&parent.id) {
                    ended = true;
                    break;
                }
                if parent.id == n.id {
                    v.push(Violation::Cycle(n.id));
                    break;
                }
                at = parent;
            }
            if !ended {
                fine_len = mark; // a loop, or a chain too long to tell: vouch for nothing
            }
        }
        v.sort_by_key(|x| format!("{x:?}"));
        if v.is_empty() { Ok(()) } else { Err(v) }
    }

    /// Checks what holds once the tree is quiet (no join, repair or promotion under way): every
    /// relation is agreed by both sides and every reported depth is the real one.
    pub fn check_settled(&self) -> Result<(), Vec<Violation>> {
        let depths = self.depths();
        let mut v = self
            .check_invariants_with(&depths)
            .err()
            .unwrap_or_default();
        for (slot, e) in self.nodes.values().enumerate() {
            let n = &e.node;
            if let Some(p) = n.parent
                && !self.get(p).is_some_and(|pn| pn.children.contains(n.id))
            {
                v.push(Violation::Disagreement {
                    parent: p,
                    child: n.id,
                });
            }
            for c in n.children.iter() {
                if self.get(c).and_then(|cn| cn.parent) != Some(n.id) {
                    v.push(Violation::Disagreement {
                        parent: n.id,
                        child: c,
                    });
                }
            }
            let actual = (depths[slot] != DETACHED).then_some(depths[slot]);
            let claimed = n.depth;
            if actual != (claimed != DETACHED).then_some(claimed) {
                v.push(Violation::WrongDepth {
                    node: n.id,
                    claimed,
                    actual,
                });
            }
        }
        if v.is_empty() { Ok(()) } else { Err(v) }
    }

    fn insert(&mut self, node: Node, heard: Time) {
        let entry = Entry { node, heard };
        self.index(&entry);
        self.nodes.insert(entry);
    }

    fn index(&mut self, e: &Entry) {
        self.lower_expiry_bounds(e);
        self.poor_links += usize::from(poor_link(&e.node));
        if e.node.role == Role::Broadcaster {
            self.broadcasters.insert(e.node.id);
        }
        self.move_keys(None, Some(&e.node));
    }

    /// Moves a node's index entries from `old` to `new`, touching only the indexes whose key
    /// changed: most edits change one of them, and each touch is a B-tree remove and insert.
    fn reindex(&mut self, old: &Entry, new: &Entry) {
        // A record may declare a shorter refresh than its last: it may expire sooner.
        if new.node.refresh_tens < old.node.refresh_tens {
            self.lower_expiry_bounds(new);
        }
        self.poor_links =
            self.poor_links + usize::from(poor_link(&new.node)) - usize::from(poor_link(&old.node));
        if old.node.role != new.node.role {
            self.broadcasters.remove(&old.node.id);
            if new.node.role == Role::Broadcaster {
                self.broadcasters.insert(new.node.id);
            }
        }
        self.move_keys(Some(&old.node), Some(&new.node));
    }

    /// Keeps `earliest_expiry` and `expiry_floor` lower bounds with `e` in the view: its
    /// expiry for the ttl of the last scan (for none yet, a ttl of zero: a bound still).
    fn lower_expiry_bounds(&mut self, e: &Entry) {
        let at = e.expires(self.scanned.map_or(Duration::ZERO, |(_, ttl)| ttl));
        self.earliest_expiry = Some(self.earliest_expiry.map_or(at, |t| t.min(at)));
        self.expiry_floor = Some(self.expiry_floor.map_or(at, |t| t.min(at)));
    }

    fn unindex(&mut self, e: &Entry) {
        self.poor_links -= usize::from(poor_link(&e.node));
        if e.node.role == Role::Broadcaster {
            self.broadcasters.remove(&e.node.id);
        }
        self.move_keys(Some(&e.node), None);
    }

    /// Moves a node's placement and promotion keys from what `old` gives to what `new` gives
    /// (`None`: not in the view), in the counts and in the sorted indexes.
    fn move_keys(&mut self, old: Option<&Node>, new: Option<&Node>) {
        let len = self.nodes.len();
        let (o, n) = (old.and_then(open_key), new.and_then(open_key));
        if o != n {
            if let Some(k) = o
                && let Some(c) = self.open_counts.get_mut(usize::from(k.depth))
            {
                *c = c.saturating_sub(1);
            }
            if let Some(k) = n {
                let d = usize::from(k.depth);
                if self.open_counts.len() <= d {
                    self.open_counts.resize(d + 1, 0);
                }
                self.open_counts[d] += 1;
            }
            self.open.update(o, n, len);
        }
        let (o, n) = (old.and_then(rank_key), new.and_then(rank_key));
        if o != n {
            if let Some(k) = o
                && let Some(c) = self.rank_counts.get_mut(usize::from(k.depth))
            {
                let slot = &mut c[usize::from(k.capacity).min(MAX_CHILDREN)];
                *slot = slot.saturating_sub(1);
            }
            if let Some(k) = n {
                let d = usize::from(k.depth);
                if self.rank_counts.len() <= d {
                    self.rank_counts.resize(d + 1, [0; MAX_CHILDREN + 1]);
                }
                self.rank_counts[d][usize::from(k.capacity).min(MAX_CHILDREN)] += 1;
            }
            self.ranks.update(o, n, len);
        }
    }
}

/// A sorted index that is kept up to date while it is read, and dropped (to be rebuilt from
/// the records at the next read) when many updates arrive unread.
///
/// A node's view takes every record of the stream, but places and promotes only now and then:
/// at a few thousand nodes, a few hundred records with a changed key arrive between two
/// reads, and moving each key in a cold B-tree costs more than sorting the view once. At a
/// million nodes (the simulator's fast mode places a node at every join) the index is read
/// between any two updates and is never dropped. Reads take `&self` (placement and promotion
/// are pure functions over a `&View`), hence the `OnceLock`; the counter is an atomic only so
/// that a `View` stays `Sync`, and costs a plain load or store.
#[derive(Debug)]
struct Lazy<K> {
    set: OnceLock<BTreeSet<K>>,
    /// Updates since the last read.
    unread: AtomicU32,
}

impl<K: Ord + Copy> Lazy<K> {
    /// The index, built by `build` if it was dropped.
    fn read(&self, build: impl FnOnce() -> BTreeSet<K>) -> &BTreeSet<K> {
        self.unread.store(0, Ordering::Relaxed);
        self.set.get_or_init(build)
    }

    /// Moves one node's key from `old` to `new` (`None`: absent) in a view of `len` nodes.
    fn update(&mut self, old: Option<K>, new: Option<K>, len: usize) {
        let unread = self.unread.get_mut();
        *unread = unread.saturating_add(1);
        // Rebuilding costs about one sort of the view; an update in a cold B-tree costs about
        // as much as sorting a dozen records (measured on the simulator, see
        // topology-sim/README.md): past that many unread updates, dropping is cheaper.
        if *unread as usize > len / 12 + 16 {
            drop(self.set.take());
            return;
        }
        let Some(set) = self.set.get_mut() else {
            return;
        };
        if let Some(k) = old {
            set.remove(&k);
        }
        if let Some(k) = new {
            set.insert(k);
        }
    }
}

impl<K> Default for Lazy<K> {
    fn default() -> Self {
        Lazy {
            set: OnceLock::new(),
            unread: AtomicU32::new(0),
        }
    }
}

impl<K: Clone> Clone for Lazy<K> {
    fn clone(&self) -> Self {
        Lazy {
            set: self.set.clone(),
            unread: AtomicU32::new(self.unread.load(Ordering::Relaxed)),
        }
    }
}

/// Whether two records of one node differ only in liveness and statistics.
fn same_place(a: &Node, b: &Node) -> bool {
    a.role == b.role
        && a.parent == b.parent
        && a.children == b.children
        && a.depth == b.depth
        && a.capacity == b.capacity
        && a.reach == b.reach
        && a.platform == b.platform
        && stability(a.uptime_s) == stability(b.uptime_s)
}

/// Uptime in coarse buckets (0 under 10 s, then one per doubling), so a ranking does not change
/// with every heartbeat.
pub(crate) fn stability(uptime_s: u32) -> u8 {
    if uptime_s < 10 {
        0
    } else {
        (32 - (uptime_s / 10).leading_zeros()) as u8
    }
}

/// Whether `n` reports a poor link from its parent (see [`View::is_struggling`]).
fn poor_link(n: &Node) -> bool {
    n.receiving && n.link.loss_permille >= POOR_LOSS_PERMILLE
}

/// Whether a link from `parent` with `loss_permille` is poor by the loss the parent's hop adds:
/// at least [`POOR_LOSS_PERMILLE`] beyond what the parent reports receiving with itself (that
/// loss is not its fault, and leaving it would not help). The agent judges its own parent
/// and [`View::is_struggling`] judges others by this one rule.
pub(crate) fn adds_poor_loss(loss_permille: u16, parent: Option<&Node>) -> bool {
    let upstream = parent
        .filter(|p| p.receiving)
        .map_or(0, |p| p.link.loss_permille);
    loss_permille.saturating_sub(upstream) >= POOR_LOSS_PERMILLE
}

fn attached(n: &Node) -> bool {
    n.role == Role::Broadcaster || (n.parent.is_some() && n.depth != DETACHED)
}

fn open_key(n: &Node) -> Option<OpenKey> {
    (attached(n) && n.spare() > 0).then(|| OpenKey {
        depth: n.depth,
        platform: n.platform,
        used: (MAX_CHILDREN - n.spare()) as u8,
        instability: u8::MAX - stability(n.uptime_s),
        id: n.id,
    })
}

fn rank_key(n: &Node) -> Option<RankKey> {
    (attached(n) && n.role != Role::Broadcaster).then(|| RankKey {
        depth: n.depth,
        capacity: n.capacity,
        stability: stability(n.uptime_s),
        id: n.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream() -> StreamId {
        StreamId::new("s").expect("a valid name")
    }

    /// What the indexes answer, read back in full.
    #[derive(Debug, PartialEq)]
    struct Answers {
        open: Vec<OpenKey>,
        ranks: Vec<Vec<RankKey>>,
        shallowest_open: Option<u16>,
        weakest: Vec<Option<u8>>,
    }

    fn indexes(v: &View) -> Answers {
        let depths = 0..=MAX_DEPTH;
        Answers {
            open: v.open_slots().copied().collect(),
            ranks: depths
                .clone()
                .map(|d| v.ranked_at(d).copied().collect())
                .collect(),
            shallowest_open: v.shallowest_open_depth(),
            weakest: depths.map(|d| v.weakest_capacity_at(d)).collect(),
        }
    }

    proptest! {
        /// The indexes answer the same whether they were kept up to date, dropped and rebuilt,
        /// or built at once from the final records: reading at random moments (or never)
        /// between many updates changes nothing.
        #[test]
        fn lazy_indexes_answer_as_if_built_from_scratch(
            recs in proptest::collection::vec(
                (1u64..300, 0u8..=4, 0u16..6, 0u32..2000, any::<bool>()), 1..600),
            reads in proptest::collection::vec(0u8..40, 600),
        ) {
            let mut v = View::new(stream());
            let _ = v.merge_node(Node::new(NodeId(0), Role::Broadcaster, 4), Time::ZERO);
            for (i, &(id, cap, depth, uptime, remove)) in recs.iter().enumerate() {
                if remove {
                    v.remove(NodeId(id));
                } else {
                    let mut n = Node::new(NodeId(id), Role::Relay, cap);
                    n.seq = i as u64 + 1;
                    n.uptime_s = uptime;
                    if depth > 0 {
                        n.parent = Some(NodeId(0));
                        n.depth = depth;
                        if cap > 1 {
                            n.children.insert(NodeId(id + 1000));
                        }
                    }
                    prop_assert!(v.merge_node(n, Time::ZERO).is_ok());
                }
                if reads[i] == 0 {
                    let _ = indexes(&v);
                }
            }
            let mut fresh = View::new(stream());
            for n in v.nodes() {
                let _ = fresh.merge_node(*n, Time::ZERO);
            }
            prop_assert_eq!(indexes(&v), indexes(&fresh));
        }

        /// `expire` forgets exactly the nodes a scan of the whole view finds due, in the
        /// order of that scan, whether it scans or looks only at the first it noted, with
        /// records declaring refresh intervals that grow and shrink.
        #[test]
        fn expiry_finds_what_a_full_scan_finds(
            steps in proptest::collection::vec(
                (0u64..120, 0u64..8, any::<bool>(), prop_oneof![Just(0u8), 1u8..12]),
                1..400,
            ),
        ) {
            let ttl = Duration::from_secs(90);
            let keep = NodeId(3);
            let mut v = View::new(stream());
            let mut now = Time::ZERO;
            for (i, &(id, advance, expire, declared)) in steps.iter().enumerate() {
                now = now + Duration::from_secs(advance);
                if expire {
                    let want: Vec<NodeId> = v
                        .nodes
                        .values()
                        .filter(|e| e.node.id != keep && now.since(e.heard) > e.node.lifetime(ttl))
                        .map(|e| e.node.id)
                        .collect();
                    prop_assert_eq!(v.expire(now, ttl, keep), want);
                    let first = v
                        .nodes
                        .values()
                        .filter(|e| e.node.id != keep)
                        .map(|e| e.heard + e.node.lifetime(ttl))
                        .min();
                    // A bound: nobody expires before it.
                    if let Some(t) = first {
                        prop_assert!(v.next_expiry().is_some_and(|n| n <= t));
                    }
                } else {
                    let mut n = Node::new(NodeId(id), Role::Relay, 2);
                    n.seq = i as u64 + 1;
                    n.refresh_tens = declared;
                    prop_assert!(v.merge_node(n, now).is_ok());
                }
            }
        }
    }
}
