//! How a node's peer connections reach the outside: STUN/TURN servers, the public IP of a 1:1
//! NAT, and the UDP ports media may use (the options of a relay at home, docs/operating.md).
//!
//! Two ways to pin the media ports, for a router's port forwarding: `--udp-port PORT`, one
//! socket shared by every connection ([`crate::udp_mux`], what a home router wants), or
//! `--udp-ports MIN-MAX`, one socket per connection, the next free port of the range (webrtc
//! 0.21's own way: `PeerConnectionBuilder::with_udp_addrs`; kept for TURN, whose allocations
//! belong to one client port each).
//!
//! The NAT IP is applied to the candidates we send (`peer::advertise`): rtc 0.21.1 keeps
//! `SettingEngine::with_nat_1to1_ips` but nothing reads it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Network settings for every peer connection a node builds. The default gathers host
/// candidates on the bind address only, on any free port.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// STUN and TURN servers, in the order given.
    pub servers: Vec<IceServer>,
    /// The public address of a 1:1 NAT (port forwarding): advertised in host candidates
    /// instead of the bind address.
    pub nat_ip: Option<IpAddr>,
    /// The UDP ports peer connections use.
    pub ports: MediaPorts,
}

/// The UDP ports the media connections use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaPorts {
    /// Each connection its own socket on any free port.
    #[default]
    Any,
    /// Each connection its own socket on the next free port of the range (`--udp-ports`).
    Range(PortRange),
    /// Every connection on one shared socket (`--udp-port`; 0 lets the system choose it).
    Shared(u16),
}

/// One STUN or TURN server.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:HOST[:PORT]`, `turn:HOST[:PORT][?transport=udp|tcp]` or `turns:...`.
    pub url: String,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN password (empty for STUN; never logged).
    pub credential: String,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the credential (GUIDE 4.9).
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceConfig")
            .field("servers", &self.servers)
            .field("nat_ip", &self.nat_ip)
            .field("ports", &self.ports)
            .finish()
    }
}

/// Why the network settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    /// A `--stun` URL that is not `stun:` or `stuns:`.
    #[error("--stun {0:?} must start with stun: (e.g. stun:stun.l.google.com:19302)")]
    Stun(String),
    /// A `--turn` URL that is not `turn:` or `turns:`.
    #[error("--turn {0:?} must start with turn: or turns: (e.g. turn:turn.example.org:3478)")]
    Turn(String),
    /// TURN without credentials.
    #[error("--turn needs --turn-user and --turn-password")]
    TurnCredentials,
    /// The wildcard as NAT IP.
    #[error("--nat-ip must be the router's public address, not {0}")]
    NatIp(IpAddr),
    /// TURN with one shared port.
    #[error(
        "--turn cannot be combined with --udp-port: a TURN allocation belongs to one client \
         port, so connections sharing a port would share one allocation; use --udp-ports MIN-MAX"
    )]
    TurnOnSharedPort,
}

impl IceConfig {
    /// Validates the command-line form: STUN URLs, TURN URLs sharing one user and password.
    pub fn new(
        stun: &[String],
        turn: &[String],
        turn_user: Option<&str>,
        turn_password: Option<&str>,
        nat_ip: Option<IpAddr>,
        ports: MediaPorts,
    ) -> Result<IceConfig, IceError> {
        let mut servers = Vec::new();
        for url in stun {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                return Err(IceError::Stun(url.clone()));
            }
            servers.push(IceServer {
                url: url.clone(),
                username: String::new(),
                credential: String::new(),
            });
        }
        for url in turn {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                return Err(IceError::Turn(url.clone()));
            }
            let (Some(user), Some(password)) = (turn_user, turn_password) else {
                return Err(IceError::TurnCredentials);
            };
            servers.push(IceServer {
                url: url.clone(),
                username: user.to_owned(),
                credential: password.to_owned(),
            });
        }
        if let Some(ip) = nat_ip
            && ip.is_unspecified()
        {
            return Err(IceError::NatIp(ip));
        }
        if !turn.is_empty() && matches!(ports, MediaPorts::Shared(_)) {
            return Err(IceError::TurnOnSharedPort);
        }
        Ok(IceConfig {
            servers,
            nat_ip,
            ports,
        })
    }
}

/// An inclusive range of UDP ports, `MIN-MAX` (or one port, `PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The first port.
    pub min: u16,
    /// The last port (inclusive).
    pub max: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.max - self.min) + 1
    }

    /// Never: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th port, wrapping around.
    pub fn nth(&self, i: u32) -> u16 {
        // In range: min + (i mod len) <= max.
        self.min + (i % self.len()) as u16
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if min > max {
            return Err(format!(
                "{min}-{max}: the first port must not exceed the last"
            ));
        }
        Ok(PortRange { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse() {
        assert_eq!(
            "40000-40099".parse::<PortRange>(),
            Ok(PortRange {
                min: 40000,
                max: 40099
            })
        );
        let one: PortRange = "5000".parse().expect("one port");
        assert_eq!((one.len(), one.nth(7)), (1, 5000));
        assert!("10-5".parse::<PortRange>().is_err());
        assert!("0-5".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
        let r: PortRange = "100-102".parse().expect("range");
        assert_eq!(
            (0..4).map(|i| r.nth(i)).collect::<Vec<_>>(),
            [100, 101, 102, 100]
        );
    }

    #[test]
    fn servers_are_checked() {
        let stun = ["stun:stun.example.org:3478".to_owned()];
        let turn = ["turn:turn.example.org:3478".to_owned()];
        let any_port = MediaPorts::Any;
        let c =
            IceConfig::new(&stun, &turn, Some("u"), Some("secret"), None, any_port).expect("ok");
        assert_eq!(c.servers.len(), 2);
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(
            IceConfig::new(&turn, &[], None, None, None, any_port),
            Err(IceError::Stun(turn[0].clone()))
        );
        assert_eq!(
            IceConfig::new(&[], &turn, Some("u"), None, None, any_port),
            Err(IceError::TurnCredentials)
        );
        let any: IpAddr = "0.0.0.0".parse().expect("ip");
        assert_eq!(
            IceConfig::new(&[], &[], None, None, Some(any), any_port),
            Err(IceError::NatIp(any))
        );
        assert_eq!(
            IceConfig::new(
                &[],
                &turn,
                Some("u"),
                Some("p"),
                None,
                MediaPorts::Shared(40000)
            ),
            Err(IceError::TurnOnSharedPort)
        );
        assert!(IceConfig::new(&stun, &[], None, None, None, MediaPorts::Shared(40000)).is_ok());
    }
}
