//! A job's history over HTTP: `GET /api/jobs/{id}/events` pages through its
//! recorded events; `GET /api/jobs/{id}/lines` reads its log from a line number
//! (a reader of a huge log starts anywhere without reading what comes before);
//! `GET /api/jobs/{id}/search` searches the whole log; `GET /api/jobs/{id}/log`
//! streams it as plain text. Each reads page by page, so even a huge log never
//! sits in memory whole, from the store and then the journal's window, so they
//! answer while the store cannot write.

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
use crate::journal::search::{Hit, LogQuery};
use crate::state::AppState;

/// Most events one page returns.
const MAX_PAGE: usize = 10_000;
/// Log events read from the store per chunk of the streamed log.
const LOG_CHUNK: usize = 2_000;

/// Most lines one `/lines` page returns.
const MAX_LINES_PAGE: usize = 10_000;
/// Most matches one search returns.
const MAX_SEARCH_LIMIT: usize = 1_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/events", get(events))
        .route("/jobs/{id}/lines", get(lines))
}

/// The routes that read a whole log (the raw log, a search), page by page from
/// the store: no request timeout (a client that goes away ends the read).
pub fn download_router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/log", get(log))
        .route("/jobs/{id}/search", get(search))
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

#[derive(Deserialize)]
struct LinesQuery {
    from: Option<u64>,
    around: Option<u64>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LinesPage {
    /// Kept lines in order; a line the log cap dropped is absent (its number is skipped).
    lines: Vec<LineView>,
    /// The number of the job's last log line when the page was read, and the
    /// last seq then: a live reader goes on from `lastSeq`, numbering the log
    /// lines that follow from `totalLines + 1`.
    total_lines: u64,
    last_seq: u64,
    epoch: String,
}

#[derive(serde::Serialize)]
struct LineView {
    line: u64,
    seq: u64,
    /// The `job:log` payload.
    data: Box<RawValue>,
}

/// Up to `limit` log lines from line `from` on (1 is the first), or centred on
/// line `around`.
#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn lines(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LinesQuery>,
) -> Result<Json<LinesPage>, ApiError> {
    let job = visible_job(&state, &caller, Role::Viewer, &id).await?;
    let id = job.id.clone();
    let limit = super::page_limit(query.limit, 1000, MAX_LINES_PAGE)?;
    let from = match (query.from, query.around) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give either from or around, not both".into(),
            ));
        }
        (Some(0), None) | (None, Some(0)) => {
            return Err(ApiError::BadRequest(
                "line numbers start at 1 (from, around)".into(),
            ));
        }
        (Some(from), None) => from,
        (None, Some(around)) => around.saturating_sub(limit as u64 / 2).max(1),
        (None, None) => 1,
    };
    let (total_lines, last_seq) = state.journal.line_total(&id).await?;
    let events = match state.journal.seq_of_line(&id, from).await? {
        Some(seq) => state.journal.log_events(&id, seq - 1, limit).await?,
        None => Vec::new(),
    };
    let lines = events
        .into_iter()
        .filter_map(|e| Some((e.line?, e)))
        .map(|(line, e)| {
            Ok(LineView {
                line,
                seq: e.seq,
                data: RawValue::from_string(e.payload).map_err(|e| ApiError::Internal(e.into()))?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(LinesPage {
        lines,
        total_lines,
        last_seq,
        epoch: job.epoch,
    }))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    regex: Option<bool>,
    from: Option<u64>,
    limit: Option<usize>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    matches: Vec<Hit>,
    /// More matches follow: search again `from` the line after the last one.
    more: bool,
}

/// The first `limit` lines (from line `from` on) whose text (escape sequences
/// removed) holds `q`, case ignored, or matches it as a regex with `regex=true`.
/// At most [`crate::state::LOG_SCANS`] searches scan at once; others wait.
#[tracing::instrument(skip_all, fields(job_id = %id))]
async fn search(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<SearchPage>, ApiError> {
    let id = visible_job(&state, &caller, Role::Viewer, &id).await?.id;
    let limit = super::page_limit(query.limit, 100, MAX_SEARCH_LIMIT)?;
    if query.from == Some(0) {
        return Err(ApiError::BadRequest(
            "line numbers start at 1 (from)".into(),
        ));
    }
    let q = LogQuery::parse(
        query.q.as_deref().unwrap_or_default(),
        query.regex.unwrap_or(false),
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let _turn = state
        .log_scans
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the server is stopping".into()))?;
    let found = state
        .journal
        .search_log(&id, &q, query.from.unwrap_or(1), limit)
        .await?;
    Ok(Json(SearchPage {
        matches: found.hits,
        more: found.more,
    }))
}
