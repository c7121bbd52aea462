//! The task that owns the swarm: runs commands, validates what arrives, feeds the driver.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, identify, kad, mdns, relay};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};
use treecast_tree::{NodeId, NodeRecord, StreamId};

use super::addr::{Bootstrap, is_relayed, with_peer_id};
use super::behaviour::{
    Behaviour, BehaviourEvent, KAD_PROTOCOL, build_swarm, overlay_bytes, topic_score,
};
use super::bounded::BoundedMap;
use super::client::{ClientError, Command};
use super::config::GossipConfig;
use super::id::node_id;
use super::protocol::topic;
use super::validate::{Seqs, Stats, Verdict, validate};
use super::{Error, Event};

mod direct;
mod prune;
mod relays;

use direct::Outbound;
use relays::{MAX_RELAY_CANDIDATES, relay_of};

/// Most records waiting for a first subscriber (one per node we publish for).
const MAX_QUEUED_RECORDS: usize = 1024;
/// Most node id -> peer routes remembered.
const MAX_ROUTES: usize = 65_536;
/// How many peers a newcomer asks for the records of a stream.
const SYNC_PEERS: usize = 2;
/// Records handed on in a sync are those heard within this long, or within their lifetime if
/// longer (three of the refresh intervals they declare, `Node::lifetime`): older ones are
/// likely of nodes gone (native nodes republish every 120 s or more, less up to 10% jitter;
/// the signal server's browsers every 30 s).
const SYNC_MAX_AGE: Duration = Duration::from_secs(150);

/// While a node has no peer at all, its bootstrap nodes are dialled again this often (the
/// bootstrap node may start later, or the network come up later, than this one).
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(10);

