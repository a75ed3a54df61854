//! The REST endpoints of the seeds' frontends: seed 000's `POST /build/start`,
//! `GET /build/download` and `GET /ws/active-builds`, and seed 004's
//! `POST /api/projects/{id}/generate`. Errors are buildcast's `{"error": …}`.
//! Unknown fields of the request bodies are ignored, as the seeds' FastAPI
//! originals ignore them (SPEC 7.27), unlike buildcast's own `/api`.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;

use crate::auth::Role;
use crate::error::{ApiError, ApiQuery};
use crate::http::caller::Caller;
use crate::http::visible_job;
use crate::job::{JobId, ProjectId};
use crate::state::AppState;

/// The Socket.IO endpoint, when mounted (its `job:` rooms count as watchers).
#[derive(Clone)]
pub struct SocketIoHandle(pub Option<SocketIo>);

/// A JSON object body of a compat endpoint; empty is `{}`.
fn object(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest("expected a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(format!("invalid JSON: {e}"))),
    }
}

/// A string field of a body (`None` when absent or null).
fn text_field(
    body: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::BadRequest(format!("{name} must be a string"))),
    }
}

/// `POST /build/start {"project_id", "build_type"}` → `{"build_id"}`.
pub async fn start(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = object(&body)?;
    let project = text_field(&body, "project_id")?
        .ok_or_else(|| ApiError::BadRequest("project_id is required".into()))?;
    let project = ProjectId::parse(&project)
        .map_err(|e| ApiError::BadRequest(format!("invalid project_id: {e}")))?;
    let build_type = text_field(&body, "build_type")?
        .ok_or_else(|| ApiError::BadRequest("build_type is required (a pipeline name)".into()))?;
    caller.require(Role::Builder, &project)?;
    let job = state.runner.submit(project, &build_type)?;
    Ok(Json(json!({ "build_id": job.id })))
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    build_id: Option<String>,
}

/// `GET /build/download?build_id=` → `{"build_id", "files", "urls"}`.
pub async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = query
        .build_id
        .ok_or_else(|| ApiError::BadRequest("build_id is required".into()))?;
    let job = visible_job(&state, &caller, Role::Viewer, &id).await?;
    let urls: Vec<String> = job
        .artifacts
        .iter()
        .map(|name| {
            let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            format!("/api/jobs/{}/artifacts/{name}", job.id)
        })
        .collect();
    Ok(Json(
        json!({ "build_id": job.id, "files": job.artifacts, "urls": urls }),
    ))
}

/// `GET /ws/active-builds` → `{"active_builds": [{"build_id", "clients"}]}`:
/// jobs watched on this node by a gateway connection, an HTTP stream or a
/// Socket.IO subscriber,
/// with how many watch each; only projects the caller may see.
pub async fn active_builds(
    State(state): State<AppState>,
    Extension(io): Extension<SocketIoHandle>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    if caller.role < Role::Viewer {
        return Err(ApiError::Forbidden("this needs the viewer role".into()));
    }
    let mut clients: BTreeMap<JobId, usize> = BTreeMap::new();
    for (id, project, n) in state.watchers.all() {
        if caller.can_see(&project) {
            *clients.entry(id).or_default() += n;
        }
    }
    if let Some(io) = &io.0 {
        let rooms = io.rooms().await.unwrap_or_else(|e| {
            tracing::warn!(error = ?e, "could not list the Socket.IO rooms");
            Vec::new()
        });
        let mut members: BTreeMap<JobId, HashSet<String>> = BTreeMap::new();
        for room in rooms {
            let Some(id) = room
                .strip_prefix("job:")
                .or_else(|| room.strip_prefix("logs:"))
                .and_then(|id| JobId::parse(id).ok())
            else {
                continue;
            };
            let sids = io.within(room.clone()).sockets();
            members
                .entry(id)
                .or_default()
                .extend(sids.iter().map(|s| s.id.to_string()));
        }
        for (id, sids) in members {
            if sids.is_empty() {
                continue;
            }
            let visible = state
                .journal
                .job(&id)
                .await?
                .is_some_and(|job| caller.can_see(&job.project_id));
            if visible {
                *clients.entry(id).or_default() += sids.len();
            }
        }
    }
    let active: Vec<Value> = clients
        .into_iter()
        .map(|(id, n)| json!({ "build_id": id, "clients": n }))
        .collect();
    Ok(Json(json!({ "active_builds": active })))
}

/// `POST /api/projects/{id}/generate` (body empty or `{"pipeline"}`) → 202
/// `{"project_id", "job_id", "status": "queued"}`.
pub async fn generate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Generated>), ApiError> {
    let project = ProjectId::parse(&project)
        .map_err(|e| ApiError::BadRequest(format!("invalid project id: {e}")))?;
    let body = object(&body)?;
    let pipeline = text_field(&body, "pipeline")?
        .or_else(|| state.config.compat.generate_pipeline.clone())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "name a pipeline ({\"pipeline\": \"…\"}) or set COMPAT_GENERATE_PIPELINE".into(),
            )
        })?;
    caller.require(Role::Builder, &project)?;
    let job = state.runner.submit(project, &pipeline)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Generated {
            project_id: job.project_id,
            job_id: job.id,
            status: "queued",
        }),
    ))
}

/// The answer of `generate`, in the seed's key order.
#[derive(Serialize)]
pub struct Generated {
    project_id: ProjectId,
    job_id: JobId,
    status: &'static str,
}
