//! What the agents of the message-level mode know: one view for all of them, plus what each
//! knows differently.
//!
//! Every agent hears every gossip round at the same time, so all agents hold the same records
//! but for three things, kept here beside the one shared view (the *gossip view*):
//! - its own newest record, which an agent knows before the round that carries it;
//! - a newcomer's sync: the newest record of every live node at its arrival, some of which
//!   gossip has yet to deliver (or, for a node gone meanwhile, will deliver as news);
//! - when it heard what its sync gave it (at its arrival), which decides when it forgets a
//!   node that falls silent before saying anything new.
//!
//! [`Knowledge::lend`] shows an agent the gossip view with its differences on top, for the
//! length of one of its calls ([`View::replace`], undone after). Each record is merged once,
//! where every agent used to merge it into a copy of its own: 2,000 agents made over a
//! billion merges an hour. `node/tree/tests/shared.rs` checks that agents over a shared view
//! decide exactly as agents with views of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use treecast_tree::{Children, Merge, Node, NodeId, NodeRecord, Time, View};

/// The gossip view and what each agent knows differently (see the module docs).
#[derive(Debug)]
pub(crate) struct Knowledge {
    /// The records every agent has heard.
    gossip: View,
    /// Each agent's newest published record, which it sees in place of the gossip view's.
    own: BTreeMap<NodeId, Node>,
    /// What newcomers know differently from the gossip view, by agent and node: records of
    /// their sync that gossip has yet to deliver (`None`: a node gone before the agent
    /// arrived, whose last records are still travelling). Dropped once gossip caught up.
    differ: BTreeMap<NodeId, BTreeMap<NodeId, Option<(Node, Time)>>>,
    /// Each node's arrival and (once gone) departure, numbered in the order they happened,
    /// as long as the gossip view holds it: who was alive when whom arrived.
    life: BTreeMap<NodeId, (u64, Option<u64>)>,
    /// Arrivals and departures so far.
    lives: u64,
    /// Each agent's arrival, numbered as in `life`, and when it was (it heard its sync then).
    arrived: BTreeMap<NodeId, (u64, Time)>,
    /// When the gossip view last took a record of each node.
    last_heard: BTreeMap<NodeId, Time>,
    /// Expiries an agent notices later than the gossip view: after this time, this node.
    late: BTreeMap<NodeId, Vec<(Time, NodeId)>>,
    /// Relations as the gossip view's records claim them: the nodes naming the key as their
    /// parent, and the nodes listing the key among their children.
    claimed_by: Relations,
    listed_by: Relations,
}

impl Knowledge {
    /// Nothing known yet; `view` is the empty view of the stream.
    pub fn new(view: View) -> Self {
        Knowledge {
            gossip: view,
            own: BTreeMap::new(),
            differ: BTreeMap::new(),
            life: BTreeMap::new(),
            lives: 0,
            arrived: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            late: BTreeMap::new(),
            claimed_by: Relations::default(),
            listed_by: Relations::default(),
        }
    }

    /// Agent `id` arrives at `now` and syncs: it gets `truth` (the newest record of every
    /// live node), which differs from the gossip view only for the nodes whose records are
    /// still `travelling`.
    pub fn arrive(
        &mut self,
        id: NodeId,
        now: Time,
        truth: &View,
        travelling: impl IntoIterator<Item = NodeId>,
    ) {
        self.lives += 1;
        self.life.insert(id, (self.lives, None));
        self.arrived.insert(id, (self.lives, now));
        let mut differ = BTreeMap::new();
        for x in travelling {
            let (known, heard) = (truth.get(x), self.gossip.get(x));
            if x != id && known != heard {
                differ.insert(x, known.map(|n| (*n, now)));
            }
        }
        if !differ.is_empty() {
            self.differ.insert(id, differ);
        }
    }

    /// Agent `id` is gone (its records stay in the gossip view until they expire).
    pub fn depart(&mut self, id: NodeId) {
        self.own.remove(&id);
        self.differ.remove(&id);
        self.arrived.remove(&id);
        self.late.remove(&id);
        self.lives += 1;
        if let Some(life) = self.life.get_mut(&id) {
            life.1 = Some(self.lives);
        }
    }

