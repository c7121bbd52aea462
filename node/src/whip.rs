//! WHIP ingest (RFC 9725) at the root: a publisher (OBS, a browser, aiortc) POSTs its offer to
//! `/whip/{stream}` with `Authorization: Bearer <token>`; its tracks become the broadcast's
//! feeds, exactly as a parent's tracks do at a relay.
//!
//! - POST: 401 without the right token, 415 without `application/sdp`, 409 while another
//!   publisher is live, 400 for SDP webrtc cannot answer; 201 with the answer, `Location`
//!   (the session) and `ETag`.
//! - PATCH on the session (RFC 9725 section 4.3.1): `application/trickle-ice-sdpfrag` with
//!   candidates, 204. An ICE restart is not supported: 422, as section 4.3.1 requires of a
//!   session that supports trickle but not restarts ("it MUST return a 422 Unprocessable
//!   Content error response for the HTTP PATCH requests that are not supported"; 405 would
//!   mean no PATCH at all). A restart is a PATCH with `If-Match: "*"` (section 4.3.3), and
//!   also any fragment whose `a=ice-ufrag` differs from the publisher's (section 4.3.3: such
//!   a request MUST be considered a restart). The refused restart leaves the session and its
//!   ICE session as they were, as section 4.3.3 requires. An `If-Match` that is not the
//!   session's ETag: 412. The 201 advertises `Accept-Patch`.
//! - DELETE on the session: closes it, 200; unknown session 404.
//! - PATCH and DELETE need the bearer token as POST does (401), section 4.8.
//!
//! One publisher at a time: a second one is refused (409) while the first is live. Once it left
//! (DELETE, or its connection failed), a new publisher continues the same feeds as a new
//! source, as a relay's new parent does: viewers see continuous sequence numbers and
//! timestamps and pick up at its first keyframe. It must send the same codecs (a track of
//! another codec is refused and logged: the viewers negotiated the first one).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::node::NodeState;
use crate::peer::Direction;
use crate::upstream::{adopt_tracks, sending_kinds};

/// The WHIP side of a root node.
pub struct WhipIngest {
    token: String,
    /// Lock: taken to claim, read or end the one session; never across an `.await`.
    session: Mutex<SessionSlot>,
}

enum SessionSlot {
    Free,
    /// Someone is negotiating or publishing.
    Live(Session),
    /// The publisher left; the feeds stay fixed (see the module docs).
    Ended,
}

#[derive(Clone)]
struct Session {
    id: String,
    etag: String,
    /// The publisher's ICE username fragment, from its offer: a PATCH with another one is an
    /// ICE restart.
    ufrag: Option<String>,
    pc: Option<Arc<dyn PeerConnection>>,
}

impl std::fmt::Debug for WhipIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipIngest").finish_non_exhaustive()
    }
}

impl WhipIngest {
    /// Ingest accepting publishers that present `token`.
    pub fn new(token: String) -> Self {
        Self {
            token,
            session: Mutex::new(SessionSlot::Free),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, SessionSlot> {
        // A poisoned lock means a panic mid-update of a plain enum; its value is still usable.
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.token.as_bytes()))
    }
}

/// Compares without an early exit, so the token cannot be guessed byte by byte from timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The WHIP routes.
pub fn router() -> Router<Arc<NodeState>> {
    Router::new()
        .route("/whip/{stream}", post(publish))
        .route("/whip/{stream}/{session}", patch(trickle).delete(unpublish))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(expected))
}

async fn publish(
    State(node): State<Arc<NodeState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(whip) = node.whip.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this node does not ingest over WHIP");
    };
    if stream != node.stream.as_str() {
        return error(StatusCode::NOT_FOUND, "unknown stream");
    }
    if !whip.authorized(&headers) {
        return unauthorized();
    }
    if !content_type_is(&headers, "application/sdp") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/sdp",
        );
    }
    let expected = sending_kinds(&body);
    if expected.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the offer sends no audio or video");
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let etag = format!("\"{}\"", uuid::Uuid::new_v4().simple());
    {
        let mut slot = whip.slot();
        if matches!(*slot, SessionSlot::Live(_)) {
            return error(
                StatusCode::CONFLICT,
                "a publisher is already live on this stream",
            );
        }
        *slot = SessionSlot::Live(Session {
            id: id.clone(),
            etag: etag.clone(),
            ufrag: ice_ufrag(&body).map(str::to_owned),
            pc: None,
        });
    }
    match accept(&node, body, &expected, id.clone()).await {
        Ok((pc, answer)) => {
            if let SessionSlot::Live(s) = &mut *whip.slot() {
                s.pc = Some(pc);
            }
            let location = format!("/whip/{}/{id}", node.stream.as_str());
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            h.insert(
                header::HeaderName::from_static("accept-patch"),
                HeaderValue::from_static("application/trickle-ice-sdpfrag"),
            );
            for (name, value) in [(header::LOCATION, location), (header::ETAG, etag)] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            r
        }
        Err(message) => {
            *whip.slot() = SessionSlot::Free;
            error(StatusCode::BAD_REQUEST, &message)
        }
    }
}

