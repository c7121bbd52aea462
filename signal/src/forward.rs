//! WHIP and WHEP handed to the broadcaster (`--origin`): the request is sent on to the same
//! path there and its answer comes back as is, so the session URL in `Location`
//! (`/whip/STREAM/ID`, relative) names the same resource here, and PATCH (trickle, ICE restart)
//! and DELETE follow it through this server too.
//!
//! Bounded: request and response bodies of at most [`MAX_BODY`], a deadline of
//! [`DEADLINE`]; an origin that cannot be reached is a 502, a slow one a 504.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;

/// The largest SDP (or trickle fragment) forwarded either way.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest a forwarded request may take (the origin gathers ICE candidates).
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Request headers passed on.
const REQUEST_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::IF_MATCH,
];
/// Response headers passed back.
const RESPONSE_HEADERS: [HeaderName; 8] = [
    header::LOCATION,
    HeaderName::from_static("accept-patch"),
    header::CONTENT_TYPE,
    header::ETAG,
    header::LINK,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    header::ALLOW,
];

/// The broadcaster's HTTP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    host: String,
    port: u16,
}

impl Origin {
    /// `http://HOST:PORT` (a trailing `/` allowed); `None` for anything else.
    pub fn parse(url: &str) -> Option<Origin> {
        let uri: hyper::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") || !matches!(uri.path(), "" | "/") {
            return None;
        }
        let authority = uri.authority()?;
        Some(Origin {
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(80),
        })
    }

    /// Sends `method path` with `body` and the passed-on `headers` to the origin and returns
    /// its answer, or a 502/504 saying why there is none.
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        match tokio::time::timeout(DEADLINE, self.send(method, path, headers, body)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(origin = %self, error = %e, "origin unreachable");
                (
                    StatusCode::BAD_GATEWAY,
                    format!("the broadcaster at {self} cannot be reached: {e}"),
                )
                    .into_response()
            }
            Err(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the broadcaster at {self} did not answer in time"),
            )
                .into_response(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended");
            }
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.to_string().trim_start_matches("http://"));
        for name in REQUEST_HEADERS {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let mut out = Response::builder().status(status);
        for name in RESPONSE_HEADERS {
            for v in resp.headers().get_all(&name) {
                out = out.header(&name, v);
            }
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("answer body: {e}"))?
            .to_bytes();
        out.body(Body::from(body)).map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_plain_http_bases() {
        let o = Origin::parse("http://127.0.0.1:8090").expect("valid");
        assert_eq!(o.to_string(), "http://127.0.0.1:8090");
        assert_eq!(
            Origin::parse("http://example.org/").map(|o| o.to_string()),
            Some("http://example.org:80".into())
        );
        for bad in [
            "https://x:1",
            "127.0.0.1:8090",
            "http://x:1/whip/demo",
            "",
            "ftp://x",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }
}
