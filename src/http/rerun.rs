//! `POST /api/jobs/{id}/rerun`: a new job of the same project and pipeline.
//!
//! The same rules as `POST /api/jobs`: the `builder` role on the job's project. A
//! job the caller may not see is answered like one that does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use super::visible_job;
use crate::auth::Role;
use crate::error::ApiError;
use crate::http::caller::Caller;
use crate::runner::SubmitError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/jobs/{id}/rerun", post(rerun))
}

async fn rerun(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let original = visible_job(&state, &caller, Role::Builder, &id).await?;
    let job = state
        .runner
        .submit(original.project_id.clone(), &original.pipeline)
        .map_err(|e| match e {
            SubmitError::UnknownPipeline(_) => ApiError::BadRequest(e.to_string()),
            SubmitError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            SubmitError::Record(e) => ApiError::Internal(e.into()),
        })?;
    tracing::info!(job_id = %job.id, rerun_of = %original.id, "job re-run");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "jobId": job.id,
            "projectId": job.project_id,
            "pipeline": job.pipeline,
            "status": job.status,
            "rerunOf": original.id,
        })),
    ))
}
