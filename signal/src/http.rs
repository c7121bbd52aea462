//! The HTTP surface: pages, assets, the WebSocket endpoint, the JSON API, `/metrics`, and WHIP
//! and WHEP handed to the broadcaster (`forward`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocketUpgrade};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use tracing::Instrument as _;
use treecast_tree::StreamId;

use crate::assets::{Page, asset};
use crate::config::Config;
use crate::forward::{self, Origin};
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
    /// Where WHIP and WHEP are handed (`--origin`).
    pub origin: Option<Origin>,
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
        .route(
            "/whip/{stream}",
            post(whip).layer(DefaultBodyLimit::max(forward::MAX_BODY)),
        )
        .route(
            "/whip/{stream}/{session}",
            patch(session)
                .delete(session)
                .layer(DefaultBodyLimit::max(forward::MAX_BODY)),
        )
        .route(
            "/whep/{stream}",
            post(whep).layer(DefaultBodyLimit::max(forward::MAX_BODY)),
        )
        .route(
            "/whep/{stream}/{session}",
            patch(session)
                .delete(session)
                .layer(DefaultBodyLimit::max(forward::MAX_BODY)),
        )
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

/// WHIP ingest (RFC 9725 section 4.2), handed to the broadcaster (`--origin`). This server
/// checks its own token first when it has one (`--whip-token`); the broadcaster checks its own.
async fn whip(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if StreamId::new(stream.clone()).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid stream name").into_response();
    }
    if st.cfg.whip_token.is_none() && st.origin.is_none() {
        return (
            StatusCode::FORBIDDEN,
            "WHIP is disabled on this server: start it with --origin (the broadcaster's HTTP address)",
        )
            .into_response();
    }
    if let Some(refused) = check_token(&st, &headers) {
        return refused;
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
    match &st.origin {
        Some(o) => {
            o.forward(Method::POST, &format!("/whip/{stream}"), &headers, body)
                .await
        }
        None => (
            StatusCode::NOT_IMPLEMENTED,
            "this server has no broadcaster to hand WHIP to: start it with --origin",
        )
            .into_response(),
    }
}

/// WHEP playback (RFC 9725's sibling, draft-ietf-wish-whep) for standard players, handed to the
/// broadcaster (`--origin`); browsers use /watch/STREAM, which places them in the tree.
async fn whep(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if StreamId::new(stream.clone()).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid stream name").into_response();
    }
    match &st.origin {
        Some(o) => {
            o.forward(Method::POST, &format!("/whep/{stream}"), &headers, body)
                .await
        }
        None => (
            StatusCode::NOT_IMPLEMENTED,
            "this server has no broadcaster to hand WHEP to (start it with --origin); \
             browsers watch at /watch/STREAM",
        )
            .into_response(),
    }
}

/// PATCH (trickle, ICE restart) and DELETE of a WHIP or WHEP session, handed on like the POST
/// that made it.
async fn session(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if StreamId::new(stream).is_err() || !safe(&session) {
        return (StatusCode::BAD_REQUEST, "invalid session URL").into_response();
    }
    let Some(origin) = &st.origin else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    if uri.path().starts_with("/whip/")
        && let Some(refused) = check_token(&st, &headers)
    {
        return refused;
    }
    origin.forward(method, uri.path(), &headers, body).await
}

/// `Some(401)` when this server has a WHIP token and the request does not present it.
fn check_token(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    let token = st.cfg.whip_token.as_deref()?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        return None;
    }
    let mut r = (StatusCode::UNAUTHORIZED, "wrong or missing Bearer token").into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

fn no_store(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
