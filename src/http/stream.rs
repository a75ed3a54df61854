//! Server-Sent Events: `GET /api/jobs/{id}/stream` and `GET /api/projects/{id}/stream`.
//!
//! A job stream carries each recorded event as one SSE message: `event:` is the
//! Socket.IO event name, `id:` is `<epoch>:<seq>` and `data:` is the payload
//! Socket.IO clients get. It resumes from `Last-Event-ID` (what `EventSource`
//! sends when it reconnects) or `?since=N&epoch=E`. A position the server cannot
//! continue from — another epoch, a seq beyond the job's last, or history cut
//! after it — is answered with a `reset` event (`{ reason, epoch, lastSeq,
//! recovered: false }`, as the `subscribe:job` acknowledgement says it) followed by
//! the whole history. The stream ends after `job:completed`; `?follow=0` ends it
//! with the history recorded so far. `?batch=1` sends runs of log lines as one
//! `job:logs` message (a JSON array of `job:log` payloads, `id:` of the last).
//!
//! A job this node does not know yet — in a cluster, one another node is creating
//! and this one has not mirrored yet — is waited for, as `subscribe:job` waits:
//! a caller who may see every project, asking from the start (no `since`, `epoch`
//! or `Last-Event-ID`) and live, gets a stream that carries the job's events from
//! its first one, for as long as the stream stays open. Anyone else gets 404, as
//! before (a restricted user cannot tell an unknown job from another project's).
//!
//! A project stream starts with a `snapshot` event (`{ jobs }`, as the
//! `subscribe:project` acknowledgement) and then carries `project:progress` and
//! `project:completed` live. Its messages have no id: a client that reconnects (or
//! whose queue overflowed: `reset`) starts again from a snapshot.
//!
//! Delivery goes through a [`Follower`]: no gap, no duplicate, bounded memory for
//! a slow reader. Each open stream counts against `MAX_CONNECTIONS_PER_USER`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;

use super::{job_id, visible_job};
use crate::auth::{Principal, Role};
use crate::connections::{ConnectionSlot, Watching};
use crate::error::{ApiError, ApiQuery};
use crate::http::caller::Caller;
use crate::job::EventKind;
use crate::job::{JobId, JobRecord, ProjectId};
use crate::journal::RecordedEvent;
use crate::metrics::Endpoint;
use crate::socket::batch::{LogRun, MAX_BYTES, MAX_LINES};
use crate::state::AppState;
use crate::store::JobFilter;
use crate::tap::{Follower, ProjectNext, ProjectTap, Taps};
use crate::wire::JobView;

/// Interval of the keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The reconnection delay suggested to `EventSource` (`retry:`).
const RETRY: Duration = Duration::from_secs(1);
/// Jobs in a project stream's snapshot.
const SNAPSHOT_JOBS: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/stream", get(job_stream))
        .route("/projects/{id}/stream", get(project_stream))
}

/// Takes a connection slot for `caller` (`None`: the server or they hold the
/// maximum).
pub fn slot(state: &AppState, caller: &Principal, endpoint: Endpoint) -> Option<ConnectionSlot> {
    let per_user = state.auth.enabled().then_some(caller.user.as_str());
    match state.connections.acquire(per_user) {
        Ok(slot) => Some(slot),
        Err(limit) => {
            crate::metrics::limit_refused(endpoint, limit.label());
            tracing::info!(user = %caller.user, %limit, ?endpoint, "stream refused: too many connections");
            None
        }
    }
}

/// The answer to a stream over `MAX_CONNECTIONS_PER_USER`.
pub fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "error": "Too many connections" })),
    )
        .into_response()
}

/// The taps of this server (set up with the router).
pub fn taps(state: &AppState) -> Arc<Taps> {
    state.taps.clone()
}

/// Whether a query flag is on (`1`, `true`, `yes`, or present with no value).
pub fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v, "" | "1" | "true" | "yes" | "on"))
}

/// Why a resume position cannot be continued from, if it cannot.
pub fn stale(job: &JobRecord, since: u64, epoch: Option<&str>) -> Option<String> {
    if epoch.is_some_and(|e| e != job.epoch) {
        return Some("epoch mismatch: this job's history changed (recreated, or events after the last write were lost in a crash); the whole history follows".into());
    }
    if since > job.last_seq {
        return Some(format!(
            "since {since} is beyond the job's last event {}; the whole history follows",
            job.last_seq
        ));
    }
    None
}