/// Answers the publisher's offer and adopts its tracks in the background.
async fn accept(
    node: &Arc<NodeState>,
    offer: String,
    expected: &[crate::codec::MediaKind],
    id: String,
) -> Result<(Arc<dyn PeerConnection>, String), String> {
    let mut peer = node
        .factory
        .build(node.upstream.clone(), Direction::Receive)
        .await
        .map_err(|e| e.to_string())?;
    let negotiated = async {
        let offer = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
        peer.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = peer
            .pc
            .create_answer(None)
            .await
            .map_err(|e| e.to_string())?;
        peer.finish_local(answer).await.map_err(|e| e.to_string())
    };
    let answer = match negotiated.await {
        Ok(a) => a,
        Err(e) => {
            let _ = peer.pc.close().await;
            return Err(format!("malformed or unusable SDP offer: {e}"));
        }
    };
    let pc = peer.pc.clone();
    let node = node.clone();
    let expected = expected.to_vec();
    tokio::spawn(async move {
        let tracks = adopt_tracks(&node, &mut peer.tracks, &expected, "whip").await;
        tracing::info!(tracks = tracks.iter().count(), "publisher tracks started");
        node.set_tracks(tracks);
        // Keep the state receiver alive with the connection; end the session when it fails.
        let _ = peer
            .state
            .wait_for(|s| {
                matches!(
                    s,
                    webrtc::peer_connection::RTCPeerConnectionState::Failed
                        | webrtc::peer_connection::RTCPeerConnectionState::Closed
                )
            })
            .await;
        if let Some(whip) = node.whip.as_ref() {
            let mut slot = whip.slot();
            // Only this session's end: a newer publisher may hold the slot already.
            if matches!(&*slot, SessionSlot::Live(s) if s.id == id) {
                *slot = SessionSlot::Ended;
            }
        }
        tracing::info!("publisher gone");
    });
    Ok((pc, answer))
}

async fn trickle(
    State(node): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(whip) = node.whip.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this node does not ingest over WHIP");
    };
    if !whip.authorized(&headers) {
        return unauthorized();
    }
    let live = match &*whip.slot() {
        SessionSlot::Live(s) if s.id == session && stream == node.stream.as_str() => s.clone(),
        _ => return error(StatusCode::NOT_FOUND, "unknown session"),
    };
    if let Some(tag) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if tag.trim() == "*" {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ICE restart is not supported; trickle candidates are",
            );
        }
        if tag.trim() != live.etag {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "ETag does not match the session",
            );
        }
    }
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    if let Some(ufrag) = ice_ufrag(&body)
        && live
            .ufrag
            .as_deref()
            .is_some_and(|current| current != ufrag)
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a new ice-ufrag is an ICE restart, which is not supported; trickle candidates are",
        );
    }
    let Some(pc) = live.pc else {
        return error(StatusCode::CONFLICT, "the session is still being set up");
    };
    // RFC 8840: the fragment carries a=candidate lines (and a=end-of-candidates).
    for line in body.lines().map(str::trim) {
        let Some(candidate) = line.strip_prefix("a=") else {
            continue;
        };
        if !candidate.starts_with("candidate:") {
            continue;
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.to_owned(),
            sdp_mline_index: Some(0),
            ..Default::default()
        };
        if let Err(e) = pc.add_ice_candidate(init).await {
            return error(StatusCode::BAD_REQUEST, &format!("bad candidate: {e}"));
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The first `a=ice-ufrag` value of an SDP or SDP fragment.
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

async fn unpublish(
    State(node): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(whip) = node.whip.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this node does not ingest over WHIP");
    };
    if !whip.authorized(&headers) {
        return unauthorized();
    }
    let pc = {
        let mut slot = whip.slot();
        match &*slot {
            SessionSlot::Live(s) if s.id == session && stream == node.stream.as_str() => {
                let pc = s.pc.clone();
                *slot = SessionSlot::Ended;
                pc
            }
            _ => return error(StatusCode::NOT_FOUND, "unknown session"),
        }
    };
    if let Some(pc) = pc {
        let _ = pc.close().await;
    }
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_check() {
        let whip = WhipIngest::new("s3cret".into());
        let mut h = HeaderMap::new();
        assert!(!whip.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(whip.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(!whip.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!whip.authorized(&h));
    }
}
