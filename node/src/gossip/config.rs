//! The gossip overlay's configuration: one validated value and its builder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

use super::addr::{Bootstrap, default_listen, is_relayed, transport_of};

/// Everything the overlay needs to start. Build it with [`GossipConfig::builder`]; the defaults
/// are documented on each builder method.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub(crate) keypair: Keypair,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Bootstrap>,
    pub(crate) mdns: bool,
    pub(crate) upnp: bool,
    pub(crate) relay_server: bool,
    pub(crate) auto_relay: bool,
    pub(crate) dht_server: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) publish_retry: Duration,
    pub(crate) command_capacity: usize,
    pub(crate) event_capacity: usize,
    pub(crate) seq_capacity: usize,
    pub(crate) colocation_whitelist: Vec<IpAddr>,
    pub(crate) max_peers: usize,
    pub(crate) advertise_addrs: bool,
}

impl GossipConfig {
    /// A builder with the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(GossipConfig {
            keypair: Keypair::generate_ed25519(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            upnp: false,
            relay_server: false,
            auto_relay: true,
            dht_server: true,
            idle_timeout: Duration::from_secs(120),
            heartbeat: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_request_bytes: 64 * 1024,
            max_peers: 16,
            advertise_addrs: true,
            publish_retry: Duration::from_millis(250),
            command_capacity: 64,
            event_capacity: 1024,
            seq_capacity: 65_536,
            colocation_whitelist: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        })
    }

    /// This node's libp2p identity.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The addresses to listen on.
    pub fn listen(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// The bootstrap nodes.
    pub fn bootstrap(&self) -> &[Bootstrap] {
        &self.bootstrap
    }
}

/// Builds a [`GossipConfig`]; [`ConfigBuilder::build`] checks it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(GossipConfig);

