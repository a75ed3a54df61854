//! `POST /api/jobs/{id}/events`: external workers report a build's events.
//!
//! The worker authenticates with `Authorization: Bearer <WORKER_TOKEN>` (compared
//! in constant time). The body is one event or an array; a batch is validated
//! whole, and a batch with any invalid item records nothing.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::job_id;
use crate::cluster::Route;
use crate::error::ApiError;
use crate::ingest::parse_batch;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/jobs/{id}/events", post(ingest))
}

#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn ingest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_worker(&state, &headers)?;
    let Json(body) = body?;
    let id = job_id(&id)?;
    let events = parse_batch(&body)?;
    if let Some(cluster) = &state.cluster
        && cluster.route(&id).await == Route::Elsewhere
    {
        // Another node numbers this job: hand the batch to it, in order.
        let messages: Vec<String> = match &body {
            Value::Array(items) => items.iter().map(Value::to_string).collect(),
            item => vec![item.to_string()],
        };
        cluster
            .forward(&id, &messages)
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot reach the job's node: {e}")))?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "jobId": id, "accepted": events.len(), "forwarded": true })),
        ));
    }
    let last_seq = state
        .ingestor
        .apply(&id, &events, crate::ingest::Source::Rest)
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "jobId": id,
            "accepted": events.len(),
            "lastSeq": last_seq,
        })),
    ))
}

fn check_worker(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config.worker_token else {
        return Err(ApiError::Unavailable(
            "worker ingest is disabled: set WORKER_TOKEN".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
