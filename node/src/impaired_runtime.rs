//! A webrtc runtime that wraps every UDP socket in a seeded impairment ([`crate::impairment`]):
//! the shell-side half of the test network emulation. Everything else delegates to the default
//! runtime.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    Transmit, default_runtime,
};

use treecast_media::impairment::{Impairment as Link, Verdict};

use crate::impairment::Impairment;

/// The default runtime with impaired UDP sockets, or `None` if there is no default runtime.
pub fn runtime(spec: Impairment) -> Option<Arc<dyn Runtime>> {
    Some(Arc::new(ImpairedRuntime {
        inner: default_runtime()?,
        spec,
        sockets: AtomicU64::new(0),
    }))
}

#[derive(Debug)]
struct ImpairedRuntime {
    inner: Arc<dyn Runtime>,
    spec: Impairment,
    sockets: AtomicU64,
}

impl Runtime for ImpairedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let salt = self.sockets.fetch_add(1, Ordering::Relaxed);
        // Each socket its own sequence, all derived from the one seed.
        let seed = self.spec.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Ok(Arc::new(ImpairedSocket {
            inner: self.inner.wrap_udp_socket(socket)?,
            link: Mutex::new(Link::new(self.spec.config, seed)),
            rtp_only: self.spec.rtp_only,
            epoch: tokio::time::Instant::now(),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }
}

#[derive(Debug)]
struct ImpairedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Lock: the link model is advanced once per datagram from whichever task sends; held
    /// only for the decision, never across an await.
    link: Mutex<Link>,
    /// Only RTP packets go through `link`; everything else is sent as it is.
    rtp_only: bool,
    epoch: tokio::time::Instant,
}

/// An RTP packet (not STUN, DTLS or RTCP) by the demultiplexing rules of RFC 7983 and
/// RFC 5761: first byte 128..=191, second byte (marker and payload type) outside the RTCP
/// packet types 192..=223. SRTP leaves these header bytes in the clear.
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [first, second, ..] if (128..=191).contains(first) && !(192..=223).contains(second))
}

impl AsyncUdpSocket for ImpairedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if self.rtp_only && !is_rtp(transmit.contents) {
            return self.inner.poll_send(cx, transmit);
        }
        let now = self.epoch.elapsed();
        let verdict = self
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .decide(now, transmit.contents.len());
        match verdict {
            Verdict::Drop => Poll::Ready(Ok(transmit.contents.len())),
            Verdict::DeliverAt(at) if at <= now => self.inner.poll_send(cx, transmit),
            Verdict::DeliverAt(at) => {
                let inner = self.inner.clone();
                let buf = transmit.contents.to_vec();
                let to = transmit.destination;
                let due = self.epoch + at;
                tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    let _ = inner.send_to(&buf, to).await;
                });
                Poll::Ready(Ok(transmit.contents.len()))
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::is_rtp;

    #[test]
    fn rtp_is_told_from_stun_dtls_and_rtcp() {
        // RTP, payload type 96, with and without the marker bit.
        assert!(is_rtp(&[0x80, 96, 0, 1]));
        assert!(is_rtp(&[0x80, 0x80 | 96, 0, 1]));
        // RTCP receiver report and NACK (RTPFB).
        assert!(!is_rtp(&[0x80, 201, 0, 1]));
        assert!(!is_rtp(&[0x81, 205, 0, 3]));
        // STUN binding request, DTLS handshake record, nothing.
        assert!(!is_rtp(&[0x00, 0x01, 0, 0]));
        assert!(!is_rtp(&[22, 0xfe, 0xfd]));
        assert!(!is_rtp(&[]));
    }
}
