//! The state one node shares between its tasks: identity, the broadcast's tracks (fixed once
//! known), the child legs and the upstream counters. Read by the HTTP handlers and the status
//! endpoint; written by the upstream task (tracks, receiving) and the child legs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::child::ChildLink;
use crate::config::{NodeId, RoleName, StreamId};
use crate::fanout::Tracks;
use crate::peer::PeerFactory;
use crate::rtcp_tap::LinkCounters;
use crate::whip::WhipIngest;
use tokio::sync::watch;

/// A node's shared state.
#[derive(Debug)]
pub struct NodeState {
    /// This node.
    pub node_id: NodeId,
    /// The stream it carries.
    pub stream: StreamId,
    /// Broadcast, relay or view.
    pub role: RoleName,
    /// The WHEP URL of the parent; `None` at the root.
    pub parent: Option<String>,
    /// Children beyond this are refused with 503.
    pub max_children: usize,
    /// New children start with the cached GOP (see `Feed::with_fast_start`).
    pub fast_start: bool,
    /// Builds every peer connection of this node.
    pub factory: PeerFactory,
    /// WHIP ingest, at a root fed by a publisher.
    pub whip: Option<WhipIngest>,
    /// Counters of the upstream leg.
    pub upstream: Arc<LinkCounters>,
    /// Summed counters of children that have left, so totals survive their departure.
    pub departed: LinkCounters,
    departed_count: AtomicU64,
    /// `None` until the tracks are known; set once.
    tracks: watch::Sender<Option<Tracks>>,
    /// Lock: the map is touched only to add, remove and snapshot links, never across an
    /// `.await`; per-packet work goes through each link's atomics instead.
    children: Mutex<Children>,
    started: Instant,
    /// Milliseconds since `started` of the last media packet, plus one (0: never).
    last_media_ms: AtomicU64,
    /// What the tree driver says (nothing without one). Lock: replaced whole by the driver,
    /// cloned out by the HTTP handlers; never held across an `.await`.
    tree: Mutex<TreeInfo>,
    /// Record bytes in and out over the gossip overlay (updated every second by the driver).
    pub gossip_bytes: AtomicU64,
    /// All bytes in and out on the overlay's connections, every protocol (updated with
    /// `gossip_bytes`).
    pub overlay_bytes: AtomicU64,
    /// The overlay's counters as last read (updated with `gossip_bytes`).
    pub overlay_stats: Mutex<crate::gossip::Stats>,
    /// The overlay's first listen address with `/p2p/PEER-ID`, when the node runs one.
    overlay_addr: Option<String>,
}

/// The tree as this node's driver last saw it.
#[derive(Debug, Clone, Default)]
pub struct TreeInfo {
    /// This node's tree id, when it runs a tree agent.
    pub id: Option<String>,
    /// The tree parent's id.
    pub parent: Option<String>,
    /// The gossiped view, for `GET /api/streams/{stream}/tree`.
    pub snapshot: Option<Arc<treecast_tree::snapshot::TreeSnapshot>>,
}

#[derive(Debug, Default)]
struct Children {
    links: BTreeMap<String, Arc<ChildLink>>,
    /// Slots reserved by attaches still negotiating.
    pending: usize,
}

/// Why a child cannot attach right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Already feeding `max_children`.
    Full,
}

/// A reserved child slot; released on drop unless [`Reservation::commit`] turned it into a link.
#[derive(Debug)]
pub struct Reservation {
    node: Arc<NodeState>,
    live: bool,
}

impl NodeState {
    /// A node with no tracks and no children yet.
    pub fn new(
        node_id: NodeId,
        stream: StreamId,
        role: RoleName,
        parent: Option<String>,
        max_children: usize,
        factory: PeerFactory,
        whip: Option<WhipIngest>,
    ) -> Self {
        Self {
            whip,
            fast_start: false,
            node_id,
            stream,
            role,
            parent,
            max_children,
            factory,
            upstream: Arc::new(LinkCounters::default()),
            departed: LinkCounters::default(),
            departed_count: AtomicU64::new(0),
            tracks: watch::Sender::new(None),
            children: Mutex::new(Children::default()),
            started: Instant::now(),
            last_media_ms: AtomicU64::new(0),
            tree: Mutex::new(TreeInfo::default()),
            gossip_bytes: AtomicU64::new(0),
            overlay_bytes: AtomicU64::new(0),
            overlay_stats: Mutex::new(crate::gossip::Stats::default()),
            overlay_addr: None,
        }
    }

    /// Sets the overlay address (before the node is shared).
    pub fn with_overlay_addr(mut self, addr: Option<String>) -> Self {
        self.overlay_addr = addr;
        self
    }

