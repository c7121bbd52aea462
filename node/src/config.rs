//! A node's configuration: one validated value built by [`Config::new`]; the CLI maps onto it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::impairment::Impairment;
use crate::record::Recording;

/// Children a node feeds at most (the tree's fan-out).
pub const DEFAULT_MAX_CHILDREN: usize = 4;

/// A node's identity, unique per process run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// An id given as text (a tree node's id).
    pub fn from_string(id: String) -> Self {
        NodeId(id)
    }

    /// A fresh random id.
    pub fn random() -> Self {
        NodeId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a broadcast: `[A-Za-z0-9_-]{1,64}`, used in URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Validates a stream name.
    pub fn new(s: &str) -> Result<Self, ConfigError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(StreamId(s.to_owned()))
        } else {
            Err(ConfigError::BadStream(s.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a node does, as reported in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// The root: plays a source.
    Broadcast,
    /// Pulls from a parent and serves children.
    Relay,
    /// Pulls from a parent and records.
    View,
}

/// What a node does, with what it needs for it.
#[derive(Debug, Clone)]
pub enum Role {
    /// The root.
    Broadcast {
        /// Where the media comes from.
        source: Source,
    },
    /// Pulls from a parent and serves children.
    Relay {
        /// The parent's WHEP URL; `None`: find a parent in the gossiped tree.
        pull: Option<String>,
    },
    /// Pulls from a parent and records.
    View {
        /// The parent's WHEP URL; `None`: find a parent in the gossiped tree.
        pull: Option<String>,
        /// What to write.
        recording: Recording,
    },
}

impl Role {
    /// The role's name.
    pub fn name(&self) -> RoleName {
        match self {
            Role::Broadcast { .. } => RoleName::Broadcast,
            Role::Relay { .. } => RoleName::Relay,
            Role::View { .. } => RoleName::View,
        }
    }
}

/// The root's media source.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files played in a loop.
    Files {
        /// `.ivf` (VP8) or `.h264` (Annex-B).
        video: PathBuf,
        /// Ogg Opus, optional.
        audio: Option<PathBuf>,
        /// Frame rate for Annex-B input (which carries no timestamps).
        fps: u32,
    },
    /// Plain RTP over UDP (ffmpeg `-f rtp`, GStreamer `udpsink`).
    Rtp {
        /// Where video RTP arrives (port 0: any free port, printed at start).
        video: std::net::SocketAddr,
        /// The video codec (VP8 or H.264).
        codec: crate::codec::Codec,
        /// Where Opus RTP arrives, if any.
        audio: Option<std::net::SocketAddr>,
        /// Accept only this payload type on the video port (from an SDP file); any otherwise.
        video_pt: Option<u8>,
        /// Accept only this payload type on the audio port (from an SDP file); any otherwise.
        audio_pt: Option<u8>,
        /// The video format parameters from an SDP file (`a=fmtp`: H.264 profile, parameter
        /// sets), announced to children instead of our default.
        video_fmtp: Option<String>,
    },
    /// A WHIP publisher presenting this bearer token.
    Whip {
        /// The token (never logged).
        token: String,
    },
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (random by default).
    pub node_id: NodeId,
    /// The stream carried.
    pub stream: StreamId,
    /// What the node does.
    pub role: Role,
    /// Where to serve HTTP (WHEP and status); `None` for a viewer without a server.
    pub http: Option<SocketAddr>,
    /// The IP the WebRTC sockets bind (never the wildcard: pitfall 4). Defaults to the HTTP
    /// address's IP when that is concrete, else 127.0.0.1.
    pub ice_ip: IpAddr,
    /// Children beyond this are refused (503). Default 4.
    pub max_children: usize,
    /// Impairment applied to every WebRTC datagram this node sends (tests only).
    pub impairment: Option<Impairment>,
    /// New children start with the current GOP instead of waiting for a keyframe. Default on:
    /// a new viewer shows its first frame about three times sooner (`treecast bench --join`,
    /// `docs/media.md`), at the cost of starting up to a GOP behind live.
    pub fast_start: bool,
    /// The gossip overlay and the tree; `None` for a node outside any tree (tests, `bench`).
    pub tree: Option<TreeConfig>,
    /// Print nothing on stdout (a node among many in `treecast swarm`).
    pub quiet: bool,
    /// STUN/TURN servers, NAT IP and UDP ports of the peer connections. Default: host
    /// candidates on `ice_ip`, any free port.
    pub ice: crate::ice::IceConfig,
}

/// How a node takes part in the gossiped tree.
#[derive(Debug, Clone, Default)]
pub struct TreeConfig {
    /// The overlay's flags (listen addresses, bootstrap nodes, mDNS, UPnP, relay).
    pub gossip: crate::gossip::Args,
    /// Declared upload in kbit/s (`--upload-mbps`): caps the child slots offered once the
    /// stream's bitrate is known.
    pub upload_kbps: Option<u32>,
    /// Tests only: keep the declared capacity whatever the children's loss reports say (a node
    /// lying about its upload), so tests can show the others find it out.
    pub overstate_capacity: bool,
}

/// An invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The stream name is not usable in a URL.
    #[error("invalid stream name {0:?}: use 1-64 of A-Z a-z 0-9 - _")]
    BadStream(String),
    /// Broadcast and relay need an HTTP address to serve WHEP.
    #[error("{0:?} needs --http ADDR to serve WHEP")]
    NeedsHttp(RoleName),
    /// The WebRTC bind address is the wildcard.
    #[error("--ice-ip must be a concrete address, not {0}")]
    WildcardIce(IpAddr),
    /// max_children out of range.
    #[error("--max-children must be 1..=16, got {0}")]
    MaxChildren(usize),
    /// A pull URL that is not http://.
    #[error("--pull must be an http:// WHEP URL, got {0:?}")]
    BadPull(String),
    /// Neither a parent URL nor the tree.
    #[error("{0:?} needs a parent: --pull URL, or --bootstrap MULTIADDR to join the tree")]
    NoParent(RoleName),
}

