//! Building peer connections the same way everywhere: our codec set, webrtc's default
//! interceptors but the NACK responder (NACK generator, reports, TWCC receiver) plus the
//! [`RtcpTap`], an explicit bind address, and a capped wait for ICE gathering.
//!
//! Why no NACK responder: it answers from a per-connection send buffer and swallows what it
//! cannot answer. A child's NACK goes to the application instead (the tap), which answers from
//! the track's packet cache and NACKs a miss to the parent (`child.rs`, `nack.rs`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::{NackGeneratorBuilder, Registry, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::runtime::Runtime;

use crate::codec::{PayloadTypes, register_codecs};
use crate::rtcp_tap::{LinkCounters, RtcpTap};

/// How long an answer or offer waits for ICE gathering before it goes out with what it has
/// (pitfall 8). Host candidates on an explicit address gather in milliseconds.
pub const GATHER_CAP: Duration = Duration::from_secs(2);

/// Errors while setting up a peer connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// webrtc refused something; the message says what.
    #[error("webrtc: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    /// No local description after gathering.
    #[error("no local description")]
    NoLocalDescription,
}

/// Makes peer connections bound to one IP address (pitfall 4: never the wildcard).
#[derive(Clone)]
pub struct PeerFactory {
    ip: IpAddr,
    runtime: Arc<dyn Runtime>,
    payload_types: PayloadTypes,
}

impl std::fmt::Debug for PeerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerFactory").field("ip", &self.ip).finish()
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
        }
    }

    /// A new peer connection whose RTCP feedback is counted into `counters`.
    pub async fn build(&self, counters: Arc<LinkCounters>) -> Result<Peer, PeerError> {
        let mut engine = MediaEngine::default();
        register_codecs(&mut engine, self.payload_types)?;
        // `register_default_interceptors` without `configure_nack`: our codecs announce
        // `nack` and `nack pli` themselves (codec.rs); the generator stays, the responder not.
        let registry =
            Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
        configure_simulcast_extension_headers(&mut engine)?;
        let registry = configure_twcc_receiver_only(registry, &mut engine)?;
        let registry = configure_rtcp_reports(registry);
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
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_runtime(self.runtime.clone())
            .with_udp_addrs(vec![format!("{}:0", self.ip)])
            .build()
            .await?;
        Ok(Peer {
            pc: Arc::new(pc),
            state,
            tracks,
            gathered,
        })
    }
}

impl Peer {
    /// Sets `desc` as the local description, waits for gathering (at most [`GATHER_CAP`]) and
    /// returns the SDP to send, candidates included.
    pub async fn finish_local(&mut self, desc: RTCSessionDescription) -> Result<String, PeerError> {
        self.pc.set_local_description(desc).await?;
        let _ = tokio::time::timeout(GATHER_CAP, self.gathered.wait_for(|g| *g)).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or(PeerError::NoLocalDescription)
    }
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
