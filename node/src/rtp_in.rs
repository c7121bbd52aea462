//! Plain RTP over UDP into the root (`broadcast --rtp-in ADDR --rtp-codec vp8`): what ffmpeg
//! (`-f rtp`) or GStreamer (`udpsink`) send. Each datagram is parsed as one RTP packet and
//! pushed into the track's feed; anything that does not parse is dropped, never a panic.
//!
//! There is no RTCP back to such a sender, so keyframe requests cannot be honoured (they are
//! logged); choose a short keyframe interval at the encoder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rtc::shared::marshal::Unmarshal;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

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

/// Reads RTP from `socket` into `feed` until the socket fails.
pub async fn run(
    node: Arc<NodeState>,
    socket: UdpSocket,
    feed: Arc<Feed>,
    mut keyframe_requests: mpsc::Receiver<()>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut malformed = 0u64;
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
