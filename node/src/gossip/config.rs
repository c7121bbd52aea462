//! The gossip overlay's configuration: one validated value, its builder, and the CLI flags.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

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

/// The default listen addresses: a free TCP and a free QUIC port on every interface.
pub fn default_listen() -> Vec<Multiaddr> {
    vec![
        Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
            .with(Protocol::Tcp(0)),
        Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
            .with(Protocol::Udp(0))
            .with(Protocol::QuicV1),
    ]
}

/// A node to join the overlay through: its address and, if given, its peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The address without the `/p2p/<peer id>` suffix.
    pub addr: Multiaddr,
    /// The peer id from the `/p2p/` suffix; without it the node is dialled by address alone
    /// and learnt from the connection.
    pub peer: Option<PeerId>,
}

impl FromStr for Bootstrap {
    type Err = AddrError;

    /// Parses `/ip4/1.2.3.4/tcp/4001[/p2p/<peer id>]` (ip6, dns, dns4, dns6 and
    /// `/udp/PORT/quic-v1` work too).
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let full: Multiaddr =
            s.trim()
                .parse()
                .map_err(|e: libp2p::multiaddr::Error| AddrError::Syntax {
                    input: s.to_owned(),
                    reason: e.to_string(),
                })?;
        let mut addr = full.clone();
        let peer = match addr.pop() {
            Some(Protocol::P2p(peer)) => Some(peer),
            Some(other) => {
                addr.push(other);
                None
            }
            None => None,
        };
        // A relayed address (`…/p2p/<relay>/p2p-circuit`) names the relay in the middle.
        if !is_relayed(&addr) {
            if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                return Err(AddrError::P2pNotLast(s.to_owned()));
            }
            if transport_of(&addr).is_none() {
                return Err(AddrError::NoTransport(s.to_owned()));
            }
        }
        Ok(Bootstrap { addr, peer })
    }
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "{}", with_peer_id(self.addr.clone(), peer)),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A bootstrap address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not a multiaddr at all.
    #[error(
        "invalid bootstrap address {input:?}: {reason}; expected a multiaddr like \
         /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
    )]
    Syntax {
        /// What was given.
        input: String,
        /// What the multiaddr parser said.
        reason: String,
    },
    /// No IP/DNS host with a TCP or QUIC port.
    #[error(
        "invalid bootstrap address {0:?}: it needs a host and a port, like /ip4/ADDR/tcp/PORT, \
         /dns4/HOST/tcp/PORT or /ip4/ADDR/udp/PORT/quic-v1"
    )]
    NoTransport(String),
    /// A `/p2p/` component in the middle.
    #[error("invalid bootstrap address {0:?}: /p2p/<peer id> may only come last")]
    P2pNotLast(String),
}

/// `addr` ending in `/p2p/<peer>`: the form other nodes pass to `--bootstrap`.
pub fn with_peer_id(mut addr: Multiaddr, peer: PeerId) -> Multiaddr {
    if !matches!(addr.iter().last(), Some(Protocol::P2p(p)) if p == peer) {
        addr.push(Protocol::P2p(peer));
    }
    addr
}

/// The transports treecast speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Quic,
}

/// Which transport `addr` (host then port, nothing else) uses, if one we speak.
pub(crate) fn transport_of(addr: &Multiaddr) -> Option<Transport> {
    let mut it = addr.iter();
    match it.next()? {
        Protocol::Ip4(_)
        | Protocol::Ip6(_)
        | Protocol::Dns(_)
        | Protocol::Dns4(_)
        | Protocol::Dns6(_) => {}
        _ => return None,
    }
    let t = match (it.next()?, it.next()) {
        (Protocol::Tcp(_), None) => return Some(Transport::Tcp),
        (Protocol::Udp(_), Some(Protocol::QuicV1)) => Transport::Quic,
        _ => return None,
    };
    it.next().is_none().then_some(t)
}

/// `…/p2p/<relay>/p2p-circuit`: reached through a relay.
fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The gossip overlay's command-line flags; map them onto a [`GossipConfig`] with
/// [`Args::config`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// Address for the gossip overlay to listen on (repeatable). Default: a free TCP port and a
    /// free QUIC port on all interfaces (/ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1).
    /// The node's full address, with /p2p/<peer id>, is printed at start-up.
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    pub p2p_listen: Vec<Multiaddr>,

    /// A node to join the overlay through (repeatable), e.g.
    /// /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW... as printed by that node at start-up. The
    /// /p2p/<peer id> suffix is optional; /dns4/HOST/tcp/PORT and QUIC addresses work too.
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<Bootstrap>,

    /// Do not look for other nodes on the local network (mDNS).
    #[arg(long)]
    pub no_mdns: bool,

    /// Ask the home router to forward the listen ports (UPnP), so nodes outside can dial in.
    #[arg(long)]
    pub upnp: bool,

    /// Relay overlay connections for nodes behind NAT (circuit relay v2). Use on nodes with a
    /// public address.
    #[arg(long)]
    pub relay_server: bool,
}

impl Args {
    /// A builder with these flags applied; add the identity and call `build`.
    pub fn config(&self) -> ConfigBuilder {
        let mut b = GossipConfig::builder()
            .mdns(!self.no_mdns)
            .upnp(self.upnp)
            .relay_server(self.relay_server);
        for addr in &self.p2p_listen {
            b = b.listen(addr.clone());
        }
        for node in &self.bootstrap {
            b = b.bootstrap(node.clone());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gossip: Args,
    }

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn bootstrap_with_and_without_peer_id() {
        let b: Bootstrap = format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}")
            .parse()
            .expect("valid");
        assert_eq!(b.addr.to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(b.peer.map(|p| p.to_string()), Some(PEER.to_owned()));
        assert_eq!(b.to_string(), format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"));
        let b: Bootstrap = "/dns4/example.org/udp/4001/quic-v1".parse().expect("valid");
        assert_eq!(b.peer, None);
    }

    #[test]
    fn malformed_bootstrap_addresses_say_why() {
        let e = "127.0.0.1:4001"
            .parse::<Bootstrap>()
            .expect_err("not a multiaddr");
        assert!(matches!(e, AddrError::Syntax { .. }));
        assert!(e.to_string().contains("/ip4/203.0.113.7/tcp/4001"), "{e}");
        let e = "/ip4/127.0.0.1".parse::<Bootstrap>().expect_err("no port");
        assert_eq!(e, AddrError::NoTransport("/ip4/127.0.0.1".into()));
        let e = format!("/p2p/{PEER}/ip4/1.2.3.4/tcp/1")
            .parse::<Bootstrap>()
            .expect_err("p2p first");
        assert!(matches!(e, AddrError::P2pNotLast(_)));
        let e = "/ip4/1.2.3.4/tcp/1/p2p/notapeer"
            .parse::<Bootstrap>()
            .expect_err("bad peer id");
        assert!(matches!(e, AddrError::Syntax { .. }));
    }

    #[test]
    fn flags_map_onto_the_config() {
        let cli = Cli::try_parse_from([
            "treecast",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/4001",
            "--bootstrap",
            &format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}"),
            "--no-mdns",
        ])
        .expect("valid flags");
        let c = cli.gossip.config().build().expect("valid config");
        assert_eq!(c.listen().len(), 1);
        assert_eq!(c.bootstrap().len(), 2);
        assert!(!c.mdns);
        let err = Cli::try_parse_from(["treecast", "--bootstrap", "nonsense"])
            .expect_err("malformed bootstrap");
        assert!(
            err.to_string().contains("invalid bootstrap address"),
            "{err}"
        );
    }

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
