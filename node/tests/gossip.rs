//! The gossip overlay with real swarms on loopback: discovery from one bootstrap address,
//! direct messages between nodes the test never dialled to each other, and a hostile peer
//! whose forged, oversized, malformed and replayed records never reach the honest driver.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, PublishError, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, noise, tcp, yamux};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use treecast_node::gossip::{
    self, AddrError, Args, Body, Bootstrap, Client, ClientError, ConfigBuilder, Event,
    GossipConfig, envelope, node_id, topic,
};
use treecast_tree::{Message, Node, NodeId, NodeRecord, Role, StreamId};

/// Generous for loopback; every wait in this file is bounded by it.
const WAIT: Duration = Duration::from_secs(15);

struct TestNode {
    client: Client,
    events: mpsc::Receiver<Event>,
    addr: Multiaddr,
}

impl TestNode {
    /// A node on a free loopback TCP port, bootstrapping from `bootstrap`.
    async fn start(bootstrap: Option<&Multiaddr>) -> TestNode {
        let mut b = base().listen("/ip4/127.0.0.1/tcp/0".parse().unwrap());
        if let Some(addr) = bootstrap {
            b = b.bootstrap(addr.to_string().parse().unwrap());
        }
        TestNode::launch(b).await
    }

    /// Starts a node and waits for its first listen address.
    async fn launch(config: ConfigBuilder) -> TestNode {
        // RUST_LOG=treecast_node=debug,libp2p_relay=debug shows what the swarms do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (client, mut events, event_loop) = gossip::new(config.build().unwrap()).await.unwrap();
        tokio::spawn(event_loop.run());
        let addr = timeout(WAIT, async {
            loop {
                if let Some(Event::Listening { addr }) = events.recv().await {
                    return addr;
                }
            }
        })
        .await
        .expect("listening within the deadline");
        TestNode {
            client,
            events,
            addr,
        }
    }

    fn record(&self, seq: u64) -> NodeRecord {
        let mut node = Node::new(self.client.node_id(), Role::Relay, 2);
        node.seq = seq;
        NodeRecord {
            stream: demo(),
            node,
        }
    }

    /// The next record event, skipping other events, within `deadline`.
    async fn next_record(&mut self, deadline: Instant) -> Option<(PeerId, NodeRecord)> {
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Record { from, record })) => return Some((from, record)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next direct message as `(from, to, body)`, skipping other events, within [`WAIT`].
    async fn next_addressed(&mut self) -> (NodeId, NodeId, Body) {
        timeout(WAIT, async {
            loop {
                if let Some(Event::Message { from, to, body, .. }) = self.events.recv().await {
                    return (from, to, body);
                }
            }
        })
        .await
        .expect("a message within the deadline")
    }

    /// The next direct message, skipping other events, within [`WAIT`].
    async fn next_message(&mut self) -> (NodeId, Body) {
        timeout(WAIT, async {
            loop {
                if let Some(Event::Message { from, body, .. }) = self.events.recv().await {
                    return (from, body);
                }
            }
        })
        .await
        .expect("a message within the deadline")
    }
}

/// Test settings: no mDNS (tests must not see each other), fast heartbeat and retries.
fn base() -> ConfigBuilder {
    GossipConfig::builder()
        .mdns(false)
        .heartbeat(Duration::from_millis(200))
        .publish_retry(Duration::from_millis(100))
}

