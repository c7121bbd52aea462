//! The HTTP surface: pages, assets, the WebSocket endpoint, the JSON API, `/metrics`, and the
//! WHIP endpoint's checks (its media side comes with the native media path).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocketUpgrade};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::Instrument as _;
use treecast_tree::StreamId;

use crate::assets::{Page, asset};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::shutdown::Shutdown;
use crate::ws;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown (WebSocket tasks close).
    pub shutdown: Shutdown,
}

/// The router of every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(Page::Index.html()) }))
        .route("/watch/{stream}", get(|p| page(Page::Watch, p)))
        .route("/publish/{stream}", get(|p| page(Page::Publish, p)))
        .route("/tree/{stream}", get(|p| page(Page::Tree, p)))
        .route("/assets/{name}", get(assets))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/ws/{stream}", get(websocket))
        .route("/api/streams", get(streams))
        .route("/api/streams/{stream}/tree", get(tree))
        .route(
            "/api/probe",
            post(probe).layer(DefaultBodyLimit::max(PROBE_MAX_BYTES)),
        )
        .route("/metrics", get(metrics))
        .route("/whip/{stream}", post(whip))
        .with_state(state)
}

async fn page(page: Page, Path(stream): Path<String>) -> Response {
    match StreamId::new(stream) {
        Ok(_) => Html(page.html()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn assets(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((kind, body)) => ([(header::CONTENT_TYPE, kind)], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn websocket(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let stream = match StreamId::new(stream) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let limits = st.cfg.limits;
    upgrade
        .max_message_size(ws::transport_limit(&limits))
        .max_frame_size(ws::transport_limit(&limits))
        .on_upgrade(move |mut socket| async move {
            match st.hub.connect(stream, peer.ip()).await {
                Ok(session) => {
                    let span = tracing::info_span!("browser", node = %session.id);
                    ws::serve(socket, st.hub, session, limits, st.metrics, st.shutdown)
                        .instrument(span)
                        .await;
                }
                Err(refused) => {
                    // Say why before closing: a browser sees no HTTP status on a WebSocket.
                    let msg = ServerMessage::error(refused.code(), refused.to_string());
                    let _ = socket.send(WsMessage::Text(msg.encode().into())).await;
                    let _ = socket
                        .send(WsMessage::Close(Some(CloseFrame {
                            code: 1013,
                            reason: "try again later".into(),
                        })))
                        .await;
                }
            }
        })
}

async fn streams(State(st): State<AppState>) -> Response {
    no_store(Json(st.hub.streams().await))
}

async fn tree(State(st): State<AppState>, Path(stream): Path<String>) -> Response {
    let stream = match StreamId::new(stream) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match st.hub.tree(stream).await {
        Some(t) => no_store(Json(t)),
        None => (StatusCode::NOT_FOUND, "unknown stream").into_response(),
    }
}

/// The largest upload probe accepted.
const PROBE_MAX_BYTES: usize = 1024 * 1024;

/// The watch page times one upload here to estimate its uplink (browser/src/watch.js).
async fn probe(body: Bytes) -> StatusCode {
    tracing::trace!(bytes = body.len(), "uplink probe");
    StatusCode::NO_CONTENT
}

async fn metrics(State(st): State<AppState>) -> Response {
    let gauges = st.hub.gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(&gauges),
    )
        .into_response()
}

/// WHIP ingest (RFC 9725 section 4.2). The checks run now; the media side (handing the session
/// to the root) arrives with the native media path, so a correct request gets 501.
async fn whip(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Response {
    if StreamId::new(stream).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid stream name").into_response();
    }
    let Some(token) = st.cfg.whip_token.as_deref() else {
        return (
            StatusCode::FORBIDDEN,
            "WHIP is disabled on this server: start it with --whip-token",
        )
            .into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        let mut r = (StatusCode::UNAUTHORIZED, "wrong or missing Bearer token").into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let sdp = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/sdp"));
    if !sdp {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/sdp",
        )
            .into_response();
    }
    (
        StatusCode::NOT_IMPLEMENTED,
        "WHIP ingest is not available yet: it comes with the native media path",
    )
        .into_response()
}

fn no_store(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
