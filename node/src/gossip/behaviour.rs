//! The composed libp2p behaviour and the swarm built around it.

use std::fmt;
use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::metrics::Registry;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, autonat, dcutr, identify, kad, mdns, noise, ping, relay,
    tcp, upnp, yamux,
};
use sha2::{Digest, Sha256};

use super::config::GossipConfig;
use super::protocol::{Ack, MAX_SYNC_RECORDS, Request, TREE_PROTOCOL};

/// The Kademlia protocol of the treecast overlay: a private DHT, not the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/treecast/kad/1");

/// gossipsub mesh degree: the target, the low and the high water marks. Each mesh peer is
/// one more copy of every record in and out of every node; 3 keeps a mesh of thousands
/// connected, and IHAVE gossip to [`GOSSIP_LAZY`] more peers repairs what a copy misses.
/// The high mark bounds what others' grafts add to our 3: at 6 (session 8) a node received
/// about 2.6 copies of each record in the 20 s after three kills in a 200-relay swarm, at 4
/// about 1.9 (overlay bytes per record byte 6.4-6.6 -> 5.1-5.2).
const MESH_N: usize = 3;
const MESH_N_LOW: usize = 2;
const MESH_N_HIGH: usize = 4;
/// Peers outside the mesh told, each heartbeat, the ids of the records it carried lately.
const GOSSIP_LAZY: usize = 2;
/// Heartbeats a record's id is told in IHAVE (libp2p's default is 3; the record itself stays
/// in the message cache for IWANT the default 5).
const HISTORY_GOSSIP: usize = 2;
/// Length of a message id (a truncated SHA-256 of the sealed record). Ids fill the IHAVE
/// lists: 12 bytes instead of 20 cut a record's share of them by 40%. Suppressing an honest
/// record would take a second preimage of 96 bits of SHA-256 for a record not yet published;
/// a collision between two of one's own messages (2^48 work) only drops one's own message.
const MESSAGE_ID_LEN: usize = 12;

/// How often each connection is pinged (libp2p's default is 15 s). A node keeps a dozen
/// overlay connections, and at 15 s their pings were most of a quiet overlay's traffic
/// (about 200 of 277 B/s per node in a 60-relay swarm). Nothing waits on them: a lost parent
/// is noticed from media silence, and the connections stay open for gossipsub anyway.
const PING_INTERVAL: Duration = Duration::from_secs(60);

/// What `identify` announces as protocol version.
pub const IDENTIFY_PROTOCOL: &str = "/treecast/1";

/// The largest gossipsub frame accepted. Records are at most 256 bytes; the rest is room for
/// the signature, the key and control messages (IHAVE lists).
pub const MAX_TRANSMIT_BYTES: usize = 16 * 1024;

/// The largest direct-message response: a sync of [`MAX_SYNC_RECORDS`] sealed records.
const MAX_RESPONSE_BYTES: u64 =
    (MAX_SYNC_RECORDS * (super::envelope::MAX_ENVELOPE_BYTES + 8) + 1024) as u64;

/// Every protocol a treecast node speaks, composed.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Records, one topic per stream.
    pub(crate) gossipsub: gossipsub::Behaviour,
    /// Direct agent messages with an optional SDP.
    pub(crate) tree: request_response::cbor::Behaviour<Request, Ack>,
    /// Learns peers' listen addresses and protocols.
    pub(crate) identify: identify::Behaviour,
    /// Keeps connections alive and measures RTT.
    pub(crate) ping: ping::Behaviour,
    /// Finds peers from the bootstrap nodes on, and the addresses of a peer to message.
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    /// LAN discovery.
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Reach and be reached through a relay when behind NAT.
    pub(crate) relay_client: relay::client::Behaviour,
    /// Serve as a relay for others.
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    /// Upgrade relayed connections to direct ones (hole punching).
    pub(crate) dcutr: dcutr::Behaviour,
    /// Learn whether we are publicly reachable.
    pub(crate) autonat: autonat::Behaviour,
    /// Port mappings on the home router.
    pub(crate) upnp: Toggle<upnp::tokio::Behaviour>,
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A transport failed to initialise.
    #[error("transport: {0}")]
    Transport(String),
    /// A behaviour refused its configuration.
    #[error("behaviour: {0}")]
    Behaviour(String),
}

/// Builds the swarm: TCP and QUIC (noise, yamux), DNS, relay client, and [`Behaviour`], with
/// every connection's bytes and gossipsub's own counters in the returned registry (see
/// [`overlay_bytes`]).
/// Must be called inside a tokio runtime.
pub(crate) fn build_swarm(
    config: &GossipConfig,
) -> Result<(Swarm<Behaviour>, Registry), BuildError> {
    let mut registry = Registry::default();
    let transport = |e: &dyn fmt::Display| BuildError::Transport(e.to_string());
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| transport(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| transport(&e))?
        .with_bandwidth_metrics(&mut registry)
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, config, &mut registry).map_err(Into::into)
        })
        .map_err(|e| BuildError::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok((swarm, registry))
}