impl Config {
    /// Validates and fills in defaults.
    pub fn new(
        stream: &str,
        role: Role,
        http: Option<SocketAddr>,
        ice_ip: Option<IpAddr>,
    ) -> Result<Config, ConfigError> {
        let stream = StreamId::new(stream)?;
        if http.is_none() && role.name() != RoleName::View {
            return Err(ConfigError::NeedsHttp(role.name()));
        }
        if let Role::Relay { pull: Some(pull) }
        | Role::View {
            pull: Some(pull), ..
        } = &role
            && !pull.starts_with("http://")
        {
            return Err(ConfigError::BadPull(pull.clone()));
        }
        let ice_ip = match ice_ip {
            Some(ip) if ip.is_unspecified() => return Err(ConfigError::WildcardIce(ip)),
            Some(ip) => ip,
            None => http
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        Ok(Config {
            node_id: NodeId::random(),
            stream,
            role,
            http,
            ice_ip,
            max_children: DEFAULT_MAX_CHILDREN,
            impairment: None,
            fast_start: true,
            tree: None,
            quiet: false,
            ice: crate::ice::IceConfig::default(),
        })
    }

    /// Takes part in the gossiped tree. A relay or viewer without `--pull` must.
    pub fn with_tree(mut self, tree: Option<TreeConfig>) -> Result<Config, ConfigError> {
        let pulls = matches!(
            &self.role,
            Role::Relay { pull: Some(_) } | Role::View { pull: Some(_), .. }
        );
        if tree.is_none() && !pulls && self.role.name() != RoleName::Broadcast {
            return Err(ConfigError::NoParent(self.role.name()));
        }
        self.tree = tree;
        Ok(self)
    }

    /// Sets the child limit (1..=16).
    pub fn with_max_children(mut self, n: usize) -> Result<Config, ConfigError> {
        if !(1..=16).contains(&n) {
            return Err(ConfigError::MaxChildren(n));
        }
        self.max_children = n;
        Ok(self)
    }

    /// Sets STUN/TURN servers, the NAT IP and the UDP ports.
    pub fn with_ice(mut self, ice: crate::ice::IceConfig) -> Config {
        self.ice = ice;
        self
    }

    /// Turns fast start on or off.
    pub fn with_fast_start(mut self, on: bool) -> Config {
        self.fast_start = on;
        self
    }

    /// Impairs every datagram this node sends (tests).
    pub fn with_impairment(mut self, impairment: Option<Impairment>) -> Config {
        self.impairment = impairment;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let relay = || Role::Relay {
            pull: Some("http://127.0.0.1:1/whep/s".into()),
        };
        let http: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(Config::new("bad name", relay(), Some(http), None).is_err());
        assert!(Config::new("s", relay(), None, None).is_err());
        let wild: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(Config::new("s", relay(), Some(http), Some(wild)).is_err());
        let c = Config::new("s", relay(), Some("0.0.0.0:80".parse().unwrap()), None).unwrap();
        assert_eq!(c.ice_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(c.clone().with_max_children(0).is_err());
        let tree_relay = Config::new("s", Role::Relay { pull: None }, Some(http), None).unwrap();
        assert!(tree_relay.clone().with_tree(None).is_err());
        assert!(tree_relay.with_tree(Some(TreeConfig::default())).is_ok());
        assert!(c.with_tree(None).is_ok());
    }
}