    /// Agent `id` published `node`: from now on it sees that as its own record.
    pub fn published(&mut self, id: NodeId, node: Node) {
        self.own.insert(id, node);
    }

    /// Merges a delivered record into the gossip view (`None`: rejected, as every agent
    /// would reject it).
    pub fn merge(&mut self, rec: &NodeRecord, now: Time) -> Option<Merge> {
        let id = rec.node.id;
        let old = self.gossip.get(id).copied();
        let merge = self.gossip.merge(rec, now).ok()?;
        if merge.taken() {
            self.last_heard.insert(id, now);
        }
        if matches!(merge, Merge::Inserted | Merge::Updated) {
            self.claimed_by
                .replace(id, old.and_then(|n| n.parent), rec.node.parent);
            let before = old.map(|n| n.children).unwrap_or_default();
            self.listed_by.replace_all(id, before, rec.node.children);
        }
        Some(merge)
    }

    /// The nodes whose records name `id` as their parent or list it as a child.
    pub fn related(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.claimed_by.of(id).chain(self.listed_by.of(id))
    }

    /// The agents a record of `id` concerns by what they know differently from the gossip
    /// view (see [`Knowledge::related`]): those whose record of their parent (`parent_of`:
    /// each agent's) names `id` as its parent or child, and those whose record of `id`
    /// differs (the merge comes out differently for them).
    pub fn concerned_differently<'a>(
        &'a self,
        id: NodeId,
        parent_of: impl Fn(NodeId) -> Option<NodeId> + 'a,
    ) -> impl Iterator<Item = NodeId> + 'a {
        self.differ.iter().filter_map(move |(&a, differ)| {
            let near = parent_of(a).and_then(|p| differ.get(&p)).is_some_and(|p| {
                p.is_some_and(|(p, _)| p.parent == Some(id) || p.children.contains(id))
            });
            (near || differ.contains_key(&id)).then_some(a)
        })
    }

    /// What merging `node` (just merged into the gossip view with outcome `merge`) does to
    /// agent `a`'s view; drops `a`'s difference about the node once gossip caught up.
    pub fn merge_for(&mut self, a: NodeId, node: &Node, merge: Merge, now: Time) -> Merge {
        let Some(differ) = self.differ.get_mut(&a) else {
            return merge;
        };
        let Some(&mine) = differ.get(&node.id) else {
            return merge;
        };
        let outcome = Merge::of(mine.as_ref().map(|(n, _)| n), node);
        let after = if outcome.taken() {
            Some((*node, mine.map_or(now, |(_, h)| h.max(now))))
        } else {
            mine
        };
        if after.map(|(n, _)| n).as_ref() == self.gossip.get(node.id) {
            differ.remove(&node.id);
            if differ.is_empty() {
                self.differ.remove(&a);
            }
        } else {
            differ.insert(node.id, after);
        }
        outcome
    }

    /// Forgets the nodes silent for `ttl` and tells (`tell`) each agent which of them it
    /// forgets now. An agent forgets only nodes it knew (alive when it arrived, or heard by
    /// gossip since), and one heard by gossip only before the agent arrived one `ttl` after
    /// its arrival (see [`Knowledge::noticed_late`]); until it does, the node is gone from
    /// its view all the same (only a crashed node can be silent so long).
    ///
    /// The gossip view expires a node after its record's lifetime (`Node::lifetime`: `ttl`,
    /// or three of its declared refresh intervals if longer); a late notice comes `ttl` after
    /// arrival. The two agree because the simulator's agents use `ttl` = 3 x `refresh` and
    /// never set `refresh_per_node`, so a record declares `refresh` (rounded up to 10 s: a
    /// `--heartbeat` that is not whole tens of seconds lets a record outlive `ttl` by up to
    /// 30 s in the gossip view).
    pub fn expire(&mut self, now: Time, ttl: Duration, mut tell: impl FnMut(NodeId, &[NodeId])) {
        // Nobody is kept: a live agent is heard every refresh.
        let gone = self.gossip.expire(now, ttl, NodeId(0));
        if gone.is_empty() {
            return;
        }
        for &x in &gone {
            self.claimed_by.remove_from_all(x);
            self.listed_by.remove_from_all(x);
        }
        self.differ.retain(|_, d| {
            d.retain(|x, _| !gone.contains(x));
            !d.is_empty()
        });
        let facts: Vec<Gone> = gone
            .iter()
            .map(|&id| Gone {
                id,
                life: self.life.get(&id).copied(),
                heard: self.last_heard.get(&id).copied(),
            })
            .collect();
        let mut some = Vec::new();
        for (&a, &(born, arrived)) in &self.arrived {
            let knew = |g: &Gone| {
                let alive_then = g
                    .life
                    .is_some_and(|(xb, xd)| xb < born && xd.is_none_or(|d| d > born));
                alive_then || g.heard.is_some_and(|h| h > arrived)
            };
            if now.since(arrived) > ttl && facts.iter().all(knew) {
                tell(a, &gone); // the common case: an agent that has been here a while
                continue;
            }
            some.clear();
            for g in facts.iter().filter(|g| knew(g)) {
                if now.since(arrived) > ttl {
                    some.push(g.id);
                } else {
                    self.late.entry(a).or_default().push((arrived + ttl, g.id));
                }
            }
            if !some.is_empty() {
                tell(a, &some);
            }
        }
        for x in gone {
            self.life.remove(&x);
            self.last_heard.remove(&x);
        }
    }

    /// The expiries agent `a` notices by `now` later than the gossip view.
    pub fn noticed_late(&mut self, a: NodeId, now: Time) -> Vec<NodeId> {
        let Some(late) = self.late.get_mut(&a) else {
            return Vec::new();
        };
        let due = late
            .iter()
            .filter(|&&(t, _)| now > t)
            .map(|&(_, x)| x)
            .collect();
        late.retain(|&(t, _)| now <= t);
        if late.is_empty() {
            self.late.remove(&a);
        }
        due
    }

    /// Runs `f` over the gossip view as agent `a` knows it (its own newest record, a
    /// newcomer's sync on top), then puts the gossip view back.
    pub fn lend<R>(&mut self, a: NodeId, now: Time, f: impl FnOnce(&mut View) -> R) -> R {
        let mut undo = Vec::new();
        if let Some(differ) = self.differ.get(&a) {
            for (&x, &mine) in differ {
                undo.push((x, self.gossip.replace(x, mine)));
            }
        }
        if let Some(&mine) = self.own.get(&a)
            && self.gossip.get(a) != Some(&mine)
        {
            undo.push((a, self.gossip.replace(a, Some((mine, now)))));
        }
        let r = f(&mut self.gossip);
        for (x, old) in undo.into_iter().rev() {
            self.gossip.replace(x, old);
        }
        r
    }
}