/// Owns the swarm; run it as one task with [`EventLoop::run`]. It ends when every
/// [`super::Client`] is dropped.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    local: PeerId,
    /// The streams we follow, by topic.
    streams: HashMap<TopicHash, StreamId>,
    seqs: Seqs,
    /// Which peer speaks for a node: the node itself, or the proxy of a browser.
    routes: BoundedMap<NodeId, PeerId>,
    /// Where peers say they can be dialled, from the envelopes of their records.
    addrs: BoundedMap<PeerId, Vec<Multiaddr>>,
    /// Our own addresses, sealed with our records: external ones first, then listen ones.
    own_addrs: Vec<Multiaddr>,
    /// Whether to seal them (see `GossipConfig::advertise_addrs`).
    advertise_addrs: bool,
    /// Rounds of `tend`, to vary its picks.
    tend_round: u64,
    /// Records not yet published for lack of subscribers, newest per (stream, node).
    queued: BTreeMap<(StreamId, NodeId), NodeRecord>,
    publish_retry: Duration,
    in_flight: HashMap<OutboundRequestId, Outbound>,
    /// Messages waiting for a DHT lookup of their receiver's addresses.
    lookups: HashMap<kad::QueryId, (PeerId, Vec<Outbound>)>,
    bootstrap_started: bool,
    /// The `--bootstrap` nodes, dialled again every [`BOOTSTRAP_RETRY`] while we have no peer.
    bootstrap: Vec<Bootstrap>,
    /// Whether we serve as a relay (then our listen addresses are our external addresses).
    relay_server: bool,
    /// Whether to reserve on relays when AutoNAT says we are private.
    auto_relay: bool,
    /// Whether AutoNAT last said we are not publicly reachable.
    private: bool,
    /// Peers offering to relay, with an address to reach them.
    relays: BTreeMap<PeerId, Multiaddr>,
    /// Configured relayed listen addresses waiting for a connection to their relay.
    circuits: Vec<(PeerId, Multiaddr)>,
    /// Relays we listen through, with the listener.
    reserved: BTreeMap<PeerId, ListenerId>,
    stats: Stats,
    /// libp2p's byte counters of every connection (read for [`Stats`]).
    metrics: libp2p::metrics::Registry,
    /// Peers to stay connected to at most, beyond what needs them (see `prune`).
    max_peers: usize,
    /// Nodes whose connections are never pruned (the driver's tree neighbours).
    protected: HashSet<NodeId>,
    /// When a peer last carried a direct message.
    direct_at: BoundedMap<PeerId, std::time::Instant>,
    /// When we last dialled a protected node ahead of need (see `connect_protected`).
    protect_dialled: BoundedMap<PeerId, std::time::Instant>,
    /// When the current connection to a peer opened.
    connected_since: BoundedMap<PeerId, std::time::Instant>,
    /// Seals our records.
    keypair: libp2p::identity::Keypair,
    /// Sync requests in flight, with their stream.
    syncs: HashMap<OutboundRequestId, StreamId>,
    /// Peers asked for a sync, per stream (at most [`SYNC_PEERS`] each).
    synced: HashMap<StreamId, Vec<PeerId>>,
    /// What we answer to probes; set by the driver through its client.
    receiving: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("local", &self.local)
            .field("streams", &self.streams.len())
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    pub(crate) fn start(
        config: &GossipConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        receiving: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, Error> {
        let (mut swarm, metrics) = build_swarm(config)?;
        let mut circuits = Vec::new();
        for addr in &config.listen {
            if is_relayed(addr) {
                // libp2p's relay client closes a circuit listener at once (ListenerClosed
                // with Ok) when its own dial to the relay is refused because another dial to
                // it is in flight, e.g. the bootstrap dial. So: dial the relay, and listen
                // through it once connected.
                let Some((relay, relay_addr)) = relay_of(addr) else {
                    return Err(Error::Listen {
                        addr: addr.clone(),
                        reason: "a relayed address must name its relay: \
                                 RELAY-ADDR/p2p/RELAY-ID/p2p-circuit"
                            .into(),
                    });
                };
                let _ = swarm.dial(DialOpts::peer_id(relay).addresses(vec![relay_addr]).build());
                circuits.push((relay, addr.clone()));
                continue;
            }
            swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr: addr.clone(),
                reason: listen_reason(&e),
            })?;
        }
        let mut event_loop = EventLoop {
            local: *swarm.local_peer_id(),
            swarm,
            commands,
            events,
            streams: HashMap::new(),
            seqs: Seqs::new(config.seq_capacity),
            routes: BoundedMap::new(MAX_ROUTES),
            addrs: BoundedMap::new(MAX_ROUTES),
            own_addrs: Vec::new(),
            advertise_addrs: config.advertise_addrs,
            tend_round: 0,
            queued: BTreeMap::new(),
            publish_retry: config.publish_retry,
            in_flight: HashMap::new(),
            lookups: HashMap::new(),
            bootstrap_started: false,
            bootstrap: config.bootstrap.clone(),
            relay_server: config.relay_server,
            auto_relay: config.auto_relay,
            private: false,
            relays: BTreeMap::new(),
            circuits,
            reserved: BTreeMap::new(),
            stats: Stats::default(),
            metrics,
            max_peers: config.max_peers,
            protected: HashSet::new(),
            direct_at: BoundedMap::new(MAX_ROUTES),
            protect_dialled: BoundedMap::new(256),
            connected_since: BoundedMap::new(MAX_ROUTES),
            keypair: config.keypair.clone(),
            syncs: HashMap::new(),
            synced: HashMap::new(),
            receiving,
        };
        for node in &config.bootstrap {
            event_loop.dial_bootstrap(node);
        }
        Ok(event_loop)
    }

    /// Runs until every client is dropped. Logs go to a `gossip` span naming this node, so
    /// the logs of many nodes in one process stay readable.
    pub async fn run(self) {
        let span = info_span!("gossip", node = %node_id(&self.local));
        self.run_inner().instrument(span).await;
    }

    async fn run_inner(mut self) {
        let mut retry = tokio::time::interval(self.publish_retry);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(prune::PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = tokio::time::Instant::now() + BOOTSTRAP_RETRY;
        let mut redial = tokio::time::interval_at(start, BOOTSTRAP_RETRY);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = retry.tick(), if !self.queued.is_empty() => self.publish_queued(),
                _ = prune.tick() => {
                    self.prune();
                    self.tend();
                }
                _ = redial.tick(), if !self.bootstrap.is_empty() => {
                    if self.swarm.connected_peers().next().is_none() {
                        for node in self.bootstrap.clone() {
                            self.dial_bootstrap(&node);
                        }
                    }
                }
            }
        }
        debug!(peer = %self.local, "gossip event loop stopped");
    }

    fn dial_bootstrap(&mut self, node: &Bootstrap) {
        let opts = match node.peer {
            Some(peer) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, node.addr.clone());
                DialOpts::peer_id(peer)
                    .addresses(vec![node.addr.clone()])
                    .build()
            }
            None => DialOpts::unknown_peer_id()
                .address(node.addr.clone())
                .build(),
        };
        match self.swarm.dial(opts) {
            // Already connected or dialling (e.g. it is also our relay): fine.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => warn!(addr = %node, error = %e, "cannot dial bootstrap node"),
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe { stream, reply } => {
                let _ = reply.send(self.subscribe(&stream));
            }
            Command::Publish { record, reply } => {
                let _ = reply.send(self.publish(record));
            }
            Command::Send { to, request, reply } => self.send(to, request, reply),
            Command::Dial { addr, reply } => {
                let r = self
                    .swarm
                    .dial(addr)
                    .map_err(|e| ClientError::Dial(e.to_string()));
                let _ = reply.send(r);
            }
            Command::ListenAddrs { reply } => {
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| with_peer_id(a.clone(), self.local))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::Stats { reply } => {
                self.stats.connected = self.swarm.connected_peers().count() as u64;
                let bytes = overlay_bytes(&self.metrics);
                (self.stats.overlay_in, self.stats.overlay_out) = bytes.all;
                (self.stats.gossipsub_in, self.stats.gossipsub_out) = bytes.gossipsub;
                let _ = reply.send(self.stats);
            }
            Command::Protect { nodes } => {
                self.protected = nodes.into_iter().collect();
                self.connect_protected();
            }
            Command::Resync { stream } => {
                self.synced.remove(&stream);
                self.sync_from_followers(&stream);
            }
        }
    }

    fn subscribe(&mut self, stream: &StreamId) -> Result<(), ClientError> {
        let topic = topic(stream);
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if gossipsub
            .subscribe(&topic)
            .map_err(|e| ClientError::Subscribe(e.to_string()))?
        {
            gossipsub
                .set_topic_params(topic.clone(), topic_score())
                .map_err(|e| ClientError::Subscribe(e.to_string()))?;
            self.streams.insert(topic.hash(), stream.clone());
            info!(%stream, "following stream");
            self.sync_from_followers(stream);
        }
        Ok(())
    }

    /// Asks every peer following `stream` for its records (within [`SYNC_PEERS`]).
    fn sync_from_followers(&mut self, stream: &StreamId) {
        let hash = topic(stream).hash();
        let following: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .map(|(p, _)| *p)
            .collect();
        for peer in following {
            self.sync_from(peer, stream);
        }
    }

    fn publish(&mut self, record: NodeRecord) -> Result<(), ClientError> {
        let me = node_id(&self.local);
        if record.node.id != me && record.node.via != Some(me) {
            return Err(ClientError::NotOurs(record.node.id));
        }
        self.subscribe(&record.stream)?;
        let key = (record.stream.clone(), record.node.id);
        match self.try_publish(&record) {
            Ok(()) => {
                self.queued.remove(&key);
                Ok(())
            }
            Err(PublishError::NoPeersSubscribedToTopic | PublishError::AllQueuesFull(_)) => {
                // Pitfall: nobody has our subscription yet; retry on the next tick.
                if self.queued.len() >= MAX_QUEUED_RECORDS && !self.queued.contains_key(&key) {
                    return Err(ClientError::Publish("too many records queued".into()));
                }
                if self
                    .queued
                    .get(&key)
                    .is_none_or(|old| old.node.seq < record.node.seq)
                {
                    self.queued.insert(key, record);
                }
                Ok(())
            }
            Err(e) => Err(ClientError::Publish(e.to_string())),
        }
    }

    fn try_publish(&mut self, record: &NodeRecord) -> Result<(), PublishError> {
        let sealed = self.seal(record);
        // Held like the records we accepted, so that a sync asked of us hands on ours too (a
        // newcomer's bootstrap node is often the root, whose record it needs first).
        self.seqs.accepted(record, sealed.clone(), SYNC_MAX_AGE);
        let len = sealed.len() as u64;
        let result = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic(&record.stream), sealed);
        match result {
            // The same bytes were published already: nothing to do.
            Ok(_) | Err(PublishError::Duplicate) => {
                self.stats.published += 1;
                self.stats.bytes_out += len;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Our record in its envelope. Signing with our own ed25519 key cannot fail.
    fn seal(&self, record: &NodeRecord) -> Vec<u8> {
        let mut addrs: Vec<Multiaddr> = Vec::new();
        if self.advertise_addrs {
            addrs.extend(self.swarm.external_addresses().cloned());
            for a in &self.own_addrs {
                if !addrs.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        super::envelope::seal(&self.keypair, &record.encode(), &addrs).unwrap_or_default()
    }

    fn publish_queued(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        for (key, record) in queued {
            match self.try_publish(&record) {
                Ok(()) => debug!(node = %record.node.id, "published queued record"),
                Err(PublishError::NoPeersSubscribedToTopic | PublishError::AllQueuesFull(_)) => {
                    self.queued.insert(key, record);
                }
                Err(e) => warn!(node = %record.node.id, error = %e, "dropping queued record"),
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                if self.relay_server && usable(&address) && !is_relayed(&address) {
                    self.swarm.add_external_address(address.clone());
                }
                if usable(&address) && !is_relayed(&address) && !self.own_addrs.contains(&address) {
                    self.own_addrs.push(address.clone());
                    // Loopback last: others dial these in order.
                    self.own_addrs.sort_by_key(is_loopback);
                }
                let addr = with_peer_id(address, self.local);
                info!(%addr, "listening");
                self.notify(Event::Listening { addr });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                let node = node_id(&peer_id);
                self.stats.opened += 1;
                self.routes.insert(node, peer_id);
                self.listen_through(peer_id);
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if num_established.get() == 1 {
                    self.connected_since
                        .insert(peer_id, std::time::Instant::now());
                    self.notify(Event::PeerConnected {
                        peer: peer_id,
                        node,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.notify(Event::PeerDisconnected {
                    peer: peer_id,
                    node: node_id(&peer_id),
                });
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let lost: Vec<PeerId> = self
                    .reserved
                    .iter()
                    .filter(|(_, l)| **l == listener_id)
                    .map(|(p, _)| *p)
                    .collect();
                for relay in lost {
                    debug!(%relay, ?reason, "relay listener closed");
                    self.reserved.remove(&relay);
                    // Try another one; this relay stays a candidate only if identify says so again.
                    self.relays.remove(&relay);
                    self.reserve_relays();
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                let to_bootstrap = match peer_id {
                    // Only bootstrap nodes given without /p2p/PEER-ID are dialled by address.
                    None => true,
                    Some(p) => self.bootstrap.iter().any(|b| b.peer == Some(p)),
                };
                if to_bootstrap && self.swarm.connected_peers().next().is_none() {
                    warn!(
                        %error,
                        "cannot reach the bootstrap node (--bootstrap): is the address right, \
                         does that node run, and is its port open? Retrying every {} s",
                        BOOTSTRAP_RETRY.as_secs()
                    );
                } else {
                    debug!(peer = ?peer_id, %error, "dial failed");
                }
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, &message_id, message),
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic, peer_id }) => {
                if let Some(stream) = self.streams.get(&topic).cloned() {
                    self.sync_from(peer_id, &stream);
                    if !self.queued.is_empty() {
                        self.publish_queued();
                    }
                }
            }
            BehaviourEvent::Tree(event) => self.on_tree(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info);
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                info!(status = ?new, "reachability");
                self.private = new == autonat::NatStatus::Private;
                self.reserve_relays();
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            }) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                self.on_lookup(id, peers, step.last);
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                self.routes.insert(node_id(&peer), peer);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    let _ = self
                        .swarm
                        .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                }
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        // Kademlia learns addresses only from us: add the listen addresses of peers that serve
        // our DHT, then look for more peers once.
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in &info.listen_addrs {
                if usable(addr) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                }
            }
            if !self.bootstrap_started {
                self.bootstrap_started = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
            }
        }
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
            && (self.relays.len() < MAX_RELAY_CANDIDATES || self.relays.contains_key(&peer))
            && let Some(addr) = info
                .listen_addrs
                .into_iter()
                .find(|a| usable(a) && !is_relayed(a))
        {
            self.relays.insert(peer, addr);
            self.reserve_relays();
        }
    }

    /// Validates a gossip message, reports the verdict to gossipsub (which forwards only
    /// accepted messages and scores rejections), and hands an accepted record to the driver.
    fn on_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: &gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        self.stats.bytes_in += message.data.len() as u64;
        self.stats.gossiped_in += message.data.len() as u64;
        let stream = self.streams.get(&message.topic);
        let verdict = validate(stream, &message.data, &self.seqs);
        self.stats.count(&verdict);
        let acceptance = match &verdict {
            Verdict::Accept { .. } => MessageAcceptance::Accept,
            Verdict::Reject(why) => {
                debug!(source = ?message.source, via = %propagation_source, ?why, "rejected record");
                MessageAcceptance::Reject
            }
            Verdict::Ignore(_) => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, &propagation_source, acceptance);
        if let Verdict::Accept {
            record,
            signer,
            addrs,
        } = verdict
        {
            self.deliver_record(record, signer, addrs, message.data);
        }
    }

    /// Hands a validated record to the driver and remembers it (seq, envelope) if it got
    /// there.
    fn deliver_record(
        &mut self,
        record: NodeRecord,
        signer: PeerId,
        addrs: Vec<Multiaddr>,
        envelope: Vec<u8>,
    ) {
        if signer == self.local {
            return; // our own, handed back by a sync: the driver knows it better
        }
        self.routes.insert(record.node.id, signer);
        let addrs: Vec<Multiaddr> = addrs.into_iter().filter(usable).collect();
        if !addrs.is_empty() {
            self.addrs.insert(signer, addrs);
        }
        let accepted = record.clone();
        match self.events.try_send(Event::Record {
            from: signer,
            record,
        }) {
            Ok(()) => self.seqs.accepted(&accepted, envelope, SYNC_MAX_AGE),
            Err(mpsc::error::TrySendError::Full(_)) => self.stats.dropped_records += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Asks `peer` for the records of `stream` it holds, unless [`SYNC_PEERS`] were asked.
    fn sync_from(&mut self, peer: PeerId, stream: &StreamId) {
        let asked = self.synced.entry(stream.clone()).or_default();
        if asked.len() >= SYNC_PEERS || asked.contains(&peer) || peer == self.local {
            return;
        }
        asked.push(peer);
        debug!(%peer, %stream, "asking for the stream's records");
        let request = super::protocol::Request {
            stream: stream.clone(),
            body: super::protocol::Body::Sync,
            from: None,
            to: None,
        };
        let id = self.swarm.behaviour_mut().tree.send_request(&peer, request);
        self.syncs.insert(id, stream.clone());
    }

    /// Checks each record of a sync answer as if it came from gossip.
    fn on_sync(&mut self, stream: StreamId, records: Vec<serde_bytes::ByteBuf>) {
        let topic_stream = self.streams.values().find(|s| **s == stream).cloned();
        let mut accepted = 0;
        for data in records.into_iter().take(super::protocol::MAX_SYNC_RECORDS) {
            self.stats.bytes_in += data.len() as u64;
            let verdict = validate(topic_stream.as_ref(), &data, &self.seqs);
            self.stats.count(&verdict);
            if let Verdict::Accept {
                record,
                signer,
                addrs,
            } = verdict
            {
                accepted += 1;
                self.deliver_record(record, signer, addrs, data.into_vec());
            }
        }
        self.stats.synced += accepted;
        debug!(%stream, accepted, "sync answered");
        self.tend();
    }

    /// The records we hand on to a newcomer.
    fn sync_answer(&self, stream: &StreamId) -> super::protocol::Ack {
        let records = self
            .seqs
            .recent(stream, super::protocol::MAX_SYNC_RECORDS)
            .into_iter()
            .map(serde_bytes::ByteBuf::from)
            .collect();
        super::protocol::Ack::Records { records }
    }

    /// Hands an informational event to the driver, dropping it when the channel is full.
    fn notify(&mut self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.stats.dropped_events += 1;
        }
    }
}

/// Whether an address a peer announces is worth remembering (not an unspecified IP).
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

pub(super) fn usable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// Why a listen address was refused, with what to do for the usual cause (the port is taken).
/// libp2p's `TransportError::Other` displays as nothing; its source says what happened.
fn listen_reason(e: &libp2p::TransportError<std::io::Error>) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut in_use = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            in_use |= io.kind() == std::io::ErrorKind::AddrInUse;
        }
        let text = s.to_string();
        // libp2p-tcp wraps the io::Error in its own type, so look at the text too.
        in_use |= text.contains("ddress already in use");
        if !text.is_empty() && !reason.contains(&text) {
            if !reason.is_empty() {
                reason.push_str(": ");
            }
            reason.push_str(&text);
        }
        source = s.source();
    }
    if in_use {
        reason = "the port is already in use (another treecast, or another program): stop it \
                  or choose another port with --p2p-listen"
            .to_owned();
    } else if reason.is_empty() {
        reason = format!("{e:?}");
    }
    reason
}
