//! The server's configuration: one validated value, built with [`Config::builder`].

use std::net::SocketAddr;
use std::time::Duration;

use treecast_tree::NodeId;

use crate::protocol::MAX_MESSAGE_BYTES;

/// Everything `treecast-signal` is configured with. Build it with [`Config::builder`].
#[derive(Clone)]
pub struct Config {
    /// Where the HTTP server (pages, API, WebSocket) listens. Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// libp2p multiaddrs of native nodes to join the gossip through (besides `--bootstrap`).
    /// Default none.
    pub bootstrap: Vec<String>,
    /// The broadcaster's HTTP base URL (`http://HOST:PORT`): WHIP and WHEP requests here are
    /// handed to it. Default none (WHIP and WHEP answer 501).
    pub origin: Option<String>,
    /// The Bearer token WHIP publishers must present. Default none (WHIP refused).
    pub whip_token: Option<String>,
    /// This server's node id, the `via` of the records it publishes for browsers: the node id
    /// of its libp2p peer when it runs with the overlay. Default: random.
    pub server_id: Option<NodeId>,
    /// STUN/TURN URLs handed to browsers. Default `stun:stun.l.google.com:19302`.
    pub ice_servers: Vec<String>,
    /// Per-connection and per-address limits.
    pub limits: Limits,
}

/// Limits that keep one client from hurting the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message, bytes. Default 64 KiB (at most that).
    pub max_message_bytes: usize,
    /// Sustained client messages per second per connection. Default 20.
    pub messages_per_second: u32,
    /// Burst above the sustained rate. Default 60 (an offer plus a burst of candidates).
    pub burst: u32,
    /// Open WebSocket connections per IP address. Default 32.
    pub connections_per_addr: usize,
    /// `join`s per IP address per minute. Default 60.
    pub joins_per_addr_per_minute: usize,
    /// Open WebSocket connections in all. Default 10 000.
    pub connections: usize,
    /// Interval of WebSocket pings. Default 15 s.
    pub ping_interval: Duration,
    /// A connection silent this long (no frame, no pong) is closed. Default 45 s.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            messages_per_second: 20,
            burst: 60,
            connections_per_addr: 32,
            joins_per_addr_per_minute: 60,
            connections: 10_000,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// The TOML configuration file (`treecast-signal --config FILE`): every key optional, defaults
/// as on [`Config`]; command-line flags override it.
///
/// ```toml
/// http = "0.0.0.0:8080"
/// bootstrap = ["/ip4/10.0.0.2/udp/4001/quic-v1"]
/// whip_token = "change-me"
/// origin = "http://127.0.0.1:8090"
/// ice_servers = ["stun:stun.l.google.com:19302"]
///
/// [limits]
/// max_message_bytes = 65536
/// messages_per_second = 20
/// burst = 60
/// connections_per_addr = 32
/// joins_per_addr_per_minute = 60
/// connections = 10000
/// ping_interval_s = 15
/// idle_timeout_s = 45
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    http: Option<SocketAddr>,
    #[serde(default)]
    bootstrap: Vec<String>,
    whip_token: Option<String>,
    origin: Option<String>,
    ice_servers: Option<Vec<String>>,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_message_bytes: Option<usize>,
    messages_per_second: Option<u32>,
    burst: Option<u32>,
    connections_per_addr: Option<usize>,
    joins_per_addr_per_minute: Option<usize>,
    connections: Option<usize>,
    ping_interval_s: Option<u64>,
    idle_timeout_s: Option<u64>,
}

impl FileConfig {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File(e.to_string()))
    }

    /// A builder holding the defaults overridden by this file.
    pub fn builder(self) -> ConfigBuilder {
        let mut b = Config::builder();
        if let Some(http) = self.http {
            b = b.http(http);
        }
        for addr in self.bootstrap {
            b = b.bootstrap(addr);
        }
        b = b.whip_token(self.whip_token);
        b = b.origin(self.origin);
        if let Some(urls) = self.ice_servers {
            b = b.ice_servers(urls);
        }
        let d = Limits::default();
        let f = self.limits;
        b.limits(Limits {
            max_message_bytes: f.max_message_bytes.unwrap_or(d.max_message_bytes),
            messages_per_second: f.messages_per_second.unwrap_or(d.messages_per_second),
            burst: f.burst.unwrap_or(d.burst),
            connections_per_addr: f.connections_per_addr.unwrap_or(d.connections_per_addr),
            joins_per_addr_per_minute: f
                .joins_per_addr_per_minute
                .unwrap_or(d.joins_per_addr_per_minute),
            connections: f.connections.unwrap_or(d.connections),
            ping_interval: f
                .ping_interval_s
                .map_or(d.ping_interval, Duration::from_secs),
            idle_timeout: f.idle_timeout_s.map_or(d.idle_timeout, Duration::from_secs),
        })
    }
}