    /// The overlay's address other nodes can bootstrap from.
    pub fn overlay_addr(&self) -> Option<String> {
        self.overlay_addr.clone()
    }

    /// What the tree driver last said.
    pub fn tree(&self) -> TreeInfo {
        lock(&self.tree).clone()
    }

    /// Replaces what the tree driver says.
    pub fn set_tree(&self, info: TreeInfo) {
        *lock(&self.tree) = info;
    }

    /// Enables fast start (before the node is shared).
    pub fn with_fast_start(mut self, on: bool) -> Self {
        self.fast_start = on;
        self
    }

    /// The broadcast's tracks, once known.
    pub fn tracks(&self) -> Option<Tracks> {
        self.tracks.borrow().clone()
    }

    /// Waits until the tracks are known.
    pub async fn wait_tracks(&self) -> Tracks {
        let mut rx = self.tracks.subscribe();
        loop {
            if let Some(t) = rx.borrow_and_update().clone() {
                return t;
            }
            // The sender lives in `self`, so this cannot fail while we borrow `self`.
            let _ = rx.changed().await;
        }
    }

    /// Fixes the tracks; a second call is ignored (returns false).
    pub fn set_tracks(&self, tracks: Tracks) -> bool {
        self.tracks.send_if_modified(|t| {
            if t.is_some() {
                return false;
            }
            *t = Some(tracks);
            true
        })
    }

    /// Notes that a media packet arrived now; returns now, as time since the node started (one
    /// clock read per packet serves every per-packet figure).
    pub fn media_arrived(&self) -> Duration {
        let now = self.started.elapsed();
        self.last_media_ms
            .store(now.as_millis() as u64 + 1, Ordering::Relaxed);
        now
    }

    /// How long since the last media packet; `None` before the first.
    pub fn silent_for(&self) -> Option<Duration> {
        let last = self.last_media_ms.load(Ordering::Relaxed);
        (last != 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(last - 1))
        })
    }

    /// Whether media arrived within the last second.
    pub fn receiving(&self) -> bool {
        let last = self.last_media_ms.load(Ordering::Relaxed);
        last != 0
            && self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(last - 1))
                < Duration::from_secs(1)
    }

    /// Reserves a child slot, or says why not.
    pub fn reserve_child(self: &Arc<Self>) -> Result<Reservation, Refusal> {
        let mut c = self.lock_children();
        if c.links.len() + c.pending >= self.max_children {
            return Err(Refusal::Full);
        }
        c.pending += 1;
        Ok(Reservation {
            node: self.clone(),
            live: true,
        })
    }

    /// Reserves a child slot whatever the limit: for a child the tree agent accepted (the
    /// agent is the authority on slots; during a make-before-break move the leaving child's
    /// leg may briefly overlap with its replacement's).
    pub fn reserve_child_unchecked(self: &Arc<Self>) -> Reservation {
        self.lock_children().pending += 1;
        Reservation {
            node: self.clone(),
            live: true,
        }
    }

    /// Removes a child link and closes it after `delay`, from a task of its own.
    pub fn close_child_later(self: &Arc<Self>, id: String, delay: Duration) {
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(link) = node.remove_child(&id) {
                link.close().await;
            }
        });
    }

    /// Removes a child link (it closed or was deleted); returns it if it was there.
    pub fn remove_child(&self, id: &str) -> Option<Arc<ChildLink>> {
        let link = self.lock_children().links.remove(id)?;
        self.departed.absorb(&link.counters);
        self.departed_count.fetch_add(1, Ordering::Relaxed);
        Some(link)
    }

    /// How many children have left.
    pub fn departed_count(&self) -> u64 {
        self.departed_count.load(Ordering::Relaxed)
    }

    /// A snapshot of the child links.
    pub fn children(&self) -> Vec<Arc<ChildLink>> {
        self.lock_children().links.values().cloned().collect()
    }

    fn lock_children(&self) -> std::sync::MutexGuard<'_, Children> {
        lock(&self.children)
    }
}

/// Locks a mutex of plain state, poisoned or not. A poisoned lock only means another task
/// panicked mid-update of a plain value; the value itself is still consistent (at worst
/// stale), so keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reservation {
    /// Turns the reserved slot into the live link `link`.
    pub fn commit(mut self, link: Arc<ChildLink>) {
        let mut c = self.node.lock_children();
        c.pending -= 1;
        c.links.insert(link.id.clone(), link);
        self.live = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.live {
            self.node.lock_children().pending -= 1;
        }
    }
}
