//! The `Origin` check of the Socket.IO endpoint, against cross-site WebSocket
//! hijacking.
//!
//! CORS only stops a foreign page from *reading* polling answers; a WebSocket
//! handshake is not subject to it at all, so any page a user opens could connect
//! to a server on their machine (with `AUTH_MODE=none`, as them). When
//! `WEBSOCKET_CORS_ORIGIN` lists origins, this layer answers every Engine.IO
//! request under the endpoint's path (WebSocket upgrades, polling `GET` and `POST`)
//! whose `Origin` header is not in the list with 403 and a JSON error, before
//! socketioxide sees it. A request without `Origin` comes from a non-browser client
//! and passes. With `*` the layer is not installed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The endpoint's path and the origins allowed to use it.
#[derive(Debug, Clone)]
pub struct OriginGuard {
    req_path: Arc<str>,
    allowed: Arc<[HeaderValue]>,
}

impl OriginGuard {
    pub fn new(req_path: &str, allowed: &[HeaderValue]) -> Self {
        Self {
            req_path: req_path.into(),
            allowed: allowed.into(),
        }
    }

    /// Whether a request for `path` with `origin` may go on.
    pub fn admits(&self, path: &str, origin: Option<&HeaderValue>) -> bool {
        if !super::request_head::is_socket_io_path(path, &self.req_path) {
            return true;
        }
        origin_allowed(&self.allowed, origin)
    }
}

/// Whether a WebSocket handshake (or an Engine.IO request) with `origin` may go
/// on when only `allowed` origins may connect: no `Origin` (a non-browser
/// client) passes; otherwise it must be one of them (ASCII case ignored). The
/// compatibility gateways check their handshakes with it too.
pub fn origin_allowed(allowed: &[HeaderValue], origin: Option<&HeaderValue>) -> bool {
    origin.is_none_or(|origin| {
        allowed
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    })
}

/// The middleware: `axum::middleware::from_fn_with_state(guard, check)`.
pub async fn check(State(guard): State<OriginGuard>, req: Request, next: Next) -> Response {
    if guard.admits(req.uri().path(), req.headers().get(header::ORIGIN)) {
        return next.run(req).await;
    }
    tracing::info!(
        origin = ?req.headers().get(header::ORIGIN),
        path = %req.uri().path(),
        "Socket.IO request refused: origin not in WEBSOCKET_CORS_ORIGIN"
    );
    ApiError::Forbidden("this origin may not connect (see WEBSOCKET_CORS_ORIGIN)".into())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_or_none_reach_the_endpoint() {
        let guard = OriginGuard::new(
            "/ws",
            &[HeaderValue::from_static("https://app.example.com")],
        );
        let origin = HeaderValue::from_static;
        assert!(guard.admits("/ws/", Some(&origin("https://app.example.com"))));
        assert!(guard.admits("/ws/", Some(&origin("HTTPS://APP.example.com"))));
        assert!(guard.admits("/ws/", None));
        for foreign in [
            "https://evil.example",
            "null",
            "https://app.example.com.evil.example",
            "http://app.example.com",
        ] {
            assert!(!guard.admits("/ws/", Some(&origin(foreign))), "{foreign}");
            assert!(!guard.admits("/ws", Some(&origin(foreign))), "{foreign}");
        }
        // Other routes are CORS's business.
        assert!(guard.admits("/api/jobs", Some(&origin("https://evil.example"))));
        assert!(guard.admits("/wsx", Some(&origin("https://evil.example"))));
    }
}
