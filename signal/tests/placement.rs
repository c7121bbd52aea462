//! Browsers placed among themselves under a native root, in virtual time.
//!
//! The native root is the core's own [`Agent`] (role broadcaster), wired to the [`Broadcast`]
//! the way the gossip client will be: its records arrive as gossip, its tree messages as
//! native messages, and the browsers' records and messages go back to it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use treecast_signal::broadcast::{Broadcast, Effect};
use treecast_signal::protocol::{
    Capabilities, ClientMessage, PeerPlatform, ServerMessage, UnplacedReason,
};
use treecast_tree::{Agent, AgentConfig, Input, Node, NodeId, Output, Role, StreamId, Time};

const SERVER: NodeId = NodeId(0x5e);
const ROOT: NodeId = NodeId(1);

struct World {
    now: Time,
    b: Broadcast,
    root: Option<Agent>,
    /// Every message each browser received.
    inbox: BTreeMap<NodeId, Vec<ServerMessage>>,
    /// Whether browsers accept child requests.
    accept: bool,
}

fn stream() -> StreamId {
    StreamId::new("demo").expect("valid")
}

fn relay() -> Capabilities {
    Capabilities {
        relay: true,
        uplink_kbps: 12_000,
        encoded_transform: false,
    }
}

impl World {
    fn new(live: bool) -> World {
        let mut w = World {
            now: Time::from_secs(1),
            b: Broadcast::new(stream(), SERVER, 1),
            root: None,
            inbox: BTreeMap::new(),
            accept: true,
        };
        if live {
            let mut cfg = AgentConfig::new(Node::new(ROOT, Role::Broadcaster, 4), stream());
            cfg.root = Some(ROOT);
            w.root = Some(Agent::new(cfg, w.now));
            w.pump();
        }
        w
    }

    fn join(&mut self, id: NodeId, caps: Capabilities) {
        self.b.connect(id);
        self.b.client(
            self.now,
            id,
            ClientMessage::Join {
                stream: stream(),
                capabilities: caps,
            },
        );
        self.pump();
    }

    /// Moves everything between the broadcast, the root and the browsers until quiet.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            let mut root_out = VecDeque::new();
            if let Some(r) = self.root.as_mut() {
                while let Some(o) = r.poll_output() {
                    root_out.push_back(o);
                }
            }
            for o in root_out {
                busy = true;
                match o {
                    Output::Publish(rec) => self.b.record(self.now, &rec),
                    Output::Send { to, msg } => self.b.native_message(self.now, ROOT, to, msg),
                    Output::Event(_) => {}
                }
            }
            while let Some(e) = self.b.poll_effect() {
                busy = true;
                match e {
                    Effect::ToBrowser(id, msg) => {
                        if let ServerMessage::ChildRequest { child } = msg {
                            let answer = if self.accept {
                                ClientMessage::ChildAccepted { child }
                            } else {
                                ClientMessage::ChildRefused { child }
                            };
                            self.b.client(self.now, id, answer);
                        }
                        self.inbox.entry(id).or_default().push(msg);
                    }
                    Effect::Publish(rec) => {
                        assert_eq!(rec.node.via, Some(SERVER));
                        if let Some(r) = self.root.as_mut() {
                            r.handle(self.now, Input::Record(rec));
                        }
                    }
                    Effect::ToNative { from, to, msg } => {
                        assert_eq!(to, ROOT, "only the root is native here");
                        if let Some(r) = self.root.as_mut() {
                            r.handle(self.now, Input::Message { from, msg });
                        }
                    }
                    Effect::SignalNative { .. } => {}
                }
            }
            if !busy {
                return;
            }
        }
        panic!("did not settle");
    }

    /// Advances virtual time in 50 ms steps, firing every timer on the way.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = self.now + Duration::from_millis(50);
            self.b.tick(self.now);
            if let Some(r) = self.root.as_mut()
                && r.poll_timeout().is_some_and(|t| t <= self.now)
            {
                r.handle(self.now, Input::Tick);
            }
            self.pump();
            self.b
                .view()
                .check_invariants()
                .expect("invariants hold at every step");
        }
    }

    fn last_placed(&self, id: NodeId) -> Option<(NodeId, u16)> {
        self.inbox.get(&id)?.iter().rev().find_map(|m| match m {
            ServerMessage::Placed { parent, depth, .. } => Some((*parent, *depth)),
            _ => None,
        })
    }
}

