//! One UDP port for every peer connection of a node (`--udp-port`, docs/operating.md): what a
//! relay behind a home router needs, one forwarded port instead of a range.
//!
//! webrtc 0.21 has no UDP mux (rtc 0.21.1 `SettingEngine::with_udp_network` is commented out
//! as a todo), but every socket a peer connection uses comes from its [`Runtime`]
//! (`wrap_udp_socket`, called by the driver after it binds `ip:0`). So each connection gets
//! a runtime of its own ([`UdpMux::runtime`]) that closes that placeholder socket and hands
//! out a virtual one instead: sends go out of the one real socket, receives come from a
//! bounded inbox that the mux's single receive task fills, routed by
//! [`treecast_media::udp_demux`] (ufrag of STUN checks, transaction id of STUN responses,
//! learned remote address for the rest).
//!
//! The connection's ICE agent still believes its host candidate is the placeholder's
//! `ip:port`; `peer::Peer::finish_local` puts the shared port into the candidates we send, and
//! the agent never sees a local address on the wire (inbound datagrams carry the one it
//! knows). Closing a connection drops its virtual socket, which removes its routes.
//!
//! Drop policy: an inbox holds [`INBOX`] datagrams; beyond that the newest is dropped (as a
//! kernel socket buffer does; NACK and keyframe requests recover media). A send the kernel
//! cannot take right now is dropped too rather than parked, so no connection's driver can
//! wait on a socket another one keeps busy. Both are counted ([`MuxCounters`]).

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use treecast_media::udp_demux::{ConnId, Demux, Dropped, Route};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    Transmit,
};

/// Datagrams waiting for one connection's driver. At 2.5 Mbit/s of 1200-byte packets that
/// is about a second of media, far more than a driver that keeps up lets pile.
pub const INBOX: usize = 256;
/// The largest datagram read (GRO may coalesce several, split again by stride).
const RECV_BUF: usize = 65_535;

/// What the shared port has done, for `/api/status` and logs.
#[derive(Debug, Default)]
pub struct MuxCounters {
    /// Datagrams received and delivered to a connection.
    pub delivered: AtomicU64,
    /// STUN checks naming a ufrag no connection has.
    pub unknown_ufrag: AtomicU64,
    /// Datagrams from an address no connection owns.
    pub unknown_source: AtomicU64,
    /// Datagrams dropped because their connection's inbox was full.
    pub inbox_full: AtomicU64,
    /// Sends dropped because the socket was not writable.
    pub send_dropped: AtomicU64,
}

/// The shared socket of `--udp-port`. Dropping it stops the receive task.
pub struct UdpMux {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpMux")
            .field("local", &self.shared.local)
            .finish_non_exhaustive()
    }
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection's hold on the mux: registers its ufrag and rewrites its candidates.
#[derive(Clone)]
pub struct Binding {
    shared: Arc<Shared>,
    /// The connection's current virtual socket (a new one after an ICE restart rebinds).
    /// Lock: written by the driver's `wrap_udp_socket`, read by `set_ufrag`; never held
    /// across an await.
    conn: Arc<Mutex<Option<ConnId>>>,
}

impl UdpMux {
    /// Binds `addr` and starts routing. `runtime` wraps the real socket, so a test impairment
    /// applies to it.
    pub fn bind(addr: SocketAddr, runtime: &Arc<dyn Runtime>) -> io::Result<UdpMux> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let shared = Arc::new(Shared {
            socket: runtime.wrap_udp_socket(socket)?,
            local,
            table: Mutex::new(Table::default()),
            next: AtomicU64::new(1),
            counters: MuxCounters::default(),
        });
        let task = tokio::spawn(receive(shared.clone()));
        Ok(UdpMux { shared, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// What the port has done so far.
    pub fn counters(&self) -> &MuxCounters {
        &self.shared.counters
    }

    /// Connections currently holding the port.
    pub fn connections(&self) -> usize {
        self.shared.lock().demux.sizes().0
    }

    /// A runtime for one new peer connection (delegating to `inner` for everything but its
    /// UDP socket on the mux's IP) and the binding that registers its ufrag.
    pub fn runtime(&self, inner: Arc<dyn Runtime>) -> (Arc<dyn Runtime>, Binding) {
        let binding = Binding {
            shared: self.shared.clone(),
            conn: Arc::new(Mutex::new(None)),
        };
        let runtime = MuxRuntime {
            inner,
            binding: binding.clone(),
        };
        (Arc::new(runtime), binding)
    }
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("shared", &self.shared.local)
            .finish_non_exhaustive()
    }
}

impl Binding {
    /// The shared port's number.
    pub fn port(&self) -> u16 {
        self.shared.local.port()
    }