/// Bytes counted by libp2p on the overlay, in and out, since the swarm was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OverlayBytes {
    /// Every protocol (gossipsub messages and control, identify, ping, Kademlia, direct
    /// messages) on every connection, as the stream muxer sees them.
    pub(crate) all: (u64, u64),
    /// gossipsub messages: each record with its gossipsub framing, every copy a peer sent us
    /// or we sent a peer, duplicates included; no control messages, no muxer framing.
    pub(crate) gossipsub: (u64, u64),
}

/// Reads the counters libp2p keeps in `registry` (see [`OverlayBytes`]).
pub(crate) fn overlay_bytes(registry: &Registry) -> OverlayBytes {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return OverlayBytes::default();
    }
    let mut bytes = OverlayBytes::default();
    for line in text.lines() {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let value = value as u64;
        if line.starts_with("libp2p_bandwidth_bytes_total{") {
            if line.contains("direction=\"Inbound\"") {
                bytes.all.0 += value;
            } else if line.contains("direction=\"Outbound\"") {
                bytes.all.1 += value;
            }
        } else if line.starts_with("gossipsub_topic_msg_recv_bytes_unfiltered_total{") {
            bytes.gossipsub.0 += value;
        } else if line.starts_with("gossipsub_topic_msg_sent_bytes_total{") {
            bytes.gossipsub.1 += value;
        }
    }
    bytes
}

impl Behaviour {
    fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &GossipConfig,
        registry: &mut Registry,
    ) -> Result<Self, BuildError> {
        let peer = key.public().to_peer_id();
        let bad = |e: &dyn fmt::Display| BuildError::Behaviour(e.to_string());

        // Anonymous at the gossipsub layer: every record is already sealed by its author
        // (`envelope.rs`) and checked once per message by `validate`. gossipsub's own signature
        // was a second ed25519 signature per message, verified in its decoder for every copy
        // from every mesh peer, before duplicates are dropped: in a 50-node swarm that was 40%
        // of all CPU. Rejections still count against the peer that forwarded the message.
        //
        // A small mesh (3 peers, 2 to 4), short IHAVE lists and no flood publishing: records
        // are small and rare, and after a repair they are most of the overlay's traffic.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(config.heartbeat)
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N_LOW)
            .mesh_n_high(MESH_N_HIGH)
            .mesh_outbound_min(1)
            .gossip_lazy(GOSSIP_LAZY)
            .history_gossip(HISTORY_GOSSIP)
            .flood_publish(false)
            .validation_mode(ValidationMode::Anonymous)
            .validate_messages()
            .message_id_fn(message_id)
            .max_transmit_size(MAX_TRANSMIT_BYTES)
            .build()
            .map_err(|e| bad(&e))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config)
                .map_err(|e| bad(&e))?
                .with_metrics(
                    registry.sub_registry_with_prefix("gossipsub"),
                    Default::default(),
                );
        let score = gossipsub::PeerScoreParams {
            ip_colocation_factor_whitelist: config.colocation_whitelist.iter().copied().collect(),
            ..Default::default()
        };
        gossipsub
            .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
            .map_err(|e| bad(&e))?;

        let tree = request_response::cbor::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(config.max_request_bytes as u64)
                .set_response_size_maximum(MAX_RESPONSE_BYTES),
            [(TREE_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(config.request_timeout),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(format!("treecast/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true)
                .with_cache_size(256),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_query_timeout(Duration::from_secs(10));
        // No walk every 5 minutes: the DHT is for finding a peer we have no address of (the
        // rare direct message to a node we never met), and each walk dials dozens of peers,
        // each dial a handshake, an identify exchange and a gossipsub subscription.
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
        if config.dht_server {
            kad.set_mode(Some(kad::Mode::Server));
        }

        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer).map_err(|e| bad(&e))?)
        } else {
            None
        };
        let relay_server = config
            .relay_server
            .then(|| relay::Behaviour::new(peer, relay::Config::default()));
        let upnp = config.upnp.then(upnp::tokio::Behaviour::default);

        Ok(Behaviour {
            gossipsub,
            tree,
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            kad,
            mdns: mdns.into(),
            relay_client,
            relay_server: relay_server.into(),
            dcutr: dcutr::Behaviour::new(peer),
            autonat: autonat::Behaviour::new(peer, autonat::Config::default()),
            upnp: upnp.into(),
        })
    }
}

/// Score parameters of a stream topic, tuned for records: a few messages per node per
/// refresh period, so no penalty for delivering little (P3/P3b off, unlike the defaults, which
/// expect 20 messages in a window and would graylist honest peers of a quiet stream); a heavy
/// penalty for invalid messages (P4: three rejected records take a peer below the graylist
/// threshold, where its messages are dropped unseen), decaying within about a minute.
pub(crate) fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..gossipsub::TopicScoreParams::default()
    }
}

/// Message id: SHA-256 over the data (the sealed record), truncated to 20 bytes.
///
/// Over the content, so the same record reaching us on several paths is one message. The
/// envelope holds the author's key and signature, so a copy re-sealed by someone else is other
/// bytes and another id: it is rejected as forged without shadowing the honest copy in the
/// duplicate cache.
fn message_id(message: &gossipsub::Message) -> MessageId {
    let mut h = Sha256::new();
    h.update(&message.data);
    MessageId::new(&h.finalize()[..MESSAGE_ID_LEN])
}
