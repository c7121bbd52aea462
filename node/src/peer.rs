//! Building peer connections the same way everywhere: our codec set, the interceptors the
//! connection's direction needs (see [`Direction`]) plus the [`RtcpTap`], an explicit bind
//! address, and a capped wait for ICE gathering.
//!
//! Why no NACK responder: it answers from a per-connection send buffer and swallows what it
//! cannot answer. A child's NACK goes to the application instead (the tap), which answers from
//! the track's packet cache and NACKs a miss to the parent (`child.rs`, `nack.rs`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rtc::interceptor::{
    NackGeneratorBuilder, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceServer};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::runtime::Runtime;

use crate::codec::{PayloadTypes, register_codecs};
use crate::ice::{IceConfig, MediaPorts};
use crate::rtcp_tap::{LinkCounters, RtcpTap};
use crate::udp_mux::{Binding, UdpMux};

/// How long an answer or offer waits for ICE gathering before it goes out with what it has
/// (pitfall 8). Host candidates on an explicit address gather in milliseconds.
pub const GATHER_CAP: Duration = Duration::from_secs(2);

/// Which way media flows on a connection: it decides the interceptor chain. Every interceptor
/// costs on every packet and every pass of the connection's event loop (its `poll_timeout` and
/// queues are visited each time), and a relay runs one chain per child, so a chain carries
/// only what works in its direction (measured in `docs/media.md`, Benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We receive (from a parent or a WHIP publisher): NACK generator, receiver reports, TWCC
    /// receiver (a browser publisher adapts its bitrate to TWCC feedback), the tap.
    Receive,
    /// We send (a child leg): sender reports and the tap, which hands NACKs and keyframe
    /// requests to the leg. A NACK generator, receiver reports and a TWCC receiver have no
    /// incoming RTP to work on here, but would still tick and be visited per packet.
    Send,
}

/// Errors while setting up a peer connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// webrtc refused something; the message says what.
    #[error("webrtc: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    /// No local description after gathering.
    #[error("no local description")]
    NoLocalDescription,
    /// Every port of `--udp-ports` is taken.
    #[error("no free UDP port in --udp-ports {0} (one port per peer connection)")]
    NoFreePort(crate::ice::PortRange),
}

/// Makes peer connections bound to one IP address (pitfall 4: never the wildcard).
#[derive(Clone)]
pub struct PeerFactory {
    ip: IpAddr,
    runtime: Arc<dyn Runtime>,
    payload_types: PayloadTypes,
    ice: IceConfig,
    /// Where the next search of a `MediaPorts::Range` starts, so connections built at the
    /// same time try different ports.
    next_port: Arc<AtomicU32>,
    /// The shared socket of `MediaPorts::Shared`, bound by the caller (`run`).
    mux: Option<Arc<UdpMux>>,
}

impl std::fmt::Debug for PeerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerFactory")
            .field("ip", &self.ip)
            .field("ice", &self.ice)
            .field("mux", &self.mux)
            .finish()
    }
}