/// `from` sends a media offer with `sdp` to `to` until it is routed and delivered (bounded), with
/// `to` republishing its record meanwhile so `from` learns its peer from gossip.
async fn attach_until_delivered(from: &TestNode, to: &TestNode, sdp: &str) {
    let deadline = Instant::now() + WAIT;
    let mut seq = 1;
    loop {
        to.client.publish(to.record(seq)).await.unwrap();
        seq += 1;
        let body = offer(sdp);
        match from
            .client
            .send_body(to.client.node_id(), demo(), body)
            .await
        {
            Ok(_) => return,
            Err(e @ (ClientError::UnknownNode(_) | ClientError::Failed(_))) => {
                println!("attempt {}: {e}", seq - 1);
            }
            Err(e) => panic!("unexpected send error: {e}"),
        }
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn offer(sdp: &str) -> Body {
    Body::Offer {
        session: 1,
        sdp: sdp.to_owned(),
        live: false,
    }
}

fn demo() -> StreamId {
    StreamId::new("demo").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_with_one_bootstrap_address_all_learn_each_other() {
    let mut nodes = vec![TestNode::start(None).await];
    let first = nodes[0].addr.clone();
    for _ in 1..5 {
        nodes.push(TestNode::start(Some(&first)).await);
    }
    let ids: BTreeSet<NodeId> = nodes.iter().map(|n| n.client.node_id()).collect();
    for n in &nodes {
        n.client.subscribe(demo()).await.unwrap();
    }

    // Like the agent: publish on start, republish (newer seq) every refresh until done.
    let started = Instant::now();
    let deadline = started + WAIT;
    let mut seen: Vec<BTreeSet<NodeId>> = vec![BTreeSet::new(); nodes.len()];
    let mut seq = 1;
    while seen.iter().any(|s| s.len() < nodes.len() - 1) {
        assert!(
            Instant::now() < deadline,
            "not everyone heard everyone: {seen:?}"
        );
        for n in &nodes {
            n.client.publish(n.record(seq)).await.unwrap();
        }
        seq += 1;
        let round = Instant::now() + Duration::from_millis(500);
        for (i, n) in nodes.iter_mut().enumerate() {
            while let Some((from, record)) = n.next_record(round).await {
                assert_eq!(node_id(&from), record.node.id, "authored by its signer");
                assert_ne!(
                    record.node.id,
                    n.client.node_id(),
                    "own records are not echoed"
                );
                assert!(ids.contains(&record.node.id));
                seen[i].insert(record.node.id);
                if seen[i].len() == ids.len() - 1 {
                    break;
                }
            }
        }
    }
    println!(
        "5 nodes learnt each other's records in {:?} ({} publish rounds)",
        started.elapsed(),
        seq - 1
    );
    let mut gossipsub_out = 0;
    for n in &nodes {
        let stats = n.client.stats().await.unwrap();
        assert_eq!(stats.rejected(), 0, "{stats:?}");
        assert!(stats.accepted >= 4, "{stats:?}");
        // gossipsub's message bytes are read, and are part of all the overlay's bytes.
        assert!(stats.gossipsub_in <= stats.overlay_in, "{stats:?}");
        assert!(stats.gossipsub_out <= stats.overlay_out, "{stats:?}");
        gossipsub_out += stats.gossipsub_out;
    }
    assert!(
        gossipsub_out > 0,
        "the records went out as gossipsub messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stays_under_its_peer_bound_but_keeps_protected_neighbours() {
    // A hub everybody bootstraps through: without a bound it would stay connected to all.
    let hub = TestNode::launch(
        base()
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .max_peers(8),
    )
    .await;
    let mut nodes = Vec::new();
    for _ in 0..14 {
        nodes.push(TestNode::start(Some(&hub.addr)).await);
    }
    // One of them is a tree neighbour of the hub: never pruned.
    let neighbour = nodes[0].client.node_id();
    hub.client.protect(vec![neighbour]).unwrap();
    // Connections younger than 10 s are spared, and a few go per 2 s round.
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let s = hub.client.stats().await.unwrap();
        if s.connected <= 8 && s.pruned > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} peers, {} pruned",
            s.connected,
            s.pruned
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The protected neighbour is still reachable without a new dial: a probe answers.
    let s = nodes[0].client.stats().await.unwrap();
    assert!(s.connected >= 1, "the neighbour lost its hub connection");
    hub.client.subscribe(demo()).await.unwrap();
    nodes[0].client.subscribe(demo()).await.unwrap();
    assert_eq!(hub.client.probe(neighbour, demo()).await, Ok(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_learns_the_records_held_by_its_peers_at_once() {
    let hub = TestNode::start(None).await;
    let mut old: Vec<TestNode> = Vec::new();
    for _ in 0..3 {
        old.push(TestNode::start(Some(&hub.addr)).await);
    }
    hub.client.subscribe(demo()).await.unwrap();
    for n in &old {
        n.client.publish(n.record(7)).await.unwrap();
    }
    // The hub holds all three (gossip), then the newcomer arrives; nobody republishes.
    let deadline = Instant::now() + WAIT;
    while hub.client.stats().await.unwrap().accepted < 3 {
        assert!(Instant::now() < deadline, "hub never got the records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut newcomer = TestNode::start(Some(&hub.addr)).await;
    newcomer.client.subscribe(demo()).await.unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 3 {
        let (_, record) = newcomer
            .next_record(deadline)
            .await
            .expect("every held record, from a sync");
        assert_eq!(record.node.seq, 7);
        seen.insert(record.node.id);
    }
    let expected: BTreeSet<NodeId> = old.iter().map(|n| n.client.node_id()).collect();
    assert_eq!(seen, expected);
    assert!(newcomer.client.stats().await.unwrap().synced >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_message_with_sdp_round_trips_between_undialled_nodes() {
    // The hub listens on TCP and QUIC; A joins over QUIC, B over TCP.
    let hub = TestNode::launch(
        base()
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .listen("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    let (tcp, quic) = loop {
        let addrs = hub.client.listen_addrs().await.unwrap();
        let find = |name: &str| addrs.iter().find(|a| a.to_string().contains(name)).cloned();
        if let (Some(tcp), Some(quic)) = (find("/tcp/"), find("/quic-v1/")) {
            break (tcp, quic);
        }
        assert!(
            Instant::now() < deadline,
            "hub not listening on both: {addrs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut a = TestNode::start(Some(&quic)).await;
    let mut b = TestNode::start(Some(&tcp)).await;
    for n in [&hub, &a, &b] {
        n.client.subscribe(demo()).await.unwrap();
    }
    // A typical offer is a few kilobytes; this one has a recognisable body.
    let offer_sdp = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n{}",
        "a=x\r\n".repeat(800)
    );
    let (a_id, b_id) = (a.client.node_id(), b.client.node_id());

    // A knows B's node id from gossip or the DHT, never from the test: retry until routed.
    attach_until_delivered(&a, &b, &offer_sdp).await;
    let (from, body) = b.next_message().await;
    assert_eq!(from, a_id);
    assert_eq!(
        body,
        Body::Offer {
            session: 1,
            sdp: offer_sdp.clone(),
            live: false,
        }
    );

    // B answers on the same protocol: it knows A as the sender.
    let answer = Body::Answer {
        session: 1,
        sdp: "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n".to_owned(),
    };
    b.client
        .send_body(a_id, demo(), answer.clone())
        .await
        .unwrap();
    b.client
        .send(a_id, demo(), Message::Accept { depth: 2 })
        .await
        .unwrap();
    assert_eq!(a.next_message().await, (b_id, answer));
    let tree = Body::Tree {
        msg: Message::Accept { depth: 2 },
    };
    assert_eq!(a.next_message().await, (b_id, tree.clone()));

    // A probe is answered by B's event loop with what B's driver last said of its media.
    assert_eq!(a.client.probe(b_id, demo()).await, Ok(false));
    b.client.set_receiving(true);
    assert_eq!(a.client.probe(b_id, demo()).await, Ok(true));

    // Bounded sizes: an SDP over the request limit (64 KiB) is refused, not delivered.
    let huge = "a".repeat(100 * 1024);
    let err = a
        .client
        .send_body(b_id, demo(), offer(&huge))
        .await
        .expect_err("oversized request");
    assert!(matches!(err, ClientError::Failed(_)), "{err}");
    // And a stream the receiver does not follow is refused by it.
    let other = StreamId::new("other").unwrap();
    let err = a
        .client
        .send(b_id, other, Message::Detach)
        .await
        .expect_err("unknown stream");
    assert_eq!(err, ClientError::UnknownStream);
    // Probes never reach the driver.
    assert_eq!(b.client.stats().await.unwrap().messages, 1);

    // A speaks for a browser (as a signal server does): B sees the browser as the sender, and
    // B's reply to the browser reaches A, addressed to the browser.
    let browser = NodeId(0xB0B);
    a.client
        .send_as(browser, b_id, demo(), tree.clone())
        .await
        .unwrap();
    assert_eq!(b.next_addressed().await, (browser, b_id, tree.clone()));
    b.client
        .send_body(browser, demo(), tree.clone())
        .await
        .unwrap();
    assert_eq!(a.next_addressed().await, (b_id, browser, tree.clone()));
    // Another peer claiming to speak for the same browser is refused and delivers nothing.
    let err = hub
        .client
        .send_as(browser, b_id, demo(), tree.clone())
        .await
        .expect_err("a second peer speaking for the browser");
    assert!(matches!(err, ClientError::Failed(_)), "{err}");
    let stats = b.client.stats().await.unwrap();
    assert_eq!((stats.messages, stats.messages_forged), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_without_a_known_address_is_found_through_the_dht() {
    let mut hub = TestNode::start(None).await;
    // A does not serve the DHT and its records carry no address, so nobody who joins later
    // learns of it and dials it.
    let a = TestNode::launch(
        base()
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .bootstrap(hub.addr.to_string().parse().unwrap())
            .dht_server(false)
            .advertise_addrs(false),
    )
    .await;
    for n in [&hub, &a] {
        n.client.subscribe(demo()).await.unwrap();
    }
    // Sync point: A is connected and subscribed once its record has reached the hub.
    let deadline = Instant::now() + WAIT;
    let mut seq = 1;
    loop {
        a.client.publish(a.record(seq)).await.unwrap();
        seq += 1;
        let round = (Instant::now() + Duration::from_millis(300)).min(deadline);
        if hub.next_record(round).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "hub never heard A");
    }
    // libp2p-kad bootstraps again 500 ms after a peer enters the routing table (not
    // configurable in 0.49); if B were in the hub's table by then, A would connect to B during
    // that query. Outwait it (bounded, with a wide margin for a loaded machine).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // B joins now: A knows B only from B's records, forwarded by the hub, which carry no
    // address (B does not advertise them), so A's first dial fails and it asks the DHT.
    let mut b = TestNode::launch(
        base()
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .bootstrap(hub.addr.to_string().parse().unwrap())
            .advertise_addrs(false),
    )
    .await;
    b.client.subscribe(demo()).await.unwrap();
    attach_until_delivered(&a, &b, "v=0\r\n").await;
    let (from, body) = b.next_message().await;
    assert_eq!(from, a.client.node_id());
    assert_eq!(body, offer("v=0\r\n"));
    let stats = a.client.stats().await.unwrap();
    assert!(
        stats.lookups >= 1,
        "delivered without a DHT lookup: {stats:?}"
    );

    // C advertises its addresses in its records (the default): A dials it straight away.
    let mut c = TestNode::start(Some(&hub.addr)).await;
    c.client.subscribe(demo()).await.unwrap();
    attach_until_delivered(&a, &c, "v=0\r\n").await;
    let (from, _) = c.next_message().await;
    assert_eq!(from, a.client.node_id());
    let after = a.client.stats().await.unwrap();
    assert_eq!(
        after.lookups, stats.lookups,
        "C was looked up in the DHT though its records carry its addresses"
    );

    // C stops: the addresses its records gave refuse, and A does not walk the DHT for it (each
    // dial of such a walk would be a handshake for nothing; a repair burst made a dozen).
    let c_id = c.client.node_id();
    drop(c);
    let deadline = Instant::now() + WAIT;
    loop {
        match a.client.send_body(c_id, demo(), offer("v=0\r\n")).await {
            Err(ClientError::Failed(_)) => break,
            // Over the connection still open while C's event loop winds down.
            Ok(_) => {}
            Err(e) => panic!("unexpected send error: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "C still answers after it stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection is gone now: the next message dials C's addresses.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = a.client.send_body(c_id, demo(), offer("v=0\r\n")).await;
    assert!(matches!(sent, Err(ClientError::Failed(_))), "{sent:?}");
    let gone = a.client.stats().await.unwrap();
    assert_eq!(
        gone.lookups, after.lookups,
        "a node whose own addresses refused was looked up in the DHT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_message_reaches_a_node_listening_only_through_a_relay() {
    let relay = TestNode::launch(
        base()
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .relay_server(true),
    )
    .await;
    // B has no address of its own: like a node behind NAT, it is reachable only through R.
    let circuit = relay.addr.clone().with(Protocol::P2pCircuit);
    let mut b = TestNode::launch(
        base()
            .listen(circuit)
            .bootstrap(relay.addr.to_string().parse().unwrap()),
    )
    .await;
    let b_addrs = b.client.listen_addrs().await.unwrap();
    assert!(!b_addrs.is_empty());
    for addr in &b_addrs {
        assert!(addr.iter().any(|p| p == Protocol::P2pCircuit), "{addr}");
    }
    println!("B listens only on {b_addrs:?}");
    let mut a = TestNode::start(Some(&relay.addr)).await;
    for n in [&relay, &a, &b] {
        n.client.subscribe(demo()).await.unwrap();
    }

    let offer_sdp = "v=0\r\no=- 5 6 IN IP4 127.0.0.1\r\n";
    attach_until_delivered(&a, &b, offer_sdp).await;
    let (from, body) = b.next_message().await;
    assert_eq!(from, a.client.node_id());
    assert_eq!(body, offer(offer_sdp));

    b.client
        .send(a.client.node_id(), demo(), Message::Accept { depth: 1 })
        .await
        .unwrap();
    let (from, body) = a.next_message().await;
    assert_eq!(
        (from, body),
        (
            b.client.node_id(),
            Body::Tree {
                msg: Message::Accept { depth: 1 }
            }
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_does_not_keep_up_costs_drops_not_memory() {
    let a = TestNode::start(None).await;
    // B's driver queue holds 4 events and nobody reads it for a while.
    let mut b = TestNode::launch(
        base()
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .bootstrap(a.addr.to_string().parse().unwrap())
            .event_capacity(4),
    )
    .await;
    for n in [&a, &b] {
        n.client.subscribe(demo()).await.unwrap();
    }
    let b_id = b.client.node_id();

    // Direct messages beyond the queue are answered busy: the sender knows at once.
    let deadline = Instant::now() + WAIT;
    let mut busy = 0;
    let mut sent = 0;
    while busy == 0 {
        assert!(
            Instant::now() < deadline,
            "never busy after {sent} messages"
        );
        match a.client.send(b_id, demo(), Message::Detach).await {
            Ok(()) => sent += 1,
            Err(ClientError::Busy) => busy += 1,
            Err(ClientError::UnknownNode(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected send error: {e}"),
        }
    }
    assert!(
        sent <= 4,
        "at most the queue's capacity is delivered, got {sent}"
    );

    // Records beyond the queue are dropped and counted, not remembered as seen.
    let mut seq = 1;
    let stats = loop {
        a.client.publish(a.record(seq)).await.unwrap();
        seq += 1;
        let stats = b.client.stats().await.unwrap();
        if stats.dropped_records > 0 {
            break stats;
        }
        assert!(Instant::now() < deadline, "no record dropped: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("B after {sent} messages and {} records: {stats:?}", seq - 1);
    assert_eq!(stats.messages_busy, busy);

    // Once B's driver catches up, A's next record gets through (after any still in flight).
    while b.events.try_recv().is_ok() {}
    a.client.publish(a.record(seq)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, record) = b
            .next_record(deadline)
            .await
            .expect("a record after catching up");
        assert_eq!(record.node.id, a.client.node_id());
        if record.node.seq == seq {
            break;
        }
    }
}

/// A raw gossipsub swarm that publishes whatever bytes it is told to: no validation.
async fn hostile_swarm(key: Keypair) -> Swarm<gossipsub::Behaviour> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_key| {
            // Anonymous like the nodes (records carry their own seal), with ids over the
            // content so its different messages are not taken for duplicates.
            let config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(200))
                .validation_mode(ValidationMode::Anonymous)
                .message_id_fn(|m| {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    m.data.hash(&mut h);
                    gossipsub::MessageId::from(h.finish().to_be_bytes().to_vec())
                })
                .build()
                .unwrap();
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).unwrap()
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Publishes `data` once some peer has our subscription, driving the swarm meanwhile.
async fn hostile_publish(
    swarm: &mut Swarm<gossipsub::Behaviour>,
    topic: &IdentTopic,
    data: Vec<u8>,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        match swarm.behaviour_mut().publish(topic.clone(), data.clone()) {
            Ok(_) => return,
            Err(PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => panic!("hostile publish failed: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "hostile peer never saw a subscriber"
        );
        // Drive the swarm for a moment so subscriptions arrive.
        let _ = tokio::time::timeout(Duration::from_millis(50), swarm.select_next_some()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_never_reach_the_driver() {
    let mut honest = TestNode::start(None).await;
    let publisher = TestNode::start(Some(&honest.addr)).await;
    honest.client.subscribe(demo()).await.unwrap();
    let p_id = publisher.client.node_id();

    let x_key = Keypair::generate_ed25519();
    let mut x = hostile_swarm(x_key.clone()).await;
    let x_id = node_id(x.local_peer_id());
    let demo_topic = topic(&demo());
    x.behaviour_mut().subscribe(&demo_topic).unwrap();
    x.dial(honest.addr.clone()).unwrap();

    let deadline = Instant::now() + WAIT;
    let expect_record = |got: Option<(PeerId, NodeRecord)>, id: NodeId, seq: u64| {
        let (from, record) = got.expect("record within the deadline");
        assert_eq!((record.node.id, record.node.seq), (id, seq));
        assert_eq!(node_id(&from), id);
    };

    // The honest publisher's first record gets through.
    publisher.client.publish(publisher.record(1)).await.unwrap();
    expect_record(honest.next_record(deadline).await, p_id, 1);

    // The hostile peer's own valid record gets through too: its channel works.
    let own = |seq: u64, uptime_s: u32| {
        let mut node = Node::new(x_id, Role::Relay, 4);
        node.seq = seq;
        node.uptime_s = uptime_s;
        let record = NodeRecord {
            stream: demo(),
            node,
        };
        envelope::seal(&x_key, &record.encode(), &[]).unwrap()
    };
    hostile_publish(&mut x, &demo_topic, own(10, 1)).await;
    let x_task_deadline = deadline;
    let got = tokio::select! {
        got = honest.next_record(deadline) => got,
        _ = drive(&mut x, x_task_deadline) => None,
    };
    expect_record(got, x_id, 10);
    // (A sync from the publisher, which hands on its own record, may have counted one stale
    // already: count the attacks' from here.)
    let stale_before = honest.client.stats().await.unwrap().ignored_stale;

    // Replays (ignored: no penalty), then forged, oversized and malformed (rejected).
    let mut forged = publisher.record(1000);
    forged.node.capacity = 4;
    let forged = forged.encode();
    // (Bad signatures and bare records are covered by the unit tests of `validate`: three
    // rejections already bring the hostile peer's gossipsub score down.)
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("replayed older seq", own(5, 1)),
        ("replayed same seq, altered", own(10, 99)),
        (
            "forged: the publisher's node id, sealed by the hostile peer",
            envelope::seal(&x_key, &forged, &[]).unwrap(),
        ),
        ("oversized", vec![1; 1000]),
        ("malformed", b"TC not a record".to_vec()),
    ];
    for (what, data) in attacks {
        println!("hostile peer publishes: {what}");
        hostile_publish(&mut x, &demo_topic, data).await;
    }

    // Every attack is counted, and none produced a record event.
    let stats = loop {
        let stats = honest.client.stats().await.unwrap();
        if stats.ignored_stale - stale_before == 2 && stats.rejected() == 3 {
            break stats;
        }
        assert!(Instant::now() < deadline, "attacks not all seen: {stats:?}");
        let _ = timeout(Duration::from_millis(50), x.select_next_some()).await;
    };
    println!("honest node's validation counters: {stats:?}");
    assert_eq!(stats.rejected_forged, 1);
    assert_eq!(stats.rejected_oversized, 1);
    assert_eq!(stats.rejected_malformed, 1);
    assert_eq!(stats.accepted, 2);

    // The honest publisher's next record still gets through, although the forgery claimed
    // seq 1000 for it; it is the very next record event after all the attacks.
    publisher.client.publish(publisher.record(2)).await.unwrap();
    expect_record(honest.next_record(deadline).await, p_id, 2);
    let after = honest.client.stats().await.unwrap();
    assert_eq!(after.accepted, 3, "{after:?}");
    assert_eq!(after.rejected(), 3);
}

/// Drives a raw swarm until `deadline`.
async fn drive(swarm: &mut Swarm<gossipsub::Behaviour>, deadline: Instant) {
    while Instant::now() < deadline {
        let _: Option<SwarmEvent<gossipsub::Event>> =
            tokio::time::timeout_at(deadline, swarm.next())
                .await
                .ok()
                .flatten();
    }
}

#[tokio::test]
async fn malformed_bootstrap_addresses_give_clear_errors() {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gossip: Args,
    }

    let err = Cli::try_parse_from(["treecast", "--bootstrap", "127.0.0.1:4001"]).unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.contains("invalid bootstrap address \"127.0.0.1:4001\""),
        "{text}"
    );
    assert!(
        text.contains("/ip4/203.0.113.7/tcp/4001"),
        "shows the expected form: {text}"
    );

    let err = "/ip4/127.0.0.1/udp/4001".parse::<Bootstrap>().unwrap_err();
    assert!(matches!(err, AddrError::NoTransport(_)));
    assert!(err.to_string().contains("needs a host and a port"), "{err}");

    // A well-formed one, as printed by a node at start-up, is accepted with its peer id.
    let node = TestNode::start(None).await;
    let printed = gossip::announce(&node.addr, node.client.peer_id());
    let addr = printed.strip_prefix("p2p listening on ").unwrap();
    let b: Bootstrap = addr.parse().unwrap();
    assert_eq!(b.peer, Some(node.client.peer_id()));
    let listening = node.client.listen_addrs().await.unwrap();
    assert!(listening.contains(&node.addr), "{listening:?}");
}