/// A configuration that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit of zero, or a message size above the protocol's.
    #[error("limit {0} is out of range")]
    Limit(&'static str),
    /// An empty WHIP token.
    #[error("the WHIP token is empty")]
    EmptyToken,
    /// The configuration file does not parse.
    #[error("configuration file: {0}")]
    File(String),
    /// An ICE server URL that is not `stun:`, `turn:` or `turns:`.
    #[error("ICE server URL {0:?} must start with stun:, turn: or turns:")]
    IceServer(String),
    /// The origin is not `http://HOST:PORT`.
    #[error("origin {0:?} must be http://HOST:PORT (the broadcaster's --http address)")]
    Origin(String),
}

impl Config {
    /// A builder with the documented defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            cfg: Config {
                http: SocketAddr::from(([127, 0, 0, 1], 8080)),
                bootstrap: Vec::new(),
                whip_token: None,
                origin: None,
                server_id: None,
                ice_servers: vec!["stun:stun.l.google.com:19302".to_owned()],
                limits: Limits::default(),
            },
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token (GUIDE 4.9).
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("bootstrap", &self.bootstrap)
            .field("whip_token", &self.whip_token.as_ref().map(|_| "<set>"))
            .field("origin", &self.origin)
            .field("server_id", &self.server_id)
            .field("ice_servers", &self.ice_servers)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    cfg: Config,
}

impl ConfigBuilder {
    /// The HTTP listen address (`127.0.0.1:0` in tests).
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.cfg.http = addr;
        self
    }

    /// Adds a bootstrap multiaddr.
    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.cfg.bootstrap.push(addr.into());
        self
    }

    /// The WHIP Bearer token (`None` leaves the current one).
    pub fn whip_token(mut self, token: Option<String>) -> Self {
        if token.is_some() {
            self.cfg.whip_token = token;
        }
        self
    }

    /// The broadcaster's HTTP base URL WHIP and WHEP are handed to (`None` leaves the
    /// current one).
    pub fn origin(mut self, url: Option<String>) -> Self {
        if let Some(url) = url {
            self.cfg.origin = Some(url.trim_end_matches('/').to_owned());
        }
        self
    }

    /// This server's node id.
    pub fn server_id(mut self, id: NodeId) -> Self {
        self.cfg.server_id = Some(id);
        self
    }

    /// Replaces the ICE server URLs (empty: host candidates only, fine on a LAN).
    pub fn ice_servers(mut self, urls: Vec<String>) -> Self {
        self.cfg.ice_servers = urls;
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Checks and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let l = &self.cfg.limits;
        if l.max_message_bytes == 0 || l.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(ConfigError::Limit("max_message_bytes"));
        }
        for (name, v) in [
            ("messages_per_second", l.messages_per_second as usize),
            ("burst", l.burst as usize),
            ("connections_per_addr", l.connections_per_addr),
            ("joins_per_addr_per_minute", l.joins_per_addr_per_minute),
            ("connections", l.connections),
        ] {
            if v == 0 {
                return Err(ConfigError::Limit(name));
            }
        }
        if l.ping_interval.is_zero() || l.idle_timeout <= l.ping_interval {
            return Err(ConfigError::Limit("idle_timeout must exceed ping_interval"));
        }
        if self.cfg.whip_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        if let Some(origin) = &self.cfg.origin
            && crate::forward::Origin::parse(origin).is_none()
        {
            return Err(ConfigError::Origin(origin.clone()));
        }
        if let Some(bad) = self.cfg.ice_servers.iter().find(|u| {
            !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:"))
        }) {
            return Err(ConfigError::IceServer(bad.clone()));
        }
        Ok(self.cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_and_bad_values_do_not() {
        assert!(Config::builder().build().is_ok());
        let zero = Limits {
            burst: 0,
            ..Limits::default()
        };
        assert_eq!(
            Config::builder().limits(zero).build().err(),
            Some(ConfigError::Limit("burst"))
        );
        assert_eq!(
            Config::builder()
                .whip_token(Some(String::new()))
                .build()
                .err(),
            Some(ConfigError::EmptyToken)
        );
        assert!(
            Config::builder()
                .ice_servers(vec!["http://x".into()])
                .build()
                .is_err()
        );
        let cfg = Config::builder()
            .whip_token(Some("secret".into()))
            .build()
            .expect("valid");
        assert!(!format!("{cfg:?}").contains("secret"));
    }

    #[test]
    fn the_file_maps_onto_the_config() {
        let text = r#"
            http = "0.0.0.0:9000"
            whip_token = "t"
            ice_servers = []
            [limits]
            burst = 5
            idle_timeout_s = 100
        "#;
        let cfg = FileConfig::parse(text)
            .expect("parses")
            .builder()
            .build()
            .expect("valid");
        assert_eq!(cfg.http, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(cfg.whip_token.as_deref(), Some("t"));
        assert!(cfg.ice_servers.is_empty());
        assert_eq!(cfg.limits.burst, 5);
        assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(100));
        assert_eq!(
            cfg.limits.messages_per_second, 20,
            "unset keys keep their defaults"
        );
        assert!(
            FileConfig::parse("htp = 1").is_err(),
            "unknown keys are refused"
        );
    }
}