/// A built peer connection and the events it reports.
pub struct Peer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// The connection state, as last reported.
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Remote tracks as they start (upstream legs only).
    pub tracks: mpsc::Receiver<Arc<dyn TrackRemote>>,
    gathered: watch::Receiver<bool>,
    /// The address host candidates are gathered on.
    bind: IpAddr,
    /// The public address of a 1:1 NAT, put into the candidates we send.
    nat_ip: Option<IpAddr>,
    /// The shared port this connection uses, if any.
    mux: Option<Binding>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl PeerFactory {
    /// A factory binding every peer connection's UDP sockets to `ip` with the given runtime,
    /// offering `payload_types`.
    pub fn new(ip: IpAddr, runtime: Arc<dyn Runtime>, payload_types: PayloadTypes) -> Self {
        Self {
            ip,
            runtime,
            payload_types,
            ice: IceConfig::default(),
            next_port: Arc::new(AtomicU32::new(0)),
            mux: None,
        }
    }

    /// Puts every connection on `mux` (`MediaPorts::Shared`).
    pub fn with_mux(mut self, mux: Arc<UdpMux>) -> Self {
        self.mux = Some(mux);
        self
    }

    /// The shared port, if connections use one.
    pub fn mux(&self) -> Option<&Arc<UdpMux>> {
        self.mux.as_ref()
    }

    /// Uses these STUN/TURN servers, NAT IP and UDP ports for every connection.
    pub fn with_ice(mut self, ice: IceConfig) -> Self {
        self.ice = ice;
        self
    }

    /// A new peer connection for media flowing in `direction`, whose RTCP feedback is counted
    /// into `counters`.
    pub async fn build(
        &self,
        counters: Arc<LinkCounters>,
        direction: Direction,
    ) -> Result<Peer, PeerError> {
        if let Some(mux) = &self.mux {
            // webrtc binds a placeholder on `ip:0`, which the mux's runtime replaces.
            let (runtime, binding) = mux.runtime(self.runtime.clone());
            let mut peer = self
                .build_on(counters, direction, SocketAddr::new(self.ip, 0), runtime)
                .await?;
            peer.mux = Some(binding);
            return Ok(peer);
        }
        let MediaPorts::Range(range) = self.ice.ports else {
            return self
                .build_on(
                    counters,
                    direction,
                    SocketAddr::new(self.ip, 0),
                    self.runtime.clone(),
                )
                .await;
        };
        // One port per connection (see `ice`): the next one a probe can bind. Another process
        // may take it between the probe and webrtc's bind; then the build fails and we move on.
        for _ in 0..range.len() {
            let port = range.nth(self.next_port.fetch_add(1, Ordering::Relaxed));
            let addr = SocketAddr::new(self.ip, port);
            if std::net::UdpSocket::bind(addr).is_err() {
                continue;
            }
            match self
                .build_on(counters.clone(), direction, addr, self.runtime.clone())
                .await
            {
                Ok(peer) => return Ok(peer),
                Err(e) => tracing::debug!(%addr, error = %e, "UDP port taken; trying the next"),
            }
        }
        Err(PeerError::NoFreePort(range))
    }

    async fn build_on(
        &self,
        counters: Arc<LinkCounters>,
        direction: Direction,
        udp: SocketAddr,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Peer, PeerError> {
        let mut engine = MediaEngine::default();
        register_codecs(&mut engine, self.payload_types)?;
        configure_simulcast_extension_headers(&mut engine)?;
        // Never webrtc's NACK responder: our codecs announce `nack` and `nack pli` themselves
        // (codec.rs) and the child leg answers from the track's cache (module docs).
        let registry = match direction {
            Direction::Receive => {
                let registry = Registry::new()
                    .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
                    .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
                configure_twcc_receiver_only(registry, &mut engine)?
            }
            Direction::Send => {
                Registry::new().with(Slot::SenderReport, SenderReportBuilder::new().build())
            }
        };
        // Application-most, so every interceptor has seen the RTCP before we narrow it.
        let registry = registry.with(Slot::from(14_000), RtcpTap::new(counters));
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered) = watch::channel(false);
        // Few tracks per connection (video, audio); a full channel drops a track and logs.
        let (tracks_tx, tracks) = mpsc::channel(4);
        let handler = Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx,
            tracks: tracks_tx,
        });
        let servers = self
            .ice
            .servers
            .iter()
            .map(|s| RTCIceServer {
                urls: vec![s.url.clone()],
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(servers)
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_runtime(runtime)
            .with_udp_addrs(vec![udp])
            .build()
            .await?;
        Ok(Peer {
            pc: Arc::new(pc),
            state,
            tracks,
            gathered,
            bind: self.ip,
            nat_ip: self.ice.nat_ip,
            mux: None,
        })
    }
}

impl Peer {
    /// Sets `desc` as the local description, waits for gathering (at most [`GATHER_CAP`]) and
    /// returns the SDP to send, candidates included.
    pub async fn finish_local(&mut self, desc: RTCSessionDescription) -> Result<String, PeerError> {
        self.pc.set_local_description(desc).await?;
        let _ = tokio::time::timeout(GATHER_CAP, self.gathered.wait_for(|g| *g)).await;
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or(PeerError::NoLocalDescription)?;
        if let Some(mux) = &self.mux {
            // Before the SDP leaves: the remote's first check must find its connection.
            for ufrag in sdp
                .lines()
                .filter_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            {
                mux.set_ufrag(ufrag);
            }
        }
        let port = self.mux.as_ref().map(Binding::port);
        Ok(if self.nat_ip.is_some() || port.is_some() {
            advertise(&sdp, self.bind, self.nat_ip, port)
        } else {
            sdp
        })
    }
}