/// The reason given when history after a resume position was cut.
pub const GAP: &str = "part of the history after since was dropped (the log exceeded MAX_LOG_BYTES_PER_JOB, or lines came while the disk was full past MAX_UNSTORED_BYTES); the whole history follows";

#[derive(Deserialize)]
struct JobStreamQuery {
    since: Option<u64>,
    epoch: Option<String>,
    batch: Option<String>,
    follow: Option<String>,
}

/// Reads `Last-Event-ID`: `<epoch>:<seq>` (or a bare seq).
fn last_event_id(headers: &HeaderMap) -> Option<(Option<String>, u64)> {
    let raw = headers.get("last-event-id")?.to_str().ok()?.trim();
    match raw.rsplit_once(':') {
        Some((epoch, seq)) => Some((
            (!epoch.is_empty()).then(|| epoch.to_owned()),
            seq.parse().ok()?,
        )),
        None => Some((None, raw.parse().ok()?)),
    }
}

fn sse_headers(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

struct JobStream {
    follower: Follower,
    state: AppState,
    id: JobId,
    /// The job, once it exists (a stream may wait for a job not created yet).
    job: Option<JobRecord>,
    batch: bool,
    live: bool,
    /// Whether a cut after the resume position still calls for a reset.
    check_gap: bool,
    /// An event read while grouping a log run, to send next.
    held: Option<Arc<RecordedEvent>>,
    out: VecDeque<Event>,
    _slot: ConnectionSlot,
    /// Counted as a watcher of the job, once it exists when the stream opens.
    _watching: Option<Watching>,
}

fn reset_event(job: &JobRecord, reason: &str) -> Event {
    Event::default().event("reset").data(
        json!({
            "reason": reason,
            "epoch": job.epoch,
            "lastSeq": job.last_seq,
            "recovered": false,
        })
        .to_string(),
    )
}

impl JobStream {
    fn id_of(&self, seq: u64) -> String {
        let epoch = self.job.as_ref().map_or("", |job| job.epoch.as_str());
        format!("{epoch}:{seq}")
    }

    async fn next_event(&mut self) -> Option<Arc<RecordedEvent>> {
        if let Some(event) = self.held.take() {
            return Some(event);
        }
        match self.follower.next().await {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(job_id = %self.id, error = %e, "a job stream could not read history");
                None
            }
        }
    }

    /// The next SSE message, or `None` at the end of the stream.
    async fn step(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.out.pop_front() {
                return Some(event);
            }
            let event = self.next_event().await?;
            if self.job.is_none() {
                // The job this stream waited for exists now: its epoch names the events.
                match self.state.journal.job(&self.id).await {
                    Ok(job) => self.job = job,
                    Err(e) => {
                        tracing::error!(job_id = %self.id, error = %e, "a job stream could not read its job");
                        return None;
                    }
                }
            }
            if let (true, true, Some(job)) = (self.check_gap, self.follower.gap(), &self.job) {
                // History after the client's position was cut: start over.
                self.check_gap = false;
                self.follower = Follower::new(
                    self.state.journal.clone(),
                    taps(&self.state),
                    self.id.clone(),
                    0,
                    self.live,
                );
                self.out.push_back(reset_event(job, GAP));
                continue;
            }
            if self.batch && event.kind == EventKind::Log {
                let mut run = vec![event];
                let mut bytes = run[0].json.get().len();
                while run.len() < MAX_LINES && bytes < MAX_BYTES {
                    let Some(next) = self.follower.ready() else {
                        break;
                    };
                    if next.kind != EventKind::Log {
                        self.held = Some(next);
                        break;
                    }
                    bytes += next.json.get().len();
                    run.push(next);
                }
                let last = run.last().map_or(0, |e| e.seq);
                let data = serde_json::to_string(&LogRun(&run)).unwrap_or_default();
                return Some(
                    Event::default()
                        .event(crate::wire::events::JOB_LOGS)
                        .id(self.id_of(last))
                        .data(data),
                );
            }
            return Some(
                Event::default()
                    .event(crate::wire::job_event_name(event.kind))
                    .id(self.id_of(event.seq))
                    .data(event.json.get()),
            );
        }
    }
}

