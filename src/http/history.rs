//! A job's history over HTTP: `GET /api/jobs/{id}/events` pages through its
//! recorded events; `GET /api/jobs/{id}/log` streams its log as plain text, page by
//! page, so even a huge log never sits in memory whole. Both read the store and
//! then the journal's window, so they answer while the store cannot write.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::caller::Caller;
use super::visible_job;
use crate::auth::Role;
use crate::error::{ApiError, ApiQuery};
use crate::state::AppState;

/// Most events one page returns.
const MAX_PAGE: usize = 10_000;
/// Log events read from the store per chunk of the streamed log.
const LOG_CHUNK: usize = 2_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/jobs/{id}/events", get(events))
}

/// The routes that stream (the raw log, read from the store chunk by chunk): no
/// request timeout.
pub fn download_router() -> Router<AppState> {
    Router::new().route("/jobs/{id}/log", get(log))
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EventsPage {
    events: Vec<EventView>,
    /// Pass as `since` to get the next page; equals `lastSeq` at the end.
    next_since: u64,
    last_seq: u64,
    epoch: String,
}

#[derive(serde::Serialize)]
struct EventView {
    seq: u64,
    event: &'static str,
    data: Box<RawValue>,
}

#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let job = visible_job(&state, &caller, Role::Viewer, &id).await?;
    let id = job.id.clone();
    let since = query.since.unwrap_or(0);
    let limit = super::page_limit(query.limit, 1000, MAX_PAGE)?;
    let stored = state.journal.events(&id, since, limit).await?;
    let next_since = stored.last().map_or(since, |e| e.seq);
    let events = stored
        .into_iter()
        .map(|e| {
            Ok(EventView {
                seq: e.seq,
                event: crate::wire::job_event_name(e.kind),
                data: RawValue::from_string(e.payload).map_err(|e| ApiError::Internal(e.into()))?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(EventsPage {
        events,
        next_since,
        last_seq: job.last_seq,
        epoch: job.epoch,
    }))
}

#[derive(Deserialize)]
struct LogLine {
    message: String,
}

#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn log(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = visible_job(&state, &caller, Role::Viewer, &id).await?.id;
    let journal = state.journal.clone();
    let filename = format!("attachment; filename=\"{id}.log\"");
    let chunks = stream::try_unfold(Some(0u64), move |cursor| {
        let journal = journal.clone();
        let id = id.clone();
        async move {
            let Some(since) = cursor else {
                return Ok(None);
            };
            let page = journal.log_events(&id, since, LOG_CHUNK).await?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(None);
            };
            let mut text = String::new();
            for event in &page {
                if let Ok(line) = serde_json::from_str::<LogLine>(&event.payload) {
                    text.push_str(&line.message);
                    text.push('\n');
                }
            }
            let next = (page.len() == LOG_CHUNK).then_some(last);
            Ok::<_, crate::store::StoreError>(Some((Bytes::from(text), next)))
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
