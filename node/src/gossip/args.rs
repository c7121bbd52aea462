//! The command-line flags of the gossip overlay.

use libp2p::Multiaddr;

use super::addr::Bootstrap;
use super::config::{ConfigBuilder, GossipConfig};

/// The gossip overlay's command-line flags; map them onto a [`GossipConfig`] with
/// [`Args::config`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// Address for the gossip overlay to listen on (repeatable). Default: a free TCP port and a
    /// free QUIC port on all interfaces (/ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1).
    /// The node's full address, with /p2p/PEER-ID, is printed at start-up. A relayed address,
    /// RELAY-ADDR/p2p/RELAY-ID/p2p-circuit, makes the node reachable through that relay.
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    pub p2p_listen: Vec<Multiaddr>,

    /// A node to join the overlay through (repeatable), e.g.
    /// /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW... as printed by that node at start-up. The
    /// /p2p/PEER-ID suffix is optional; /dns4/HOST/tcp/PORT and QUIC addresses work too.
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

    /// Answer the overlay's DHT queries (Kademlia server mode). The default: only nodes others
    /// join through serve, i.e. nodes started without --bootstrap and relay servers; every
    /// other node is a DHT client, which every DHT walk would otherwise dial (in a swarm of
    /// hundreds, a connection from nearly everyone to every newcomer).
    #[arg(long)]
    pub dht_server: bool,
}

impl Args {
    /// A builder with these flags applied; add the identity and call `build`.
    pub fn config(&self) -> ConfigBuilder {
        let mut b = GossipConfig::builder()
            .mdns(!self.no_mdns)
            .upnp(self.upnp)
            .relay_server(self.relay_server)
            .dht_server(self.dht_server || self.relay_server || self.bootstrap.is_empty());
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
        // A node joining through others is a DHT client unless told otherwise; a first node
        // (no --bootstrap) serves.
        assert!(!c.dht_server);
        let first = Cli::try_parse_from(["treecast"]).expect("valid flags");
        assert!(
            first
                .gossip
                .config()
                .build()
                .expect("valid config")
                .dht_server
        );
        let server = Cli::try_parse_from([
            "treecast",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/4001",
            "--dht-server",
        ])
        .expect("valid flags");
        assert!(
            server
                .gossip
                .config()
                .build()
                .expect("valid config")
                .dht_server
        );
        let err = Cli::try_parse_from(["treecast", "--bootstrap", "nonsense"])
            .expect_err("malformed bootstrap");
        assert!(
            err.to_string().contains("invalid bootstrap address"),
            "{err}"
        );
    }

    #[test]
    fn help_explains_the_flags() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        println!("{help}");
        for needle in [
            "--p2p-listen <MULTIADDR>",
            "--bootstrap <MULTIADDR>",
            "/p2p/PEER-ID",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