/// A node the gossip view forgot: its arrival and departure (as in `Knowledge::life`) and when
/// gossip last heard it.
struct Gone {
    id: NodeId,
    life: Option<(u64, Option<u64>)>,
    heard: Option<Time>,
}

/// Who relates to whom, by id: for each key, the set of ids related to it.
#[derive(Debug, Default)]
pub(crate) struct Relations(BTreeMap<NodeId, BTreeSet<NodeId>>);

impl Relations {
    /// The ids related to `key`.
    pub fn of(&self, key: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.0.get(&key).into_iter().flatten().copied()
    }

    /// `id` relates to `new` now, and no longer to `old`.
    pub fn replace(&mut self, id: NodeId, old: Option<NodeId>, new: Option<NodeId>) {
        if old == new {
            return;
        }
        if let Some(k) = old {
            self.unlink(k, id);
        }
        if let Some(k) = new {
            self.0.entry(k).or_default().insert(id);
        }
    }

    /// `id` relates to the ids of `new` now, and no longer to those of `old`.
    pub fn replace_all(&mut self, id: NodeId, old: Children, new: Children) {
        for k in old.iter().filter(|&k| !new.contains(k)) {
            self.unlink(k, id);
        }
        for k in new.iter().filter(|&k| !old.contains(k)) {
            self.0.entry(k).or_default().insert(id);
        }
    }

    /// `id` relates to nothing any more (it was forgotten).
    fn remove_from_all(&mut self, id: NodeId) {
        self.0.retain(|_, ids| {
            ids.remove(&id);
            !ids.is_empty()
        });
    }

