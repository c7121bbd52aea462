//! The hub's task: owns every [`Broadcast`], the sessions' outgoing queues and the
//! per-address counters, and applies what the broadcasts decide (see [`crate::hub`]).

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;
use treecast_tree::{NodeId, StreamId, Time};

use crate::broadcast::{Broadcast, Effect};
use crate::config::Config;
use crate::hub::{Command, Outbound, Refused, Session};
use crate::metrics::{Metrics, StreamGauges};
use crate::protocol::{ClientMessage, ErrorCode, IceServer, Limits, ServerMessage};
use crate::shutdown::Shutdown;
use crate::tree::StreamSummary;

/// Messages queued to one browser at most; a browser that does not read is disconnected.
const SESSION_QUEUE: usize = 256;
/// Housekeeping period when no agent asks for an earlier wake-up.
const IDLE_TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct SessionEntry {
    stream: StreamId,
    addr: IpAddr,
    tx: mpsc::Sender<ServerMessage>,
}

#[derive(Debug, Default)]
struct AddrState {
    connections: usize,
    joins: VecDeque<Time>,
}

/// The state the hub task owns.
#[derive(Debug)]
pub(crate) struct Driver {
    cfg: Config,
    server: NodeId,
    seq_start: u64,
    start: Instant,
    rng: SmallRng,
    streams: BTreeMap<StreamId, Broadcast>,
    sessions: BTreeMap<NodeId, SessionEntry>,
    addrs: BTreeMap<IpAddr, AddrState>,
    outbound: mpsc::Sender<Outbound>,
    metrics: Arc<Metrics>,
}

impl Driver {
    /// A driver with no streams yet; its node id is `cfg.server_id` or random.
    pub(crate) fn new(
        cfg: Config,
        outbound: mpsc::Sender<Outbound>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // The shell's randomness (node ids) from std's per-process random keys: no extra crate.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let mut rng = SmallRng::seed_from_u64(seed);
        let server = cfg.server_id.unwrap_or_else(|| NodeId(rng.random()));
        // Record versions start at wall-clock milliseconds, so a restarted server's records
        // are newer than its old ones.
        let seq_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(1);
        tracing::info!(server = %server, "signal server node id");
        Driver {
            cfg,
            server,
            seq_start,
            start: Instant::now(),
            rng,
            streams: BTreeMap::new(),
            sessions: BTreeMap::new(),
            addrs: BTreeMap::new(),
            outbound,
            metrics,
        }
    }