impl ConfigBuilder {
    /// The libp2p identity (default: a fresh ed25519 key, so a new peer id per run).
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.0.keypair = keypair;
        self
    }

    /// Adds a listen address. Default when none is given: `/ip4/0.0.0.0/tcp/0` and
    /// `/ip4/0.0.0.0/udp/0/quic-v1` (a free port of each on every interface). A relayed
    /// address (`<relay address>/p2p/<relay>/p2p-circuit`) makes the node reachable through
    /// that relay.
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.0.listen.push(addr);
        self
    }

    /// Adds a bootstrap node (default: none; then only mDNS finds peers).
    pub fn bootstrap(mut self, node: Bootstrap) -> Self {
        self.0.bootstrap.push(node);
        self
    }

    /// Whether to discover peers on the LAN with mDNS (default: on).
    pub fn mdns(mut self, on: bool) -> Self {
        self.0.mdns = on;
        self
    }

    /// Whether to ask the router for port mappings with UPnP (default: off).
    pub fn upnp(mut self, on: bool) -> Self {
        self.0.upnp = on;
        self
    }

    /// Whether to serve as a circuit relay (v2) for nodes behind NAT (default: off). A relay
    /// server treats its listen addresses as its external addresses: libp2p's relay refuses
    /// reservations until it has a confirmed external address, and a node offering to relay
    /// is expected to have a public one.
    pub fn relay_server(mut self, on: bool) -> Self {
        self.0.relay_server = on;
        self
    }

    /// Whether to reserve a slot on up to two relays when AutoNAT finds this node is not
    /// publicly reachable, so others reach it through them (default: on).
    pub fn auto_relay(mut self, on: bool) -> Self {
        self.0.auto_relay = on;
        self
    }

    /// Whether to answer Kademlia queries (default: on). libp2p's automatic mode only serves
    /// once an external address is confirmed, which never happens on a LAN or loopback.
    pub fn dht_server(mut self, on: bool) -> Self {
        self.0.dht_server = on;
        self
    }

    /// Whether this node's records carry its addresses (default: on), so whoever holds a record
    /// can dial its author without a DHT walk. Off: peers find it through the DHT.
    pub fn advertise_addrs(mut self, on: bool) -> Self {
        self.0.advertise_addrs = on;
        self
    }

    /// How many peers to stay connected to (at least 8; default 16). gossipsub keeps a
    /// connection open for as long as its streams are, so without a bound every peer a DHT
    /// walk ever reached stays connected and the overlay becomes a full mesh. Beyond this many,
    /// the event loop closes connections that are not in a gossipsub mesh, not to a protected
    /// node (tree neighbours, see `Client::protect`), not to a relay we listen through and not
    /// carrying a direct message.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.0.max_peers = n.max(8);
        self
    }

    /// How long a connection without open streams stays up (default 120 s; libp2p's 10 s
    /// would drop tree neighbours between two record refreshes).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.0.idle_timeout = d;
        self
    }

    /// The gossipsub heartbeat (default 1 s).
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.0.heartbeat = d;
        self
    }

    /// How long a direct message waits for its acknowledgement (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.0.request_timeout = d;
        self
    }

    /// The largest direct message accepted, SDP included (default 64 KiB, 1 KiB..=1 MiB).
    pub fn max_request_bytes(mut self, n: usize) -> Self {
        self.0.max_request_bytes = n;
        self
    }

    /// How long a record waits before it is published again when no peer follows its topic
    /// yet (default 250 ms).
    pub fn publish_retry(mut self, d: Duration) -> Self {
        self.0.publish_retry = d;
        self
    }

    /// Capacity of the command channel from [`super::Client`]s (default 64).
    pub fn command_capacity(mut self, n: usize) -> Self {
        self.0.command_capacity = n;
        self
    }

    /// Capacity of the event channel to the driver (default 1024).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.0.event_capacity = n;
        self
    }

    /// How many (stream, node) last-seq entries are remembered for replay detection
    /// (default 65 536).
    pub fn seq_capacity(mut self, n: usize) -> Self {
        self.0.seq_capacity = n;
        self
    }

    /// Addresses exempt from gossipsub's many-peers-per-IP penalty (default: the loopback
    /// addresses, so local test swarms and the swarm harness work).
    pub fn colocation_whitelist(mut self, ips: Vec<IpAddr>) -> Self {
        self.0.colocation_whitelist = ips;
        self
    }

    /// Checks the configuration.
    pub fn build(mut self) -> Result<GossipConfig, ConfigError> {
        let c = &mut self.0;
        if c.listen.is_empty() {
            c.listen = default_listen();
        }
        for addr in &c.listen {
            if transport_of(addr).is_none() && !is_relayed(addr) {
                return Err(ConfigError::Listen(addr.clone()));
            }
        }
        for (name, d) in [
            ("idle timeout", c.idle_timeout),
            ("heartbeat", c.heartbeat),
            ("request timeout", c.request_timeout),
            ("publish retry", c.publish_retry),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, n) in [
            ("command capacity", c.command_capacity),
            ("event capacity", c.event_capacity),
            ("seq capacity", c.seq_capacity),
        ] {
            if n == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !(1024..=1024 * 1024).contains(&c.max_request_bytes) {
            return Err(ConfigError::RequestBytes(c.max_request_bytes));
        }
        Ok(self.0)
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A listen address without a TCP or QUIC transport over IP.
    #[error(
        "cannot listen on {0}: use /ip4/ADDR/tcp/PORT or /ip4/ADDR/udp/PORT/quic-v1 (or ip6), \
         or RELAY-ADDR/p2p/RELAY-ID/p2p-circuit"
    )]
    Listen(Multiaddr),
    /// A duration or capacity of zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// Request size limit out of range.
    #[error("max request bytes {0} is outside 1 KiB..=1 MiB")]
    RequestBytes(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::addr::Transport;

    #[test]
    fn defaults_listen_on_tcp_and_quic_and_bad_values_are_refused() {
        let c = GossipConfig::builder().build().expect("defaults are valid");
        let kinds: Vec<_> = c.listen().iter().filter_map(transport_of).collect();
        assert_eq!(kinds, [Transport::Tcp, Transport::Quic]);
        let bad: Multiaddr = "/ip4/127.0.0.1/udp/1".parse().expect("multiaddr");
        assert_eq!(
            GossipConfig::builder().listen(bad.clone()).build().err(),
            Some(ConfigError::Listen(bad))
        );
        assert_eq!(
            GossipConfig::builder().event_capacity(0).build().err(),
            Some(ConfigError::Zero("event capacity"))
        );
        assert_eq!(
            GossipConfig::builder().max_request_bytes(10).build().err(),
            Some(ConfigError::RequestBytes(10))
        );
    }
}