    fn unlink(&mut self, key: NodeId, id: NodeId) {
        if let Some(ids) = self.0.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.0.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use treecast_tree::{Role, StreamId};

    fn stream() -> StreamId {
        StreamId::new("sim").expect("a valid name")
    }

    fn view() -> View {
        let mut v = View::new(stream());
        v.set_trusted_root(NodeId(1));
        v
    }

    fn record(id: u64, seq: u64) -> NodeRecord {
        let mut node = Node::new(NodeId(id), Role::Viewer, 2);
        node.seq = seq;
        NodeRecord {
            stream: stream(),
            node,
        }
    }

    fn at(secs: u64) -> Time {
        Time::ZERO + Duration::from_secs(secs)
    }

    /// What agent `a` sees of node `x`.
    fn seen(k: &mut Knowledge, a: u64, x: u64) -> Option<u64> {
        k.lend(NodeId(a), at(0), |v| v.get(NodeId(x)).map(|n| n.seq))
    }

    #[test]
    fn a_newcomer_sees_its_sync_until_gossip_delivers_it() {
        let mut k = Knowledge::new(view());
        let mut truth = view();
        k.merge(&record(2, 1), at(1));
        truth.merge(&record(2, 2), at(1)).expect("valid");
        k.arrive(NodeId(10), at(2), &truth, [NodeId(2)]);
        assert_eq!(seen(&mut k, 10, 2), Some(2), "its sync");
        assert_eq!(
            seen(&mut k, 11, 2),
            Some(1),
            "what gossip delivered, put back"
        );
        let merge = k.merge(&record(2, 2), at(3)).expect("valid");
        assert_eq!(merge, Merge::Refreshed);
        let merge = k.merge_for(NodeId(10), &record(2, 2).node, merge, at(3));
        assert_eq!(merge, Merge::Stale, "the newcomer had it already");
        assert!(k.differ.is_empty(), "gossip caught up");
    }

    #[test]
    fn a_node_gone_before_a_newcomer_arrived_is_news_to_it() {
        let mut k = Knowledge::new(view());
        let truth = view(); // node 3 is gone: not among the live nodes' records
        k.merge(&record(3, 1), at(1));
        k.arrive(NodeId(10), at(2), &truth, [NodeId(3)]);
        assert_eq!(seen(&mut k, 10, 3), None);
        let merge = k.merge(&record(3, 2), at(3)).expect("valid");
        let merge = k.merge_for(NodeId(10), &record(3, 2).node, merge, at(3));
        assert_eq!(merge, Merge::Inserted);
        assert_eq!(seen(&mut k, 10, 3), Some(2));
    }

    #[test]
    fn an_agent_sees_its_own_newest_record_and_no_one_else_does() {
        let mut k = Knowledge::new(view());
        k.merge(&record(5, 1), at(1));
        k.published(NodeId(5), record(5, 4).node);
        assert_eq!(seen(&mut k, 5, 5), Some(4));
        assert_eq!(seen(&mut k, 6, 5), Some(1));
    }

    #[test]
    fn an_agent_forgets_what_it_knew_when_it_would() {
        let ttl = Duration::from_secs(90);
        let mut k = Knowledge::new(view());
        let truth = view();
        k.arrive(NodeId(2), at(0), &truth, []);
        k.merge(&record(2, 1), at(0));
        k.arrive(NodeId(7), at(50), &truth, []);
        k.merge(&record(7, 1), at(50)); // x, heard last at 50 s
        k.arrive(NodeId(10), at(60), &truth, []); // arrives after x fell silent
        k.depart(NodeId(7));
        k.arrive(NodeId(11), at(70), &truth, []); // arrives after x was gone
        k.merge(&record(2, 2), at(120));
        let mut told = Vec::new();
        k.expire(at(141), ttl, |a, gone| told.push((a, gone.to_vec())));
        // Agent 2 heard x at 50 s; agent 10 got it in its sync at 60 s and forgets it one
        // ttl later; agent 11 never knew it.
        assert_eq!(told, vec![(NodeId(2), vec![NodeId(7)])]);
        assert!(k.noticed_late(NodeId(10), at(150)).is_empty());
        assert_eq!(k.noticed_late(NodeId(10), at(151)), vec![NodeId(7)]);
        assert!(k.noticed_late(NodeId(11), at(151)).is_empty());
    }
}
