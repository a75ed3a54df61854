//! Following a job over plain HTTP, for `curl` and scripts.
//!
//! - `GET /api/jobs/{id}/log?follow=1`: the log as `text/plain`, then each new line
//!   as it is recorded, until the job ends (`curl -N` behaves like `tail -f`).
//!   `tail=N` starts from the last N lines, `timestamps=1` prefixes each line with
//!   its RFC 3339 time, `ansi=strip` removes terminal escapes, `seqs=1` prefixes
//!   each line with its seq and `since=N` starts after seq N. The response headers
//!   `X-Buildcast-Epoch` and `X-Buildcast-Last-Seq` (the job's last seq when the
//!   response started) tell a script where it stands; to resume after a dropped
//!   connection it asks with `seqs=1` and passes the last seq it printed as
//!   `since`. These options also work without `follow` (the log so far, then the
//!   response ends).
//! - `GET /api/jobs/{id}/events?follow=1` with `Accept: application/x-ndjson` (or
//!   `format=ndjson`): one `{"seq","event","data"}` object per line, live.
//!
//! Without these parameters both routes answer as before ([`super::history`]).
//! Delivery goes through a [`Follower`], as for Server-Sent Events
//! ([`super::stream`]).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;

use super::stream::{flag, slot, taps, too_many};
use super::visible_job;
use crate::auth::Role;
use crate::connections::{ConnectionSlot, Watching};
use crate::error::ApiError;
use crate::http::caller::Caller;
use crate::job::EventKind;
use crate::journal::RecordedEvent;
use crate::metrics::Endpoint;
use crate::state::AppState;
use crate::tap::Follower;

/// Most lines `tail` may ask for.
const MAX_TAIL: usize = 100_000;
/// Log events read per page when looking for where `tail` starts.
const TAIL_PAGE: usize = 2_000;

/// The query parameters of the followed routes.
#[derive(Deserialize, Default)]
struct FollowQuery {
    follow: Option<String>,
    since: Option<u64>,
    tail: Option<usize>,
    timestamps: Option<String>,
    ansi: Option<String>,
    seqs: Option<String>,
}

fn query_of(req: &Request) -> Result<FollowQuery, ApiError> {
    let raw = req.uri().query().unwrap_or("");
    parse_query(raw)
}

/// Parses a query string into [`FollowQuery`].
fn parse_query(raw: &str) -> Result<FollowQuery, ApiError> {
    let pairs: serde_json::Map<String, serde_json::Value> = form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| {
            let value = match k.as_ref() {
                "since" | "tail" => v
                    .parse::<u64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| serde_json::Value::String(v.into_owned())),
                _ => serde_json::Value::String(v.into_owned()),
            };
            (k.into_owned(), value)
        })
        .collect();
    serde_json::from_value(serde_json::Value::Object(pairs))
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
}

/// Whether the request asks for one of the options of this module.
fn has_any(raw: Option<&str>, names: &[&str]) -> bool {
    raw.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| names.contains(&&*k)))
}

/// Answers `GET /jobs/{id}/log` and `GET /jobs/{id}/events` here when they ask
/// for following (or a format of this module); anything else goes on to
/// [`super::history`] unchanged.
pub async fn intercept(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let segments: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let query = req.uri().query();
    match segments.as_slice() {
        ["jobs", _, "log"] => {
            const OPTIONS: &[&str] = &["follow", "since", "tail", "timestamps", "ansi", "seqs"];
            if has_any(query, OPTIONS) {
                return follow_log(state, req)
                    .await
                    .unwrap_or_else(IntoResponse::into_response);
            }
        }
        ["jobs", _, "events"] => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/x-ndjson"));
            let format = query.is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "ndjson")
            });
            if accept || format || has_any(query, &["follow"]) {
                return follow_events(state, req)
                    .await
                    .unwrap_or_else(IntoResponse::into_response);
            }
        }
        _ => {}
    }
    next.run(req).await
}

/// The caller, the job and a connection slot (with the job's watcher count),
/// or the answer refusing them.
async fn open(
    state: &AppState,
    req: Request,
) -> Result<
    (
        crate::job::JobRecord,
        FollowQuery,
        (ConnectionSlot, Watching),
    ),
    Response,
> {
    let query = query_of(&req).map_err(IntoResponse::into_response)?;
    let (mut parts, _) = req.into_parts();
    let raw_id = parts
        .uri
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let Caller(caller) = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts, state,
    )
    .await
    .map_err(IntoResponse::into_response)?;
    let job = visible_job(state, &caller, Role::Viewer, &raw_id)
        .await
        .map_err(IntoResponse::into_response)?;
    let slot = slot(state, &caller, Endpoint::Http).ok_or_else(too_many)?;
    let watching = state.watchers.watch(&job.id, &job.project_id);
    Ok((job, query, (slot, watching)))
}

fn with_position(mut response: Response, job: &crate::job::JobRecord, start: u64) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&job.epoch) {
        headers.insert("x-buildcast-epoch", v);
    }
    headers.insert("x-buildcast-last-seq", HeaderValue::from(job.last_seq));
    headers.insert("x-buildcast-since", HeaderValue::from(start));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The seq after which the last `n` log lines start.
