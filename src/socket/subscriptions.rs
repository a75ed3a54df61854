//! `subscribe:job`, `unsubscribe:job`, `subscribe:project`, `unsubscribe:project`:
//! validating what the client sent, joining or leaving rooms, and the
//! acknowledgement.
//!
//! Every payload is checked by the pure functions [`parse_job_request`] and
//! [`parse_id`]; anything else than what they accept is answered
//! `{ ok: false, error }` ([`super::ack::AckError`]) and joins nothing.

use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};

use std::sync::Arc;

use super::ack::{AckError, answer};
use super::replay::{self, AttachError, Start};
use super::{Session, job_batch_room, job_room, join, leave, project_room, session};
use crate::job::{JobId, ProjectId};
use crate::state::AppState;
use crate::store::JobFilter;
use crate::wire::{Empty, JobSubscribed, JobView, ProjectSubscribed};

/// Jobs listed in a `subscribe:project` acknowledgement.
const PROJECT_SNAPSHOT_JOBS: usize = 50;
/// Longest epoch string accepted.
const MAX_EPOCH: usize = 128;

/// What `subscribe:job` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub job_id: JobId,
    /// Replay every event after this seq first.
    pub since: Option<u64>,
    /// The history the client's `since` refers to.
    pub epoch: Option<String>,
    /// Log lines as `job:logs` runs ([`super::batch`]).
    pub batch: bool,
}

/// Reads `subscribe:job`'s payload: a job id, or `{ jobId, since?, epoch?, batch? }`.
pub fn parse_job_request(payload: &Value) -> Result<JobRequest, String> {
    match payload {
        Value::String(_) => Ok(JobRequest {
            job_id: parse_id(payload, "job id", JobId::parse)?,
            since: None,
            epoch: None,
            batch: false,
        }),
        Value::Object(fields) => {
            if let Some(unknown) = fields
                .keys()
                .find(|k| !["jobId", "since", "epoch", "batch"].contains(&k.as_str()))
            {
                return Err(format!(
                    "unknown field {:?}; expected jobId, since, epoch and batch",
                    truncate(unknown)
                ));
            }
            let job_id = match fields.get("jobId") {
                Some(id) => parse_id(id, "jobId", JobId::parse)?,
                None => return Err("missing jobId".into()),
            };
            let since = match fields.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(
                    n.as_u64()
                        .ok_or("since must be a whole number of 0 or more")?,
                ),
                Some(_) => return Err("since must be a whole number of 0 or more".into()),
            };
            let epoch = match fields.get("epoch") {
                None | Some(Value::Null) => None,
                Some(Value::String(e)) if !e.is_empty() && e.len() <= MAX_EPOCH => Some(e.clone()),
                Some(_) => {
                    return Err(format!(
                        "epoch must be a string of 1 to {MAX_EPOCH} characters"
                    ));
                }
            };
            let batch = match fields.get("batch") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("batch must be true or false".into()),
            };
            Ok(JobRequest {
                job_id,
                since,
                epoch,
                batch,
            })
        }
        _ => Err(format!(
            "expected a job id string or {{ jobId, since, epoch, batch }}, got {}",
            kind(payload)
        )),
    }
}