    /// Runs until shutdown or until every [`crate::Hub`] handle is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut shutdown: Shutdown) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => self.tick(),
                () = shutdown.wait() => break,
            }
        }
        // Dropping the sessions' senders ends every WebSocket task's outgoing stream.
        self.sessions.clear();
        tracing::info!("hub stopped");
    }

    fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn next_wake(&self) -> Instant {
        let now = self.now();
        let idle = Instant::now() + IDLE_TICK;
        self.streams
            .values()
            .filter_map(Broadcast::poll_timeout)
            .min()
            .map_or(idle, |t| {
                let wait = t.since(now);
                (Instant::now() + wait).min(idle)
            })
    }

    fn tick(&mut self) {
        let now = self.now();
        let due: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, b)| b.poll_timeout().is_some_and(|t| t <= now))
            .map(|(s, _)| s.clone())
            .collect();
        for s in due {
            if let Some(b) = self.streams.get_mut(&s) {
                b.tick(now);
            }
            self.apply(&s);
        }
        self.streams.retain(|_, b| !b.is_idle());
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Connect {
                stream,
                addr,
                reply,
            } => {
                let _ = reply.send(self.connect(stream, addr));
            }
            Command::Client { id, msg } => {
                let Some(stream) = self.sessions.get(&id).map(|s| s.stream.clone()) else {
                    return;
                };
                if matches!(msg, ClientMessage::Join { .. }) && !self.may_join(id, now) {
                    self.send_browser(
                        id,
                        ServerMessage::error(
                            ErrorCode::TooManyJoins,
                            "too many joins from this address; wait a minute",
                        ),
                    );
                    return;
                }
                if let Some(b) = self.streams.get_mut(&stream) {
                    b.client(now, id, msg);
                }
                self.apply(&stream);
            }
            Command::Disconnect { id } => {
                let Some(s) = self.sessions.remove(&id) else {
                    return;
                };
                if let Some(a) = self.addrs.get_mut(&s.addr) {
                    a.connections = a.connections.saturating_sub(1);
                }
                if let Some(b) = self.streams.get_mut(&s.stream) {
                    b.disconnect(now, id);
                }
                self.apply(&s.stream);
                self.forget_idle_addrs(now);
            }
            Command::Record(rec) => {
                let stream = rec.stream.clone();
                self.broadcast(&stream).record(now, &rec);
                self.apply(&stream);
            }
            Command::NativeMessage {
                stream,
                from,
                to,
                msg,
            } => {
                if let Some(b) = self.streams.get_mut(&stream) {
                    b.native_message(now, from, to, msg);
                }
                self.apply(&stream);
            }
            Command::NativeSignal {
                stream,
                from,
                to,
                signal,
            } => {
                if let Some(b) = self.streams.get_mut(&stream) {
                    b.native_signal(now, from, to, signal);
                }
                self.apply(&stream);
            }
            Command::Streams { reply } => {
                let list = self.streams.values().map(StreamSummary::of).collect();
                let _ = reply.send(list);
            }
            Command::Tree { stream, reply } => {
                let _ = reply.send(self.streams.get(&stream).map(crate::tree::snapshot));
            }
            Command::Gauges { reply } => {
                let list = self.streams.values().map(StreamGauges::of).collect();
                let _ = reply.send(list);
            }
        }
    }

    fn connect(&mut self, stream: StreamId, addr: IpAddr) -> Result<Session, Refused> {
        let limits = self.cfg.limits;
        let per_addr = self.addrs.get(&addr).map_or(0, |a| a.connections);
        if self.sessions.len() >= limits.connections || per_addr >= limits.connections_per_addr {
            self.metrics.refused();
            return Err(Refused::TooManyConnections);
        }
        let mut id = NodeId(self.rng.random());
        while self.sessions.contains_key(&id) || id == self.server || id.0 == 0 {
            id = NodeId(self.rng.random());
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        self.addrs.entry(addr).or_default().connections += 1;
        self.sessions.insert(
            id,
            SessionEntry {
                stream: stream.clone(),
                addr,
                tx,
            },
        );
        let b = self.broadcast(&stream);
        b.connect(id);
        let live = b.is_live();
        let welcome = ServerMessage::Welcome {
            node_id: id,
            stream,
            live,
            limits: Limits {
                max_message_bytes: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
                messages_per_second: limits.messages_per_second,
                burst: limits.burst,
            },
            ice_servers: if self.cfg.ice_servers.is_empty() {
                Vec::new()
            } else {
                vec![IceServer {
                    urls: self.cfg.ice_servers.clone(),
                }]
            },
        };
        Ok(Session { id, welcome, rx })
    }

    /// Counts a join against the address's budget for the last minute.
    fn may_join(&mut self, id: NodeId, now: Time) -> bool {
        let Some(addr) = self.sessions.get(&id).map(|s| s.addr) else {
            return false;
        };
        let limit = self.cfg.limits.joins_per_addr_per_minute;
        let a = self.addrs.entry(addr).or_default();
        while a
            .joins
            .front()
            .is_some_and(|t| now.since(*t) >= Duration::from_secs(60))
        {
            a.joins.pop_front();
        }
        if a.joins.len() >= limit {
            return false;
        }
        a.joins.push_back(now);
        true
    }

    fn forget_idle_addrs(&mut self, now: Time) {
        self.addrs.retain(|_, a| {
            a.connections > 0
                || a.joins
                    .back()
                    .is_some_and(|t| now.since(*t) < Duration::from_secs(60))
        });
    }

    fn broadcast(&mut self, stream: &StreamId) -> &mut Broadcast {
        if !self.streams.contains_key(stream) {
            // A new stream: follow its gossip, so its records and native nodes reach us.
            self.out(Outbound::Follow(stream.clone()));
        }
        let (server, seq) = (self.server, self.seq_start);
        self.streams
            .entry(stream.clone())
            .or_insert_with(|| Broadcast::new(stream.clone(), server, seq))
    }

    /// Applies every effect a broadcast produced.
    fn apply(&mut self, stream: &StreamId) {
        loop {
            let Some(effect) = self
                .streams
                .get_mut(stream)
                .and_then(Broadcast::poll_effect)
            else {
                return;
            };
            match effect {
                Effect::ToBrowser(id, msg) => self.send_browser(id, msg),
                Effect::Publish(rec) => self.out(Outbound::Publish(rec)),
                Effect::ToNative { from, to, msg } => self.out(Outbound::Message {
                    stream: stream.clone(),
                    from,
                    to,
                    msg,
                }),
                Effect::SignalNative { from, to, signal } => self.out(Outbound::Signal {
                    stream: stream.clone(),
                    from,
                    to,
                    signal,
                }),
            }
        }
    }

    fn send_browser(&mut self, id: NodeId, msg: ServerMessage) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.tx.try_send(msg).is_err() {
            // The browser does not read (or its task ended): drop the session rather than
            // queue without bound. Its task sees the closed channel and closes the socket.
            tracing::debug!(node = %id, "session queue full; disconnecting");
            self.metrics.slow_session();
            if let Some(s) = self.sessions.remove(&id) {
                if let Some(a) = self.addrs.get_mut(&s.addr) {
                    a.connections = a.connections.saturating_sub(1);
                }
                let now = self.now();
                if let Some(b) = self.streams.get_mut(&s.stream) {
                    b.disconnect(now, id);
                }
            }
        }
    }

    fn out(&mut self, o: Outbound) {
        if self.outbound.try_send(o).is_err() {
            self.metrics.outbound_dropped();
        }
    }
}
