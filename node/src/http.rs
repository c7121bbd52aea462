//! The node's HTTP API: WHEP playback (`POST /whep/{stream}`, `DELETE /whep/{stream}/{session}`),
//! `GET /api/status`, `GET /api/streams/{stream}/tree` (the gossiped tree), and a plain WHEP
//! player page at `GET /watch/{stream}`.
//!
//! Error mapping: wrong content type 415, body over [`MAX_OFFER`] 413, unknown stream 404,
//! malformed SDP 400, node full (or its parent not yet connected) 503 with `Retry-After`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::child::{self, AttachError};
use crate::node::{NodeState, Refusal};
use crate::status::Status;

/// Largest SDP offer accepted. Browser offers are 3-8 KiB.
pub const MAX_OFFER: usize = 64 * 1024;

/// The router for one node.
pub fn router(node: Arc<NodeState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([header::LOCATION, header::ETAG, header::LINK]);
    Router::new()
        .route("/whep/{stream}", post(whep_offer))
        .route("/whep/{stream}/{session}", delete(whep_delete))
        .route("/api/status", get(status))
        .route("/api/streams/{stream}/tree", get(tree))
        .route("/watch/{stream}", get(watch_page))
        .merge(crate::whip::router())
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        .layer(cors)
        .with_state(node)
}

/// A plain WHEP player for this node's stream: the quickest way to look at what a node carries.
const WATCH_PAGE: &str = include_str!("../assets/watch.html");

async fn watch_page(State(node): State<Arc<NodeState>>, Path(stream): Path<String>) -> Response {
    if stream != node.stream.as_str() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown stream {stream:?}\n"),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        WATCH_PAGE,
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn busy(message: &str, retry_after_s: u32) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

async fn whep_offer(
    State(node): State<Arc<NodeState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if stream != node.stream.as_str() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown stream {stream:?}\n"),
        );
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !is_sdp {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/sdp\n",
        );
    }
    if !body.trim_start().starts_with("v=0") {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed SDP: must start with v=0\n",
        );
    }
    let slot = match node.reserve_child() {
        Ok(slot) => slot,
        Err(Refusal::Full) => return busy("this node already feeds its maximum of children\n", 5),
    };
    let Some(tracks) = node.tracks() else {
        return busy("not receiving the stream yet\n", 1);
    };
    let feeds: Vec<_> = tracks.iter().cloned().collect();
    match child::attach(&node, slot, feeds, body, None, node.fast_start).await {
        Ok((link, answer)) => {
            let location = format!("/whep/{}/{}", node.stream.as_str(), link.id);
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            r
        }
        Err(AttachError::BadOffer(e)) => {
            tracing::info!(error = %e, "rejected a WHEP offer");
            error(
                StatusCode::BAD_REQUEST,
                format!("malformed or unusable SDP offer: {e}\n"),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "attaching a child failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

async fn whep_delete(
    State(node): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
) -> Response {
    if stream != node.stream.as_str() {
        return error(StatusCode::NOT_FOUND, "unknown stream\n");
    }
    match node.remove_child(&session) {
        Some(link) => {
            link.close().await;
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "unknown session\n"),
    }
}

/// The gossiped tree as this node sees it (`treecast_tree::snapshot::TreeSnapshot`).
async fn tree(State(node): State<Arc<NodeState>>, Path(stream): Path<String>) -> Response {
    if stream != node.stream.as_str() {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown stream {stream:?}\n"),
        );
    }
    match node.tree().snapshot {
        Some(snapshot) => axum::Json(snapshot.as_ref().clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this node pulls from a fixed parent and is not part of a gossiped tree\n",
        ),
    }
}

async fn status(State(node): State<Arc<NodeState>>) -> axum::Json<Status> {
    axum::Json(Status::of(&node))
}