/// Reads an id given as a JSON string.
pub fn parse_id<T>(
    payload: &Value,
    what: &str,
    parse: impl Fn(&str) -> Result<T, crate::job::IdError>,
) -> Result<T, String> {
    match payload {
        Value::String(s) => parse(s).map_err(|e| format!("invalid {what}: {e}")),
        other => Err(format!("expected {what} as a string, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array (send one value)",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The payload, or a message saying it is missing.
fn payload(data: Result<Value, socketioxide::ParserError>) -> Result<Value, AckError> {
    data.map_err(|_| AckError::Invalid("missing or unreadable payload".into()))
}

/// Counts a client event against the socket's rate limit.
fn admit(socket: &SocketRef) -> Result<Arc<Session>, AckError> {
    let session = session(socket);
    session.admit_event()?;
    Ok(session)
}

#[tracing::instrument(skip_all, fields(sid = %socket.id))]
pub async fn subscribe_job(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    super::admin::event_received(&socket, crate::wire::client_events::SUBSCRIBE_JOB, &data);
    let reply = subscribe_job_inner(&socket, data, &state).await;
    crate::metrics::subscribe_ack("job", reply.as_ref().map_or_else(AckError::label, |_| "ok"));
    answer(ack, reply);
}

async fn subscribe_job_inner(
    socket: &SocketRef,
    data: Result<Value, socketioxide::ParserError>,
    state: &AppState,
) -> Result<JobSubscribed, AckError> {
    let session = admit(socket)?;
    let request = parse_job_request(&payload(data)?)?;
    let id = &request.job_id;
    let journal = &state.journal;
    let current = journal.job(id).await.map_err(|e| {
        tracing::error!(job_id = %id, error = %e, "reading a job failed");
        AckError::HistoryUnavailable
    })?;
    // A restricted caller may only follow jobs it can see; a job that does not
    // exist yet could turn out to be in any project.
    let visible = match &current {
        Some(job) => session.principal.can_see(&job.project_id),
        None => !session.principal.is_restricted(),
    };
    if !visible {
        tracing::info!(sid = %socket.id, job_id = %id, user = %session.principal.user, "subscription refused: forbidden");
        return Err(AckError::Forbidden);
    }
    let subscription = session.follow(id, request.batch)?;
    let mut reason = None;
    let mut why = "none";
    let start = match request.since {
        None => Start::Now,
        Some(since) => match current {
            Some(job) if request.epoch.as_ref().is_some_and(|e| *e != job.epoch) => {
                why = "epoch_mismatch";
                reason = Some(
                    "epoch mismatch: this job's history changed (recreated, or events after the last write were lost in a crash); the whole history follows"
                        .to_string(),
                );
                Start::After(0)
            }
            Some(job) if since > job.last_seq => {
                why = "beyond_last_event";
                reason = Some(format!(
                    "since {since} is beyond the job's last event {}; the whole history follows",
                    job.last_seq
                ));
                Start::After(0)
            }
            None if since > 0 => {
                why = "no_history";
                reason = Some("this job has no history; its events follow from the first".into());
                Start::After(0)
            }
            _ => Start::After(since),
        },
    };
    let attached = match replay::attach(journal, socket, id, start, subscription).await {
        Ok(attached) => attached,
        Err(AttachError::Store(e)) => {
            tracing::error!(job_id = %id, error = %e, "replay failed");
            return Err(AckError::HistoryUnavailable);
        }
        Err(e) => return Err(AckError::Detached(e)),
    };
    if attached.gap && reason.is_none() {
        why = "history_dropped";
        reason = Some(
            "part of the history after since was dropped (the log exceeded MAX_LOG_BYTES_PER_JOB, or lines came while the disk was full past MAX_UNSTORED_BYTES)"
                .into(),
        );
    }
    tracing::debug!(sid = %socket.id, job_id = %id, since = ?request.since, "subscribed to job");
    if request.since.is_some() {
        crate::metrics::replay(reason.is_none(), why);
    }
    let last_seq = attached.job.as_ref().map_or(0, |j| j.last_seq);
    let epoch = attached.job.as_ref().map(|j| j.epoch.clone());
    Ok(JobSubscribed {
        job: attached.job.as_ref().map(JobView::from),
        last_seq,
        epoch,
        recovered: request.since.is_none() || reason.is_none(),
        reason,
    })
}

#[tracing::instrument(skip_all, fields(sid = %socket.id))]
pub async fn unsubscribe_job(socket: SocketRef, TryData(data): TryData<Value>, ack: AckSender) {
    super::admin::event_received(&socket, crate::wire::client_events::UNSUBSCRIBE_JOB, &data);
    let unsubscribed = (|| {
        let session = admit(&socket)?;
        let id = parse_id(&payload(data)?, "job id", JobId::parse)?;
        session.unfollow(&id);
        leave(&socket, job_room(&id));
        leave(&socket, job_batch_room(&id));
        tracing::debug!(sid = %socket.id, job_id = %id, "unsubscribed from job");
        Ok(Empty {})
    })();
    answer(ack, unsubscribed);
}

#[tracing::instrument(skip_all, fields(sid = %socket.id))]
pub async fn subscribe_project(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    super::admin::event_received(
        &socket,
        crate::wire::client_events::SUBSCRIBE_PROJECT,
        &data,
    );
    let reply = subscribe_project_inner(&socket, data, &state).await;
    crate::metrics::subscribe_ack(
        "project",
        reply.as_ref().map_or_else(AckError::label, |_| "ok"),
    );
    answer(ack, reply);
}

async fn subscribe_project_inner(
    socket: &SocketRef,
    data: Result<Value, socketioxide::ParserError>,
    state: &AppState,
) -> Result<ProjectSubscribed, AckError> {
    let session = admit(socket)?;
    let id = parse_id(&payload(data)?, "project id", ProjectId::parse)?;
    if !session.principal.can_see(&id) {
        return Err(AckError::Forbidden);
    }
    session.follow_project(&id)?;
    join(socket, project_room(&id));
    tracing::debug!(sid = %socket.id, project_id = %id, "subscribed to project");
    let filter = JobFilter {
        active: None,
        project_id: Some(id),
        limit: PROJECT_SNAPSHOT_JOBS,
    };
    match state.journal.jobs(filter).await {
        Ok(jobs) => Ok(ProjectSubscribed {
            jobs: jobs.iter().map(JobView::from).collect(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "listing a project's jobs failed");
            Err(AckError::JobListUnavailable)
        }
    }
}

#[tracing::instrument(skip_all, fields(sid = %socket.id))]
pub async fn unsubscribe_project(socket: SocketRef, TryData(data): TryData<Value>, ack: AckSender) {
    super::admin::event_received(
        &socket,
        crate::wire::client_events::UNSUBSCRIBE_PROJECT,
        &data,
    );
    let unsubscribed = (|| {
        let session = admit(&socket)?;
        let id = parse_id(&payload(data)?, "project id", ProjectId::parse)?;
        session.unfollow_project(&id);
        leave(&socket, project_room(&id));
        tracing::debug!(sid = %socket.id, project_id = %id, "unsubscribed from project");
        Ok(Empty {})
    })();
    answer(ack, unsubscribed);
}

/// Any event the server does not know.
pub async fn unknown_event(socket: SocketRef, Event(name): Event, ack: AckSender) {
    let reply = admit(&socket)
        .and_then(|_| Err::<Empty, _>(AckError::UnknownEvent(truncate(&name).to_owned())));
    answer(ack, reply);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_an_id_or_a_resume_request() {
        let r = parse_job_request(&json!("job-1")).unwrap();
        assert_eq!((r.job_id.as_str(), r.since), ("job-1", None));
        let r = parse_job_request(&json!({"jobId": "job-1", "since": 42, "epoch": "e1"})).unwrap();
        assert_eq!(r.since, Some(42));
        assert_eq!(r.epoch.as_deref(), Some("e1"));
        assert!(!r.batch);
        let r = parse_job_request(&json!({"jobId": "job-1", "batch": true})).unwrap();
        assert!(r.batch);
    }

    #[test]
    fn refuses_everything_else_with_a_reason() {
        let long = "x".repeat(10_000);
        for bad in [
            json!(42),
            json!(null),
            json!(true),
            json!([]),
            json!(["job-1"]),
            json!({}),
            json!(""),
            json!(long),
            json!("a/b"),
            json!("a b"),
            json!({"jobId": 5}),
            json!({"jobId": "j", "since": -1}),
            json!({"jobId": "j", "since": "3"}),
            json!({"jobId": "j", "since": 1.5}),
            json!({"jobId": "j", "epoch": 7}),
            json!({"jobId": "j", "extra": 1}),
            json!({"jobId": "j", "batch": 1}),
            json!({"jobId": "j", "batch": "yes"}),
        ] {
            let e = parse_job_request(&bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