#[test]
fn ten_browsers_form_a_valid_tree_under_a_native_root() {
    let mut w = World::new(true);
    assert!(w.b.is_live());
    let ids: Vec<NodeId> = (0..10).map(|i| NodeId(0x100 + i)).collect();
    for &id in &ids {
        w.join(id, relay());
        w.run_for(Duration::from_millis(200));
    }
    w.run_for(Duration::from_secs(3));
    let view = w.b.view();
    view.check_settled().expect("settled tree");
    assert_eq!(
        view.children_of(ROOT).count(),
        4,
        "the root's four slots are used first"
    );
    for &id in &ids {
        let depth = view.depth_of(id).expect("every browser attached");
        let (parent, told) = w.last_placed(id).expect("every browser told where it is");
        assert_eq!(view.parent_of(id), Some(parent));
        assert_eq!(depth, told);
        let platform = w.inbox[&id].iter().rev().find_map(|m| match m {
            ServerMessage::Placed {
                parent_platform, ..
            } => Some(*parent_platform),
            _ => None,
        });
        let expected = if parent == ROOT {
            PeerPlatform::Native
        } else {
            PeerPlatform::Browser
        };
        assert_eq!(platform, Some(expected));
        assert!(
            depth <= 2,
            "10 nodes under fan-out 4 and 3 fit in two levels"
        );
    }
    assert_eq!(w.b.counters().joins, 10);
}

#[test]
fn without_a_broadcaster_browsers_hear_not_live() {
    let mut w = World::new(false);
    w.join(NodeId(0x100), relay());
    w.run_for(Duration::from_secs(2));
    assert!(!w.b.is_live());
    let got = &w.inbox[&NodeId(0x100)];
    assert!(got.contains(&ServerMessage::Unplaced {
        reason: UnplacedReason::NotLive
    }));
    let unplaced = got
        .iter()
        .filter(|m| matches!(m, ServerMessage::Unplaced { .. }))
        .count();
    assert_eq!(unplaced, 1, "told once, not at every retry");
    assert_eq!(w.last_placed(NodeId(0x100)), None);
}

#[test]
fn a_lost_browser_parent_is_repaired() {
    let mut w = World::new(true);
    // Five relays: four under the root, the fifth under one of them.
    let ids: Vec<NodeId> = (0..5).map(|i| NodeId(0x100 + i)).collect();
    for &id in &ids {
        w.join(id, relay());
        w.run_for(Duration::from_millis(200));
    }
    w.run_for(Duration::from_secs(1));
    let fifth = ids[4];
    let (parent, depth) = w.last_placed(fifth).expect("placed");
    assert_eq!(depth, 2);
    // The parent's tab closes.
    w.b.disconnect(w.now, parent);
    w.pump();
    w.run_for(Duration::from_secs(3));
    assert!(w.inbox[&fifth].contains(&ServerMessage::ParentLost { parent }));
    let (new_parent, _) = w.last_placed(fifth).expect("placed again");
    assert_ne!(new_parent, parent);
    w.b.view().check_settled().expect("settled after repair");
    assert!(w.b.counters().repairs >= 1);
}

#[test]
fn refused_child_requests_leave_browsers_as_root_children_only() {
    let mut w = World::new(true);
    w.accept = false;
    for i in 0..6 {
        w.join(NodeId(0x100 + i), relay());
        w.run_for(Duration::from_millis(200));
    }
    w.run_for(Duration::from_secs(2));
    let view = w.b.view();
    assert_eq!(view.children_of(ROOT).count(), 4);
    let placed = (0..6)
        .filter(|i| view.depth_of(NodeId(0x100 + i)).is_some())
        .count();
    assert_eq!(
        placed, 4,
        "browsers that refuse children leave the rest unplaced"
    );
}

