//! `/api/jobs`: start a build, list and inspect jobs, cancel one, download its
//! artifacts.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;

use super::caller::Caller;
use super::{job_id, job_not_found, visible_job};
use crate::auth::Role;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::job::{JobId, ProjectId, Status};
use crate::runner::CancelError;
use crate::state::AppState;
use crate::store::JobFilter;
use crate::wire::JobView;

/// Most jobs one listing returns.
const MAX_LIST: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(create).get(list))
        .route("/jobs/{id}", get(show))
        .route("/jobs/{id}/cancel", post(cancel))
}

/// The routes that stream a file: no request timeout.
pub fn download_router() -> Router<AppState> {
    Router::new().route("/jobs/{id}/artifacts/{name}", get(artifact))
}

/// Body of `POST /api/jobs`. Unknown fields are refused, so a typo is not ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJob {
    project_id: String,
    pipeline: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    job_id: JobId,
    project_id: ProjectId,
    pipeline: String,
    status: Status,
}

#[tracing::instrument(skip_all, fields(project_id = %body.project_id, pipeline = %body.pipeline))]
async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let project_id = ProjectId::parse(&body.project_id)
        .map_err(|e| ApiError::BadRequest(format!("invalid projectId: {e}")))?;
    caller.require(Role::Builder, &project_id)?;
    let job = state.runner.submit(project_id, &body.pipeline)?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            job_id: job.id,
            project_id: job.project_id,
            pipeline: job.pipeline,
            status: job.status,
        }),
    ))
}

/// Query of `GET /api/jobs`. Unknown parameters (`token`, a cache buster) are
/// ignored; the known ones are checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status: Option<ListStatus>,
    project_id: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ListStatus {
    Active,
    Finished,
}

#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project_id = query
        .project_id
        .map(|p| ProjectId::parse(&p))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("invalid projectId: {e}")))?;
    if let Some(project) = &project_id {
        caller.require(Role::Viewer, project)?;
    }
    let filter = JobFilter {
        active: query.status.map(|s| matches!(s, ListStatus::Active)),
        project_id,
        limit: super::page_limit(query.limit, 100, MAX_LIST)?,
    };
    let jobs = state.journal.jobs(filter).await?;
    let jobs: Vec<JobView> = jobs
        .iter()
        .filter(|job| caller.can_see(&job.project_id))
        .map(JobView::from)
        .collect();
    Ok(Json(serde_json::json!({ "jobs": jobs })))
}

#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = visible_job(&state, &caller, Role::Viewer, &id).await?;
    Ok(Json(JobView::from(&job)))
}

#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = job_id(&id)?;
    if let Some(job) = state.journal.job(&id).await? {
        if !caller.can_see(&job.project_id) {
            return Err(job_not_found(&id));
        }
        caller.require(Role::Builder, &job.project_id)?;
    }
    match state.runner.cancel(&id).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "jobId": id, "status": "cancelling" })),
        )),
        Err(CancelError::NotFound) => Err(job_not_found(&id)),
        Err(CancelError::Finished) => {
            Err(ApiError::Conflict(format!("job {id} has already finished")))
        }
        Err(CancelError::NotHere) => match &state.cluster {
            Some(cluster) => {
                cluster.forward_cancel(&id).await.map_err(|e| {
                    ApiError::Unavailable(format!("cannot reach the job's node: {e}"))
                })?;
                Ok((
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({ "jobId": id, "status": "cancelling" })),
                ))
            }
            None => Err(ApiError::Conflict(format!("job {id} runs on another node"))),
        },
    }
}

#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn artifact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = visible_job(&state, &caller, Role::Viewer, &id).await?;
    let id = job.id.clone();
    // Only names the job recorded are served: no path from the URL reaches the disk.
    let Some(name) = job.artifacts.iter().find(|a| **a == name) else {
        return Err(ApiError::NotFound(format!(
            "job {id} has no artifact {name:?}"
        )));
    };
    // The recorded name may predate the naming rule, or the folder may hold a
    // symlink: the file is opened confined to the job's artifacts folder.
    let file = state.runner.open_artifact(&id, name).await.map_err(|e| {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(job_id = %id, artifact = ?name, error = %e, "artifact not served");
        }
        ApiError::NotFound(format!("artifact {name:?} is no longer stored"))
    })?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let mut response = (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", name.replace('"', "")),
            ),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response();
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length.into());
    }
    Ok(response)
}
