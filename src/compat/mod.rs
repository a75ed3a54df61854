//! Compatibility gateways: the plain-WebSocket and REST endpoints that the
//! frontends of the four other seed systems speak, so that they watch buildcast
//! builds unchanged (the specification is `shared/compat/SPEC.md`).
//!
//! A gateway is one more consumer of the journal's recorded events, like the
//! Socket.IO fan-out and the HTTP streams: it reads a job's events with a
//! [`crate::tap::Follower`] ([`feed`]) and translates them into its seed's
//! messages. The runner, the journal and the store know nothing of gateways.
//!
//! - Translation, one pure module per seed (events + job state → JSON text):
//!   [`build`] (000 VibeAI), [`jobs`] (001 a6hub), [`builds`] (003 reqpm),
//!   [`projects`] (004 project generator); [`steps`] is the step model they share.
//! - [`sources`]: per seed, what a connection sends (a feed joined to a translation).
//! - [`handshake`]: the WebSocket endpoints: origin, id, token, connection
//!   limits, the seeds' refusal codes. [`session`]: the session they all run
//!   (sending, pings, idle rule, shutdown, slow clients).
//! - [`rest`]: seed 000's and 004's REST endpoints.
//!
//! The routes are matched *before* the Socket.IO layer ([`router`] is served in
//! front of it by `startup`): socketioxide answers every path under its
//! `WEBSOCKET_PATH` (`/ws`), which seeds 000 and 003 live under. A gateway
//! turned off by `COMPAT_GATEWAYS` keeps its paths, answered 404.

pub mod build;
pub mod builds;
pub mod feed;
pub mod handshake;
pub mod jobs;
pub mod projects;
pub mod rest;
pub mod session;
pub mod sources;
pub mod steps;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::http::HeaderValue;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Router};
use socketioxide::SocketIo;
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;

use crate::config::CorsOrigins;
use crate::error::ApiError;
use crate::state::AppState;

/// Gateway numbers, in the order of [`crate::connections::GATEWAY_NAMES`].
pub const BUILD: usize = 0;
pub const JOBS: usize = 1;
pub const BUILDS: usize = 2;
pub const PROJECTS: usize = 3;

/// Whether a client message is an application ping: the text `ping`, or a JSON
/// object whose `type` is `ping`.
pub fn is_ping(text: &str) -> bool {
    let text = text.trim();
    if text.eq_ignore_ascii_case("ping") {
        return true;
    }
    text.starts_with('{')
        && serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("ping"))
}

/// Whether `path` is a gateway's, among those under the Socket.IO path `/ws`
/// (so that the access log does not take it for a Socket.IO request).
pub fn is_gateway_path(path: &str) -> bool {
    path.starts_with("/ws/build/") || path.starts_with("/ws/builds/") || path == "/ws/active-builds"
}

async fn gone() -> ApiError {
    ApiError::NotFound(
        "no such route (this compatibility gateway is off: see COMPAT_GATEWAYS)".into(),
    )
}

/// `route` when `on`, else 404 for every method.
fn maybe(on: bool, route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    if on { route } else { axum::routing::any(gone) }
}

/// The gateways' routes. `origins`: the allowed origins (`WEBSOCKET_CORS_ORIGIN`),
/// as header values; `io`: the Socket.IO endpoint, when mounted.
pub fn router(
    state: &AppState,
    origins: Vec<HeaderValue>,
    io: Option<SocketIo>,
) -> Router<AppState> {
    let on = &state.config.compat;
    let timeout = state.config.rest_timeout;
    // Like `/api`: a REST answer within REST_TIMEOUT_SECS (the WebSockets are exempt).
    let rest = Router::new()
        .route("/build/start", maybe(on.build, post(rest::start)))
        .route("/build/download", maybe(on.build, get(rest::download)))
        .route(
            "/ws/active-builds",
            maybe(on.build, get(rest::active_builds)),
        )
        .route(
            "/api/projects/{project_id}/generate",
            maybe(on.projects, post(rest::generate)),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_| {
                    crate::http::timed_out(timeout)
                }))
                .layer(TimeoutLayer::new(timeout)),
        );
    let origins = match &state.config.cors {
        CorsOrigins::Any => handshake::Origins(None),
        CorsOrigins::List(_) => handshake::Origins(Some(Arc::from(origins))),
    };
    Router::new()
        .route(
            "/ws/build/{build_id}",
            maybe(on.build, get(handshake::build)),
        )
        .route(
            "/api/v1/ws/jobs/{job_id}/updates",
            maybe(on.jobs, get(handshake::jobs)),
        )
        .route("/ws/builds/{id}", maybe(on.builds, get(handshake::builds)))
        .route("/ws/builds/{id}/", maybe(on.builds, get(handshake::builds)))
        .route(
            "/api/ws/projects/{project_id}",
            maybe(on.projects, get(handshake::projects)),
        )
        .merge(rest)
        .layer(Extension(origins))
        .layer(Extension(rest::SocketIoHandle(io)))
        .layer(axum::middleware::map_response(
            crate::http::json_method_not_allowed,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_paths_under_ws() {
        assert!(is_gateway_path("/ws/build/j1"));
        assert!(is_gateway_path("/ws/builds/j1/"));
        assert!(is_gateway_path("/ws/active-builds"));
        assert!(!is_gateway_path("/ws/"));
        assert!(!is_gateway_path("/ws"));
    }

    #[test]
    fn pings_are_text_or_json() {
        assert!(is_ping("ping"));
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(!is_ping(r#"{"type":"pong"}"#));
        assert!(!is_ping("pingpong"));
        assert!(!is_ping("[1]"));
    }
}
