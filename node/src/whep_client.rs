//! The client half of WHEP: POST an SDP offer to a URL, get the answer (plain HTTP/1.1 over
//! hyper; `http://host:port/path` only, which is what nodes serve).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

/// Largest answer we accept.
const MAX_ANSWER: usize = 64 * 1024;
/// A parent that does not answer within this is treated as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a WHEP request failed.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    /// The URL is not `http://host:port/path`.
    #[error("unsupported URL {0:?} (expected http://host:port/path)")]
    BadUrl(String),
    /// Connecting or talking to the server failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The server is full or not ready; try again after this long.
    #[error("server busy; retry after {0:?}")]
    RetryAfter(Duration),
    /// The server answered with an error status.
    #[error("server answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The body, for the message.
        body: String,
    },
}

/// The result of a successful WHEP POST.
#[derive(Debug)]
pub struct WhepAnswer {
    /// The SDP answer.
    pub sdp: String,
    /// The session resource (`Location`), for DELETE.
    pub location: Option<String>,
}

/// POSTs `offer` to `url` and returns the answer.
pub async fn post_offer(url: &str, offer: String) -> Result<WhepAnswer, WhepError> {
    tokio::time::timeout(REQUEST_TIMEOUT, post(url, offer))
        .await
        .map_err(|_| WhepError::Http("timed out".into()))?
}

async fn post(url: &str, offer: String) -> Result<WhepAnswer, WhepError> {
    let uri: hyper::Uri = url.parse().map_err(|_| WhepError::BadUrl(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(WhepError::BadUrl(url.into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| WhepError::BadUrl(url.into()))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| WhepError::Http(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| WhepError::Http(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "WHEP connection ended");
        }
    });
    let req = Request::post(uri.path())
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(Full::new(Bytes::from(offer)))
        .map_err(|e| WhepError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| WhepError::Http(e.to_string()))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| WhepError::Http(e.to_string()))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    match status {
        StatusCode::CREATED | StatusCode::OK => Ok(WhepAnswer {
            sdp: body,
            location,
        }),
        StatusCode::SERVICE_UNAVAILABLE => Err(WhepError::RetryAfter(Duration::from_secs(
            retry_after.unwrap_or(1).clamp(1, 30),
        ))),
        status => Err(WhepError::Status { status, body }),
    }
}

/// What a treecast parent says about itself at `/api/status` (same host and port as its WHEP
/// URL): its node id and whether it receives media. `None` when it does not answer or is not a
/// treecast node.
pub async fn parent_status(whep_url: &str) -> Option<(String, bool)> {
    tokio::time::timeout(Duration::from_secs(2), get_status(whep_url))
        .await
        .ok()
        .flatten()
}

async fn get_status(whep_url: &str) -> Option<(String, bool)> {
    let uri: hyper::Uri = whep_url.parse().ok()?;
    let authority = uri.authority()?.clone();
    let stream = tokio::net::TcpStream::connect((authority.host(), authority.port_u16()?))
        .await
        .ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get("/api/status")
        .header(header::HOST, authority.as_str())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some((v["node_id"].as_str()?.to_owned(), v["receiving"].as_bool()?))
}
