//! One browser's WebSocket: decodes and rate-limits what it sends, forwards it to the hub,
//! writes what the hub sends back, pings, and closes on silence or shutdown.
//!
//! Every frame a browser sends gets either the effect it asks for or an `error` reply; none
//! ends the session except the transport's own failures (a frame beyond four times the message
//! limit is refused by the WebSocket layer, which closes the connection to protect memory).

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use tokio::time::Instant;

use crate::config::Limits;
use crate::hub::{Hub, Session};
use crate::metrics::Metrics;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::shutdown::Shutdown;

/// Runs one connection until it closes; always tells the hub at the end. The caller
/// instruments it with a span per node id.
pub async fn serve(
    mut socket: WebSocket,
    hub: Hub,
    session: Session,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) {
    let Session {
        id,
        welcome,
        mut rx,
    } = session;
    metrics.connection(true);
    let mut conn = Conn {
        limits,
        metrics: metrics.clone(),
        bucket: Bucket::new(limits.messages_per_second, limits.burst, Instant::now()),
        limited: false,
        last_heard: Instant::now(),
    };
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    let mut nonce: u32 = 0;
    if conn.send(&mut socket, &welcome).await.is_ok() {
        loop {
            tokio::select! {
                // Shutdown first, so it is answered with its close frame whatever else is ready.
                biased;
                () = shutdown.wait() => {
                    let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    }))).await;
                    break;
                }
                frame = socket.recv() => {
                    let Some(Ok(frame)) = frame else { break };
                    conn.last_heard = Instant::now();
                    match conn.frame(frame, &hub, id).await {
                        Step::Reply(msg) => {
                            if conn.send(&mut socket, &msg).await.is_err() { break; }
                        }
                        Step::Nothing => {}
                        Step::Close => break,
                    }
                }
                msg = rx.recv() => {
                    // None: the hub dropped this session (it did not read, or shutdown).
                    let Some(msg) = msg else {
                        let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                            code: 1001,
                            reason: "session ended by the server".into(),
                        }))).await;
                        break;
                    };
                    if conn.send(&mut socket, &msg).await.is_err() { break; }
                }
                _ = ping.tick() => {
                    if conn.last_heard.elapsed() > limits.idle_timeout {
                        tracing::debug!("idle; closing");
                        break;
                    }
                    nonce = nonce.wrapping_add(1);
                    // A WebSocket ping (browsers answer it themselves) and a protocol ping the
                    // page can see, so it notices a dead server too.
                    let _ = socket.send(WsMessage::Ping(Vec::new().into())).await;
                    if conn.send(&mut socket, &ServerMessage::Ping { nonce }).await.is_err() { break; }
                }
            }
        }
    }
    hub.disconnect(id).await;
    metrics.connection(false);
}

enum Step {
    Reply(ServerMessage),
    Nothing,
    Close,
}

struct Conn {
    limits: Limits,
    metrics: Arc<Metrics>,
    bucket: Bucket,
    /// A `rate_limited` error was sent and the client has not slowed down yet: drop silently.
    limited: bool,
    last_heard: Instant,
}

impl Conn {
    async fn frame(&mut self, frame: WsMessage, hub: &Hub, id: treecast_tree::NodeId) -> Step {
        let text = match frame {
            WsMessage::Text(t) => t,
            WsMessage::Binary(b) => {
                self.metrics.received(b.len());
                return self.refuse(
                    ErrorCode::Binary,
                    "binary frames are not part of the protocol",
                );
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => return Step::Nothing,
            WsMessage::Close(_) => return Step::Close,
        };
        self.metrics.received(text.len());
        if !self.bucket.take(Instant::now()) {
            if self.limited {
                return Step::Nothing;
            }
            self.limited = true;
            return Step::Reply(ServerMessage::error(
                ErrorCode::RateLimited,
                format!(
                    "more than {} messages per second; dropping until you slow down",
                    self.limits.messages_per_second
                ),
            ));
        }
        self.limited = false;
        if text.len() > self.limits.max_message_bytes {
            return self.refuse(
                ErrorCode::TooLarge,
                format!("message above {} bytes", self.limits.max_message_bytes),
            );
        }
        match ClientMessage::decode(text.as_str()) {
            Ok(ClientMessage::Ping { nonce }) => Step::Reply(ServerMessage::Pong { nonce }),
            Ok(ClientMessage::Pong { .. }) => Step::Nothing,
            Ok(msg) => {
                hub.client(id, msg).await;
                Step::Nothing
            }
            Err(e) => self.refuse(e.code(), e.to_string()),
        }
    }

    fn refuse(&self, code: ErrorCode, message: impl Into<String>) -> Step {
        Step::Reply(ServerMessage::error(code, message))
    }

    async fn send(&self, socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), axum::Error> {
        if matches!(msg, ServerMessage::Error { .. }) {
            self.metrics.error_sent();
        }
        let text = msg.encode();
        self.metrics.sent(text.len());
        socket.send(WsMessage::Text(text.into())).await
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The largest frame the WebSocket layer accepts before closing: oversized messages up to this
/// get a `too_large` reply and the session goes on.
pub fn transport_limit(limits: &Limits) -> usize {
    limits.max_message_bytes.saturating_mul(4)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Saved tokens never exceed the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }
}