async fn tail_start(
    state: &AppState,
    job: &crate::job::JobRecord,
    n: usize,
) -> Result<u64, ApiError> {
    if n == 0 {
        return Ok(job.last_seq);
    }
    let mut last: std::collections::VecDeque<u64> = std::collections::VecDeque::with_capacity(n);
    let mut since = 0;
    loop {
        let page = state.journal.log_events(&job.id, since, TAIL_PAGE).await?;
        for event in &page {
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(event.seq);
        }
        match page.last() {
            Some(event) if page.len() == TAIL_PAGE => since = event.seq,
            _ => break,
        }
    }
    Ok(last.front().map_or(since, |first| first - 1))
}

#[derive(Deserialize)]
struct LogFields {
    message: String,
    timestamp: String,
}

/// How the followed log prints each line.
#[derive(Clone, Copy)]
struct LineFormat {
    timestamps: bool,
    strip: bool,
    seqs: bool,
}

impl LineFormat {
    fn push(self, text: &mut String, event: &RecordedEvent) {
        if event.kind != EventKind::Log {
            return;
        }
        let Ok(line) = serde_json::from_str::<LogFields>(event.json.get()) else {
            return;
        };
        if self.seqs {
            text.push_str(&event.seq.to_string());
            text.push(' ');
        }
        if self.timestamps {
            text.push_str(&line.timestamp);
            text.push(' ');
        }
        if self.strip {
            strip_ansi(&line.message, text);
        } else {
            text.push_str(&line.message);
        }
        text.push('\n');
    }
}

/// Appends `s` without its ANSI escape sequences (CSI, OSC and two-byte escapes).
pub fn strip_ansi(s: &str, out: &mut String) {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            if c != '\u{9b}' {
                out.push(c);
                continue;
            }
            // 8-bit CSI.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']' | 'P' | '_' | '^' | 'X') => {
                // String until BEL or ST (ESC \).
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some('(' | ')' | '*' | '+' | '#' | '%') => {
                chars.next();
            }
            _ => {}
        }
    }
}

/// Reads a followed job's next burst of events: one, then whatever is ready.
async fn burst(follower: &mut Follower) -> Result<Option<Vec<std::sync::Arc<RecordedEvent>>>, ()> {
    let first = match follower.next().await {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "a followed job could not read history");
            return Err(());
        }
    };
    let mut events = vec![first];
    while events.len() < 1000 {
        match follower.ready() {
            Some(event) => events.push(event),
            None => break,
        }
    }
    Ok(Some(events))
}

async fn follow_log(state: AppState, req: Request) -> Result<Response, Response> {
    let (job, query, slot) = open(&state, req).await?;
    let live = flag(query.follow.as_deref());
    let tail = query.tail.map(|n| n.min(MAX_TAIL));
    let start = match (tail, query.since) {
        (Some(n), since) => tail_start(&state, &job, n)
            .await
            .map_err(IntoResponse::into_response)?
            .max(since.unwrap_or(0)),
        (None, since) => since.unwrap_or(0),
    };
    let format = LineFormat {
        timestamps: flag(query.timestamps.as_deref()),
        strip: query.ansi.as_deref() == Some("strip"),
        seqs: flag(query.seqs.as_deref()),
    };
    let follower = Follower::new(
        state.journal.clone(),
        taps(&state),
        job.id.clone(),
        start,
        live,
    );
    let body = stream::unfold((follower, slot), move |(mut follower, slot)| async move {
        loop {
            let events = burst(&mut follower).await.ok()??;
            let mut text = String::new();
            for event in &events {
                format.push(&mut text, event);
            }
            if !text.is_empty() {
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(text)),
                    (follower, slot),
                ));
            }
        }
    });
    let response = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response();
    Ok(with_position(response, &job, start))
}

async fn follow_events(state: AppState, req: Request) -> Result<Response, Response> {
    let (job, query, slot) = open(&state, req).await?;
    let live = flag(query.follow.as_deref());
    let start = query.since.unwrap_or(0);
    let follower = Follower::new(
        state.journal.clone(),
        taps(&state),
        job.id.clone(),
        start,
        live,
    );
    let body = stream::unfold((follower, slot), |(mut follower, slot)| async move {
        let events = burst(&mut follower).await.ok()??;
        let mut text = String::new();
        for event in &events {
            text.push_str(&format!(
                "{{\"seq\":{},\"event\":\"{}\",\"data\":{}}}\n",
                event.seq,
                crate::wire::job_event_name(event.kind),
                event.json.get()
            ));
        }
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(text)),
            (follower, slot),
        ))
    });
    let response = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response();
    Ok(with_position(response, &job, start))
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn strips_ansi_escapes() {
        let mut out = String::new();
        strip_ansi(
            "\u{1b}[1;31merror\u{1b}[0m: \u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{7} ok\u{1b}(B",
            &mut out,
        );
        assert_eq!(out, "error: link ok");
    }
}