    /// Routes STUN checks naming `ufrag` (our side's, from the local description) to this
    /// connection.
    pub fn set_ufrag(&self, ufrag: &str) {
        let conn = *self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = conn {
            self.shared.lock().demux.set_ufrag(conn, ufrag);
        }
    }
}

struct Shared {
    socket: Arc<dyn AsyncUdpSocket>,
    local: SocketAddr,
    /// Lock: the routing tables and the inboxes change together (a connection's routes and
    /// its inbox go at once). Held for one lookup or update per datagram, never across an
    /// await.
    table: Mutex<Table>,
    next: AtomicU64,
    counters: MuxCounters,
}

#[derive(Default)]
struct Table {
    demux: Demux,
    inboxes: HashMap<ConnId, mpsc::Sender<Datagram>>,
}

struct Datagram {
    from: SocketAddr,
    data: Vec<u8>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves consistent tables (each update is
        // one call); keep routing.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection's virtual socket, reporting `placeholder` as its address.
    fn open(self: &Arc<Self>, placeholder: SocketAddr) -> (ConnId, MuxSocket) {
        let id = ConnId(self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(INBOX);
        {
            let mut table = self.lock();
            table.demux.add(id);
            table.inboxes.insert(id, tx);
        }
        let socket = MuxSocket {
            id,
            placeholder,
            shared: self.clone(),
            inbox: Mutex::new(rx),
        };
        (id, socket)
    }

    /// Hands one received datagram to its connection, or counts why not.
    fn dispatch(&self, from: SocketAddr, data: &[u8]) {
        let mut table = self.lock();
        let counter = match table.demux.route(from, data) {
            Route::Conn(conn) => match table.inboxes.get(&conn).map(|tx| {
                tx.try_send(Datagram {
                    from,
                    data: data.to_vec(),
                })
            }) {
                Some(Ok(())) => &self.counters.delivered,
                Some(Err(mpsc::error::TrySendError::Full(_))) => &self.counters.inbox_full,
                // Closing: its routes go with its socket, a moment later.
                Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {
                    &self.counters.unknown_source
                }
            },
            Route::Drop(Dropped::UnknownUfrag) => &self.counters.unknown_ufrag,
            Route::Drop(Dropped::UnknownSource) => &self.counters.unknown_source,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The receive loop: one real socket, every datagram routed.
async fn receive(shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let mut meta = [RecvMeta::default()];
        let received = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            shared.socket.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await;
        match received {
            Ok(_) => {
                let [meta] = meta;
                let len = meta.len.min(buf.len());
                // GRO: consecutive datagrams of one flow, `stride` bytes each.
                for datagram in buf[..len].chunks(meta.stride.max(1)) {
                    shared.dispatch(meta.addr, datagram);
                }
            }
            // The kinds the webrtc driver also treats as transient (an ICMP error from one
            // peer surfaces on the shared socket and must not stop the others).
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::error!(addr = %shared.local, error = %e, "the shared UDP port failed; media stops");
                return;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// One connection's view of the shared port.
struct MuxSocket {
    id: ConnId,
    placeholder: SocketAddr,
    shared: Arc<Shared>,
    /// Lock: `poll_recv` takes `&self`; only the connection's driver polls it.
    inbox: Mutex<mpsc::Receiver<Datagram>>,
}

impl std::fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSocket")
            .field("id", &self.id)
            .field("shared", &self.shared.local)
            .finish_non_exhaustive()
    }
}

impl Drop for MuxSocket {
    fn drop(&mut self) {
        let mut table = self.shared.lock();
        table.demux.remove(self.id);
        table.inboxes.remove(&self.id);
    }
}

impl AsyncUdpSocket for MuxSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.placeholder)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.shared
            .lock()
            .demux
            .on_send(self.id, transmit.destination, transmit.contents);
        match self.shared.socket.poll_send(cx, transmit) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => {
                self.shared
                    .counters
                    .send_dropped
                    .fetch_add(1, Ordering::Relaxed);
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
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        match inbox.poll_recv(cx) {
            Poll::Ready(Some(d)) => {
                let n = d.data.len().min(buf.len());
                buf[..n].copy_from_slice(&d.data[..n]);
                let mut filled = RecvMeta::default();
                filled.addr = d.from;
                filled.len = n;
                filled.stride = n.max(1);
                *m = filled;
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the shared UDP port closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The runtime of one peer connection: its UDP socket on the mux's IP is the mux's.
#[derive(Clone)]
struct MuxRuntime {
    inner: Arc<dyn Runtime>,
    binding: Binding,
}

impl std::fmt::Debug for MuxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxRuntime")
            .field("shared", &self.binding.shared.local)
            .finish_non_exhaustive()
    }
}

impl Runtime for MuxRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let placeholder = socket.local_addr()?;
        // Only the media socket on the mux's address; the mDNS socket (0.0.0.0:5353) stays.
        if placeholder.ip() != self.binding.shared.local.ip() {
            return self.inner.wrap_udp_socket(socket);
        }
        // Closed here: its port is only the name the ICE agent knows its candidate by.
        drop(socket);
        let (id, virtual_socket) = self.binding.shared.open(placeholder);
        *self
            .binding
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(id);
        Ok(Arc::new(virtual_socket))
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

    fn now(&self) -> Instant {
        self.inner.now()
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

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PayloadTypes;
    use crate::peer::{Direction, Peer, PeerFactory};
    use crate::rtcp_tap::LinkCounters;
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

    const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    async fn peer(factory: &PeerFactory) -> Peer {
        factory
            .build(Arc::new(LinkCounters::default()), Direction::Receive)
            .await
            .expect("peer")
    }

    /// Offer from `a` (a recvonly video transceiver), answer from `b`; both candidates go
    /// through `finish_local`, as on the wire.
    async fn connect(a: &mut Peer, b: &mut Peer) {
        a.pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .expect("transceiver");
        let offer = a.pc.create_offer(None).await.expect("offer");
        let offer = a.finish_local(offer).await.expect("offer sdp");
        b.pc.set_remote_description(RTCSessionDescription::offer(offer).expect("sdp"))
            .await
            .expect("remote offer");
        let answer = b.pc.create_answer(None).await.expect("answer");
        let answer = b.finish_local(answer).await.expect("answer sdp");
        a.pc.set_remote_description(RTCSessionDescription::answer(answer).expect("sdp"))
            .await
            .expect("remote answer");
    }

    async fn connected(p: &mut Peer) {
        tokio::time::timeout(
            Duration::from_secs(10),
            p.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .expect("connected within 10 s")
        .expect("state");
    }

    /// Three connections of one node on one port, each to its own peer (one of them also on a
    /// shared port of its own), while a stranger throws garbage and forged checks at the port:
    /// all three reach Connected (ICE and DTLS both ran over the shared socket), the garbage
    /// is counted and dropped, and closing the connections releases every route.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_share_one_port_and_strangers_are_dropped() {
        let runtime = webrtc::runtime::default_runtime().expect("tokio runtime");
        let mux = Arc::new(UdpMux::bind(SocketAddr::new(LOCALHOST, 0), &runtime).expect("bind"));
        let port = mux.local_addr();
        let shared =
            PeerFactory::new(LOCALHOST, runtime.clone(), PayloadTypes::Node).with_mux(mux.clone());
        let plain = PeerFactory::new(LOCALHOST, runtime.clone(), PayloadTypes::Node);
        let other_mux =
            Arc::new(UdpMux::bind(SocketAddr::new(LOCALHOST, 0), &runtime).expect("bind"));
        let other = PeerFactory::new(LOCALHOST, runtime, PayloadTypes::Node).with_mux(other_mux);

        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let noise = tokio::spawn(async move {
            let mut forged = vec![0u8; 20];
            forged[1] = 1; // a Binding request
            forged[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            forged[3] = 12; // one attribute: USERNAME "nope:x" (6 bytes, padded to 8)
            forged.extend_from_slice(&[0, 6, 0, 6]);
            forged.extend_from_slice(b"nope:x\0\0");
            for i in 0u32.. {
                let _ = stranger.send_to(&i.to_be_bytes().repeat(40), port).await;
                let _ = stranger.send_to(&forged, port).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });

        let mut pairs = Vec::new();
        for remote in [&plain, &plain, &other] {
            let mut ours = peer(&shared).await;
            let mut theirs = peer(remote).await;
            // Alternate who offers, so both the offering and the answering side are muxed.
            if pairs.len() % 2 == 0 {
                connect(&mut ours, &mut theirs).await;
            } else {
                connect(&mut theirs, &mut ours).await;
            }
            pairs.push((ours, theirs));
        }
        for (ours, theirs) in &mut pairs {
            connected(ours).await;
            connected(theirs).await;
        }
        noise.abort();
        assert_eq!(mux.connections(), 3);
        let c = mux.counters();
        assert!(c.delivered.load(Ordering::Relaxed) > 0);
        assert!(
            c.unknown_source.load(Ordering::Relaxed) > 0,
            "garbage counted"
        );
        assert!(
            c.unknown_ufrag.load(Ordering::Relaxed) > 0,
            "forged checks counted"
        );
        // Still connected after the noise.
        for (ours, _) in &pairs {
            assert_eq!(*ours.state.borrow(), RTCPeerConnectionState::Connected);
        }

        for (ours, theirs) in pairs {
            let _ = ours.pc.close().await;
            let _ = theirs.pc.close().await;
        }
        // The drivers drop their sockets as they wind down.
        tokio::time::timeout(Duration::from_secs(5), async {
            while mux.connections() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("every route released after close");
        assert_eq!(mux.shared.lock().demux.sizes(), (0, 0, 0, 0));
    }
}
