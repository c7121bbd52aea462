//! Plain RTP over UDP into the root (`broadcast --rtp-in ADDR --rtp-codec vp8`): what ffmpeg
//! (`-f rtp`) or GStreamer (`udpsink`) send. Each datagram is parsed as one RTP packet and
//! pushed into the track's feed; anything that does not parse is dropped, never a panic.
//!
//! There is no RTCP back to such a sender, so keyframe requests cannot be honoured (they are
//! logged); choose a short keyframe interval at the encoder.
//!
//! Instead of `--rtp-in ADDR --rtp-codec C`, the SDP file the sender wrote (ffmpeg
//! `-sdp_file`) can say it all (`--rtp-in-sdp FILE`, [`source_from_sdp_file`]): codec, payload
//! type and address of each stream; packets with another payload type are then dropped. The
//! video section's `a=fmtp` (H.264 profile, parameter sets) becomes the track's and so what
//! children are told (`child.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rtc::shared::marshal::Unmarshal;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use treecast_media::rtp_sdp::{self, SdpError};

use crate::config::Source;
use crate::fanout::Feed;
use crate::node::NodeState;

/// Largest datagram read; RTP over UDP stays under the path MTU.
const MAX_DATAGRAM: usize = 2048;

/// Binds `addr`; returns the socket and its bound address (for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind(addr).await?;
    let local = socket.local_addr()?;
    Ok((socket, local))
}

/// Why an SDP file gives no RTP input.
#[derive(Debug, thiserror::Error)]
pub enum SdpFileError {
    /// The file cannot be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why (in the message, not chained: one line says it all).
        error: std::io::Error,
    },
    /// It is not an SDP we can use; the message says where and why.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        error: SdpError,
    },
    /// It has no video section.
    #[error("{0}: no m=video section (a treecast broadcast needs video)")]
    NoVideo(String),
}

/// The root's source as the SDP file at `path` describes it (ffmpeg `-sdp_file`): video (and
/// audio) received at the file's addresses and ports, only with its payload types.
pub fn source_from_sdp_file(path: &Path) -> Result<Source, SdpFileError> {
    let name = path.display().to_string();
    let read = |error| SdpFileError::Read {
        path: name.clone(),
        error,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > rtp_sdp::MAX_LEN as u64 {
        return Err(SdpFileError::Parse {
            path: name,
            error: SdpError::TooLarge(usize::try_from(len).unwrap_or(usize::MAX)),
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    let text = String::from_utf8_lossy(&bytes);
    let session = rtp_sdp::parse(&text).map_err(|error| SdpFileError::Parse {
        path: name.clone(),
        error,
    })?;
    let video = session.video.ok_or(SdpFileError::NoVideo(name))?;
    let addr = |s: &rtp_sdp::RtpStream| SocketAddr::new(s.addr, s.port);
    Ok(Source::Rtp {
        video: addr(&video),
        codec: video.codec,
        audio: session.audio.as_ref().map(addr),
        video_pt: Some(video.payload_type),
        audio_pt: session.audio.as_ref().map(|a| a.payload_type),
        video_fmtp: video.fmtp,
    })
}

/// Reads RTP from `socket` into `feed` until the socket fails. With `payload_type`, packets
/// carrying another one are dropped (counted in the log).
pub async fn run(
    node: Arc<NodeState>,
    socket: UdpSocket,
    feed: Arc<Feed>,
    mut keyframe_requests: mpsc::Receiver<()>,
    payload_type: Option<u8>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut malformed = 0u64;
    let mut foreign = 0u64;
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let n = match r {
                    Ok((n, _from)) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "RTP input socket failed");
                        return;
                    }
                };
                let mut datagram = &buf[..n];
                match rtc::rtp::Packet::unmarshal(&mut datagram) {
                    // RTCP on the same port (RFC 5761 payload types 72..=76 once the marker bit
                    // is folded in) is not media.
                    Ok(p) if (72..=76).contains(&p.header.payload_type) => {}
                    Ok(p) if payload_type.is_some_and(|pt| pt != p.header.payload_type) => {
                        foreign += 1;
                        if foreign.is_power_of_two() {
                            tracing::info!(
                                foreign,
                                got = p.header.payload_type,
                                expected = payload_type,
                                "dropped RTP with another payload type than the SDP's"
                            );
                        }
                    }
                    Ok(packet) => {
                        let c = &node.upstream;
                        c.packets.fetch_add(1, Ordering::Relaxed);
                        c.bytes.fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
                        node.media_arrived();
                        feed.push(packet);
                    }
                    Err(_) => {
                        malformed += 1;
                        if malformed.is_power_of_two() {
                            tracing::info!(malformed, "dropped datagrams that are not RTP");
                        }
                    }
                }
            }
            Some(()) = keyframe_requests.recv() => {
                tracing::debug!("keyframe request for a plain RTP input (cannot be forwarded)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use rtc::shared::marshal::Marshal;

    use super::*;
    use crate::codec::{CodecExt, PayloadTypes};
    use crate::config::{NodeId, RoleName, StreamId};
    use crate::peer::PeerFactory;
    use treecast_media::keyframe::Codec;

    fn datagram(payload_type: u8, seq: u16) -> Vec<u8> {
        let mut p = rtc::rtp::Packet::default();
        p.header.version = 2;
        p.header.payload_type = payload_type;
        p.header.sequence_number = seq;
        p.payload = bytes::Bytes::from_static(&[0x10, 0, 0, 0]);
        p.marshal().unwrap().to_vec()
    }

    /// With the SDP's payload type, packets of another type are dropped and the others pass in
    /// order; without one, every RTP packet passes.
    #[tokio::test]
    async fn only_the_sdp_payload_type_passes() {
        for (filter, expected) in [(Some(96), vec![1, 3]), (None, vec![1, 2, 3])] {
            let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let runtime = webrtc::runtime::default_runtime().unwrap();
            let factory = PeerFactory::new(localhost, runtime, PayloadTypes::Node);
            let node = Arc::new(NodeState::new(
                NodeId::random(),
                StreamId::new("t").unwrap(),
                RoleName::Broadcast,
                None,
                4,
                factory,
                None,
            ));
            let (feed, requests) = Feed::new(Codec::Vp8, Codec::Vp8.rtp_codec());
            let mut rx = feed.subscribe();
            let (socket, addr) = bind(SocketAddr::new(localhost, 0)).await.unwrap();
            let input = tokio::spawn(run(node, socket, feed, requests, filter));
            let sender = UdpSocket::bind((localhost, 0)).await.unwrap();
            for (pt, seq) in [(96, 1), (100, 2), (96, 3)] {
                sender.send_to(&datagram(pt, seq), addr).await.unwrap();
            }
            let mut got = Vec::new();
            while let Ok(Ok(f)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
            {
                got.push(f.packet.header.sequence_number);
            }
            assert_eq!(got, expected, "filter {filter:?}");
            input.abort();
        }
    }
}