/// `sdp` with every host candidate on `bind` moved to `public` (the 1:1 NAT of `--nat-ip`)
/// and to `port` (the shared port of `--udp-port`, in place of the placeholder the ICE agent
/// knows). Done here because webrtc 0.21.1 stores `SettingEngine::with_nat_1to1_ips` but
/// never reads it (no use in webrtc, rtc or rtc-ice 0.21.1). ICE still works: the peer's
/// checks arrive, translated by the router, at the bound socket, and our agent answers them
/// there (RFC 8445 section 7.3: a response goes to where the request came from).
fn advertise(sdp: &str, bind: IpAddr, public: Option<IpAddr>, port: Option<u16>) -> String {
    let bind = bind.to_string();
    let public = public.map(|p| p.to_string());
    let port = port.map(|p| p.to_string());
    let mut out = String::with_capacity(sdp.len() + 16);
    for line in sdp.split_inclusive('\n') {
        let is_host = line.starts_with("a=candidate:") && line.contains(" typ host");
        let fields: Vec<&str> = line.split(' ').collect();
        if is_host && fields.get(4) == Some(&bind.as_str()) {
            // foundation component transport priority ADDRESS port typ host ...
            let mut fields = fields;
            if let Some(public) = &public {
                fields[4] = public;
            }
            if let Some(port) = &port
                && fields.len() > 5
            {
                fields[5] = port;
            }
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(line);
        }
    }
    out
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    tracks: mpsc::Sender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if self.tracks.try_send(track).is_err() {
            tracing::warn!("more remote tracks than expected; ignoring one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ice::PortRange;
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

    /// The local SDP of a fresh recvonly peer from `factory`, candidates included.
    async fn local_sdp(factory: &PeerFactory) -> String {
        let mut peer = factory
            .build(Arc::new(LinkCounters::default()), Direction::Receive)
            .await
            .expect("peer");
        peer.pc
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("transceiver");
        let offer = peer.pc.create_offer(None).await.expect("offer");
        let sdp = peer.finish_local(offer).await.expect("sdp");
        let _ = peer.pc.close().await;
        sdp
    }

    /// (address, port) of every `a=candidate` line.
    fn candidates(sdp: &str) -> Vec<(String, u16)> {
        sdp.lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .filter_map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                Some((f.get(4)?.to_string(), f.get(5)?.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn advertise_moves_only_host_candidates_on_the_bind_address() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 10.0.0.6 40001 typ host\r\n\
                   a=candidate:3 1 udp 1694498815 198.51.100.1 5000 typ srflx raddr 10.0.0.5 rport 40000\r\n";
        let out = advertise(
            sdp,
            "10.0.0.5".parse().expect("ip"),
            Some("203.0.113.9".parse().expect("ip")),
            None,
        );
        assert_eq!(
            out,
            "v=0\r\na=candidate:1 1 udp 2130706431 203.0.113.9 40000 typ host\r\n\
             a=candidate:2 1 udp 2130706431 10.0.0.6 40001 typ host\r\n\
             a=candidate:3 1 udp 1694498815 198.51.100.1 5000 typ srflx raddr 10.0.0.5 rport 40000\r\n"
        );
    }

    #[test]
    fn advertise_puts_the_shared_port_into_host_candidates() {
        let sdp = "a=candidate:1 1 udp 2130706431 10.0.0.5 53211 typ host\r\n\
                   a=candidate:3 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 53211\r\n";
        let bind = "10.0.0.5".parse().expect("ip");
        assert_eq!(
            advertise(sdp, bind, None, Some(40000)),
            "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
             a=candidate:3 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 53211\r\n"
        );
        let public = Some("203.0.113.9".parse().expect("ip"));
        assert!(
            advertise(sdp, bind, public, Some(40000))
                .starts_with("a=candidate:1 1 udp 2130706431 203.0.113.9 40000 typ host\r\n")
        );
    }

    #[tokio::test]
    async fn candidates_carry_the_nat_ip_and_a_port_of_the_range() {
        let runtime = webrtc::runtime::default_runtime().expect("tokio runtime");
        let localhost: IpAddr = "127.0.0.1".parse().expect("ip");
        let plain = PeerFactory::new(localhost, runtime.clone(), PayloadTypes::Node);
        let before = candidates(&local_sdp(&plain).await);
        assert!(
            !before.is_empty() && before.iter().all(|(ip, _)| ip == "127.0.0.1"),
            "{before:?}"
        );

        // A range with its first port taken: the connections must skip it.
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let first = taken.local_addr().expect("addr").port();
        let range = PortRange {
            min: first,
            max: first.saturating_add(20),
        };
        let ice = IceConfig {
            nat_ip: Some("203.0.113.9".parse().expect("ip")),
            ports: MediaPorts::Range(range),
            ..IceConfig::default()
        };
        let nat = PeerFactory::new(localhost, runtime, PayloadTypes::Node).with_ice(ice);
        let mut ports = Vec::new();
        for _ in 0..2 {
            let found = candidates(&local_sdp(&nat).await);
            assert!(!found.is_empty(), "no candidates");
            for (ip, port) in found {
                assert_eq!(ip, "203.0.113.9", "the NAT IP replaces the bind address");
                assert!(
                    port > range.min && port <= range.max,
                    "{port} outside {range} or taken"
                );
                ports.push(port);
            }
        }
        ports.dedup();
        assert_eq!(ports.len(), 2, "one port per connection: {ports:?}");
    }

    #[tokio::test]
    async fn stun_servers_are_asked() {
        let stun = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("stun:{}", stun.local_addr().expect("addr"));
        let ice = IceConfig::new(&[url], &[], None, None, None, MediaPorts::Any).expect("valid");
        let runtime = webrtc::runtime::default_runtime().expect("tokio runtime");
        let factory = PeerFactory::new(
            "127.0.0.1".parse().expect("ip"),
            runtime,
            PayloadTypes::Node,
        )
        .with_ice(ice);
        let gathering = tokio::spawn(async move { local_sdp(&factory).await });
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), stun.recv_from(&mut buf))
            .await
            .expect("a STUN request within 5 s")
            .expect("recv");
        // RFC 8489 section 5: Binding request type 0x0001, magic cookie 0x2112A442.
        assert!(n >= 20 && buf[..2] == [0x00, 0x01] && buf[4..8] == [0x21, 0x12, 0xa4, 0x42]);
        gathering.abort();
    }
}