#[test]
fn signalling_goes_only_between_neighbours() {
    let mut w = World::new(true);
    w.join(NodeId(0x100), relay());
    w.join(NodeId(0x101), relay());
    w.run_for(Duration::from_millis(500));
    // 0x100 and 0x101 are siblings under the root: no offer between them.
    w.b.client(
        w.now,
        NodeId(0x100),
        ClientMessage::Offer {
            to: NodeId(0x101),
            sdp: "v=0".into(),
        },
    );
    w.pump();
    assert!(matches!(
        w.inbox[&NodeId(0x100)].last(),
        Some(ServerMessage::Error { .. })
    ));
    assert!(
        !w.inbox[&NodeId(0x101)]
            .iter()
            .any(|m| matches!(m, ServerMessage::Offer { .. }))
    );
}

#[test]
fn two_hundred_browsers_stay_valid_and_shallow() {
    let mut w = World::new(true);
    let t0 = std::time::Instant::now();
    for i in 0..200 {
        w.join(NodeId(0x1000 + i), relay());
        w.run_for(Duration::from_millis(50));
    }
    w.run_for(Duration::from_secs(3));
    let view = w.b.view();
    view.check_settled().expect("settled tree");
    let depths: Vec<u16> = (0..200)
        .map(|i| view.depth_of(NodeId(0x1000 + i)).expect("attached"))
        .collect();
    // Fan-out 4 at the root and 3 per browser: 4 + 12 + 36 + 108 = 160 within depth 4.
    assert!(depths.iter().all(|d| *d <= 5), "{depths:?}");
    eprintln!("200 joins in {:?} of CPU", t0.elapsed());
}

#[test]
fn one_join_per_connection() {
    let mut w = World::new(true);
    let id = NodeId(0x100);
    w.join(id, relay());
    w.run_for(Duration::from_millis(200));
    assert!(w.b.view().depth_of(id).is_some());
    w.b.client(w.now, id, ClientMessage::Leave {});
    w.pump();
    assert_eq!(
        w.b.view().get(id),
        None,
        "a leaving browser is forgotten at once"
    );
    w.b.client(
        w.now,
        id,
        ClientMessage::Join {
            stream: stream(),
            capabilities: relay(),
        },
    );
    w.pump();
    assert!(matches!(
        w.inbox[&id].last(),
        Some(ServerMessage::Error {
            code: treecast_signal::protocol::ErrorCode::AlreadyJoined,
            ..
        })
    ));
    w.run_for(Duration::from_secs(1));
    w.b.view().check_settled().expect("the root let go of it");
}

#[test]
fn native_signalling_reaches_a_browser_only_from_its_neighbours() {
    use treecast_signal::broadcast::Signal;
    let mut w = World::new(true);
    let id = NodeId(0x100);
    w.join(id, relay());
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.last_placed(id).map(|p| p.0), Some(ROOT));
    w.b.client(
        w.now,
        id,
        ClientMessage::Offer {
            to: ROOT,
            sdp: "v=0 offer".into(),
        },
    );
    assert!(matches!(
        w.b.poll_effect(),
        Some(Effect::SignalNative { to: ROOT, .. })
    ));
    w.b.native_signal(
        w.now,
        NodeId(0x777),
        id,
        Signal::Answer("v=0 forged".into()),
    );
    w.b.native_signal(w.now, ROOT, id, Signal::Answer("v=0 answer".into()));
    w.pump();
    let answers: Vec<&ServerMessage> = w.inbox[&id]
        .iter()
        .filter(|m| matches!(m, ServerMessage::Answer { .. }))
        .collect();
    assert_eq!(
        answers,
        [&ServerMessage::Answer {
            from: ROOT,
            sdp: "v=0 answer".into()
        }]
    );
}
