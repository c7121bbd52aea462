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

use crate::impairment::{Dice, Fate, Impairment};

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
        Ok(Arc::new(ImpairedSocket {
            inner: self.inner.wrap_udp_socket(socket)?,
            dice: Mutex::new(Dice::new(self.spec, salt)),
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
    /// Lock: the dice are advanced once per datagram from whichever task sends; held only for
    /// the roll, never across an await.
    dice: Mutex<Dice>,
}

impl AsyncUdpSocket for ImpairedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let fate = self
            .dice
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .roll();
        match fate {
            Fate::Drop => Poll::Ready(Ok(transmit.contents.len())),
            Fate::Send(d) if d.is_zero() => self.inner.poll_send(cx, transmit),
            Fate::Send(d) => {
                let inner = self.inner.clone();
                let buf = transmit.contents.to_vec();
                let to = transmit.destination;
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
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