async fn job_stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<JobStreamQuery>,
) -> Result<Response, ApiError> {
    let position = last_event_id(&headers);
    let live = query.follow.as_deref().is_none_or(|f| flag(Some(f)));
    let job = match visible_job(&state, &caller, Role::Viewer, &id).await {
        Ok(job) => Some(job),
        // A job this node does not know (yet): another node may be creating it.
        // A caller who may see every project waits for it, as `subscribe:job`
        // does; a restricted one cannot tell it from a job of another project.
        Err(ApiError::NotFound(_))
            if !caller.is_restricted()
                && caller.role >= Role::Viewer
                && live
                && position.is_none()
                && query.since.is_none()
                && query.epoch.is_none() =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    let id = job_id(&id)?;
    let Some(slot) = slot(&state, &caller, Endpoint::Http) else {
        return Ok(too_many());
    };
    let (epoch, since) = match position {
        Some(position) => position,
        None => (query.epoch.clone(), query.since.unwrap_or(0)),
    };
    let mut out = VecDeque::from([Event::default().retry(RETRY)]);
    let reason = job
        .as_ref()
        .and_then(|job| stale(job, since, epoch.as_deref()));
    let start = if let (Some(reason), Some(job)) = (&reason, &job) {
        out.push_back(reset_event(job, reason));
        0
    } else {
        since
    };
    let follower = if job.is_some() {
        Follower::new(state.journal.clone(), taps(&state), id.clone(), start, live)
    } else {
        tracing::info!(job_id = %id, user = %caller.user, "job stream waits for a job not known yet");
        Follower::pending(state.journal.clone(), taps(&state), id.clone())
    };
    tracing::info!(job_id = %id, since, user = %caller.user, "job stream opened");
    let watching = job
        .as_ref()
        .map(|job| state.watchers.watch(&job.id, &job.project_id));
    let stream = JobStream {
        follower,
        state: state.clone(),
        batch: flag(query.batch.as_deref()),
        live,
        check_gap: reason.is_none() && start > 0,
        id,
        job,
        held: None,
        out,
        _slot: slot,
        _watching: watching,
    };
    let events = stream::unfold(stream, |mut s| async move {
        let event = s.step().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(sse_headers(
        Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
            .into_response(),
    ))
}

struct ProjectStream {
    state: AppState,
    project: ProjectId,
    tap: Option<ProjectTap>,
    out: VecDeque<Event>,
    _slot: ConnectionSlot,
}

impl ProjectStream {
    /// Follows the project from now, after a snapshot of its jobs.
    async fn start(&mut self) -> Option<()> {
        // The tap first: an event recorded while the snapshot is read is not lost
        // (it may show in both).
        self.tap = Some(taps(&self.state).follow_project(&self.project));
        let filter = JobFilter {
            active: None,
            project_id: Some(self.project.clone()),
            limit: SNAPSHOT_JOBS,
        };
        let jobs = match self.state.journal.jobs(filter).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(project_id = %self.project, error = %e, "a project stream could not list jobs");
                return None;
            }
        };
        let jobs: Vec<JobView> = jobs.iter().map(JobView::from).collect();
        self.out.push_back(
            Event::default()
                .event("snapshot")
                .data(json!({ "jobs": jobs }).to_string()),
        );
        Some(())
    }

    async fn step(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.out.pop_front() {
                return Some(event);
            }
            let Some(tap) = &mut self.tap else {
                self.start().await?;
                continue;
            };
            match tap.next().await {
                ProjectNext::Event(event) => {
                    if let Some(name) = crate::wire::project_event_name(event.kind) {
                        return Some(Event::default().event(name).data(event.json.get()));
                    }
                }
                ProjectNext::Overflowed => {
                    self.tap = None;
                    self.out.push_back(Event::default().event("reset").data(
                        json!({ "reason": "the client read too slowly and events were dropped; a new snapshot follows", "recovered": false }).to_string(),
                    ));
                }
            }
        }
    }
}

async fn project_stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let project = ProjectId::parse(&id)
        .map_err(|e| ApiError::BadRequest(format!("invalid project id: {e}")))?;
    if !caller.can_see(&project) {
        return Err(ApiError::NotFound(format!("project {project} not found")));
    }
    caller.require(Role::Viewer, &project)?;
    let Some(slot) = slot(&state, &caller, Endpoint::Http) else {
        return Ok(too_many());
    };
    let stream = ProjectStream {
        state,
        project,
        tap: None,
        out: VecDeque::from([Event::default().retry(RETRY)]),
        _slot: slot,
    };
    let events = stream::unfold(stream, |mut s| async move {
        let event = s.step().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(sse_headers(
        Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
            .into_response(),
    ))
}
