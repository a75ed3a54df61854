//! The REST API and the health probe: one module per resource, each exposing
//! `router()`, merged here in [`router`].
//!
//! - [`dashboard`]: the live build dashboard at `/`.
//! - [`admin_ui`]: a local copy of the Socket.IO Admin UI at `/admin-ui/`.
//! - [`health`]: `GET /health` and `GET /ready`, for probes; no token, no job data.
//! - [`metrics`]: `GET /metrics`, Prometheus; no job data, optional `METRICS_TOKEN`.
//! - [`jobs`]: start, list, inspect and cancel jobs; download artifacts.
//! - [`history`]: a job's recorded events and its raw log.
//! - [`ingest`]: `POST /api/jobs/{id}/events`, for external workers.
//! - [`pipelines`]: the pipelines this server can run.
//! - [`rerun`]: `POST /api/jobs/{id}/rerun`, a new job like an earlier one.
//! - [`me`]: `GET /api/me`, the caller's role and projects.
//! - [`stream`], [`follow`]: following a job without Socket.IO (Server-Sent
//!   Events, a plain-text log, NDJSON).
//! - [`caller`]: the [`caller::Caller`] extractor (who is asking).
//!
//! Every route but the streaming ones (the raw log, artifact downloads, the
//! streams, the dashboard's files) answers within `REST_TIMEOUT_SECS` or with 408 and a JSON
//! error. The Socket.IO endpoint is a layer outside this router.

pub mod admin_ui;
pub mod caller;
pub mod dashboard;
pub mod follow;
pub mod health;
pub mod history;
pub mod ingest;
pub mod jobs;
pub mod me;
pub mod metrics;
pub mod pipelines;
pub mod rerun;
pub mod stream;

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::job::{JobId, JobRecord};
use crate::state::AppState;

/// Every HTTP route except the Socket.IO endpoint.
pub fn router(state: &AppState) -> Router<AppState> {
    let timeout = state.config.rest_timeout;
    let api = Router::new()
        .merge(jobs::router())
        .merge(history::router())
        .merge(ingest::router())
        .merge(pipelines::router())
        .merge(rerun::router())
        .merge(me::router())
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_| timed_out(timeout)))
                .layer(TimeoutLayer::new(timeout)),
        )
        .merge(jobs::download_router())
        .merge(history::download_router())
        .merge(stream::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            follow::intercept,
        ))
        .layer(DefaultBodyLimit::max(state.config.rest_body_limit));
    let health = health::router().merge(metrics::router()).route_layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_| timed_out(timeout)))
            .layer(TimeoutLayer::new(timeout)),
    );
    Router::new()
        .merge(health)
        .merge(dashboard::router())
        .merge(admin_ui::router(
            state.config.admin_ui.as_ref().and_then(|a| a.dir.clone()),
        ))
        .nest("/api", api)
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_method_not_allowed))
}

/// Gives axum's bare 405 (a route that exists, a method it does not take) the
/// same `{"error": …}` body as every other error, keeping its `Allow` header.
pub async fn json_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let allow = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let message = if allow.is_empty() {
        "method not allowed".to_owned()
    } else {
        format!("method not allowed (allowed: {allow})")
    };
    let body = axum::Json(serde_json::json!({ "error": message })).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(body.headers().clone());
    Response::from_parts(parts, body.into_body())
}

/// The answer to a request that took longer than `REST_TIMEOUT_SECS`.
pub async fn timed_out(after: Duration) -> ApiError {
    ApiError::Timeout(after)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// The job named by a path segment, if it exists and `caller` may act on it with `role`.
///
/// A job outside the caller's projects is answered exactly like one that does not
/// exist ([`job_not_found`]), so that a restricted caller cannot learn which ids
/// exist; a caller who can see the job but lacks `role` gets 403.
pub async fn visible_job(
    state: &AppState,
    caller: &Principal,
    role: Role,
    raw_id: &str,
) -> Result<JobRecord, ApiError> {
    let id = job_id(raw_id)?;
    let job = state
        .journal
        .job(&id)
        .await?
        .filter(|job| caller.can_see(&job.project_id))
        .ok_or_else(|| job_not_found(&id))?;
    caller.require(role, &job.project_id)?;
    Ok(job)
}

/// The answer for a job that does not exist, or that the caller may not see.
pub fn job_not_found(id: &JobId) -> ApiError {
    ApiError::NotFound(format!("job {id} not found"))
}

/// The `limit` query parameter of a listing: `default` when absent, at most `max`
/// (a larger one is lowered to it), and 0 refused rather than read as 1.
pub fn page_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ApiError::BadRequest(format!(
            "limit must be at least 1 (default {default}, at most {max})"
        ))),
        Some(n) => Ok(n.min(max)),
    }
}

/// Reads a job id from a path segment.
pub fn job_id(raw: &str) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|e| ApiError::BadRequest(format!("invalid job id: {e}")))
}
