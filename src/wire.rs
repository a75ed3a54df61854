//! Wire types: the exact JSON that Socket.IO clients and REST callers see.
//!
//! Every key is pinned here with serde attributes (camelCase, RFC 3339 UTC
//! timestamps with milliseconds), and the tests at the bottom pin the JSON of each
//! event, so that a refactor elsewhere cannot change what frontends receive.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::job::{EventKind, JobId, JobRecord, Phase, ProjectId, Status, Stream};

/// Socket.IO event names sent by the server.
pub mod events {
    pub const JOB_PROGRESS: &str = "job:progress";
    pub const JOB_LOG: &str = "job:log";
    /// Opt-in (`subscribe:job` with `batch: true`): an array of `job:log` payloads.
    pub const JOB_LOGS: &str = "job:logs";
    pub const JOB_ERROR: &str = "job:error";
    pub const JOB_COMPLETED: &str = "job:completed";
    pub const PROJECT_PROGRESS: &str = "project:progress";
    pub const PROJECT_COMPLETED: &str = "project:completed";
}

/// Socket.IO events sent by clients.
pub mod client_events {
    pub const SUBSCRIBE_JOB: &str = "subscribe:job";
    pub const UNSUBSCRIBE_JOB: &str = "unsubscribe:job";
    pub const SUBSCRIBE_PROJECT: &str = "subscribe:project";
    pub const UNSUBSCRIBE_PROJECT: &str = "unsubscribe:project";
    pub const SUBSCRIBE_JOBS: &str = "subscribe:jobs";
    pub const UNSUBSCRIBE_JOBS: &str = "unsubscribe:jobs";
    pub const WATCHERS_JOB: &str = "watchers:job";
}

/// A point in time, written as JavaScript's `toISOString()` does:
/// `2026-11-21T10:15:30.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub OffsetDateTime);

const ISO_MILLIS: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let utc = self.0.to_offset(time::UtcOffset::UTC);
        let text = utc.format(ISO_MILLIS).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

/// `job:progress` and `project:progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressPayload {
    pub job_id: JobId,
    pub project_id: ProjectId,
    pub status: Status,
    pub phase: Phase,
    pub progress: u8,
    pub message: String,
    pub timestamp: Timestamp,
    pub seq: u64,
}

/// `job:log`: one line, without its newline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogPayload {
    pub job_id: JobId,
    pub project_id: ProjectId,
    pub stream: Stream,
    pub message: String,
    pub timestamp: Timestamp,
    pub seq: u64,
}

/// `job:error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    pub job_id: JobId,
    pub project_id: ProjectId,
    pub phase: Phase,
    pub message: String,
    pub timestamp: Timestamp,
    pub seq: u64,
}

/// `job:completed` and `project:completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedPayload {
    pub job_id: JobId,
    pub project_id: ProjectId,
    pub status: Status,
    pub success: bool,
    pub progress: u8,
    pub duration_ms: u64,
    pub artifacts: Vec<String>,
    pub timestamp: Timestamp,
    pub seq: u64,
}

/// One recorded event of a job as clients receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventPayload {
    Progress(ProgressPayload),
    Log(LogPayload),
    Error(ErrorPayload),
    Completed(CompletedPayload),
}

/// The Socket.IO event a recorded event of `kind` goes out as to job rooms.
pub fn job_event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Progress => events::JOB_PROGRESS,
        EventKind::Log => events::JOB_LOG,
        EventKind::Error => events::JOB_ERROR,
        EventKind::Completed => events::JOB_COMPLETED,
    }
}

/// The Socket.IO event a recorded event of `kind` goes out as to project rooms,
/// for the kinds sent there.
pub fn project_event_name(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::Progress => Some(events::PROJECT_PROGRESS),
        EventKind::Completed => Some(events::PROJECT_COMPLETED),
        EventKind::Log | EventKind::Error => None,
    }
}

impl EventPayload {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Progress(_) => EventKind::Progress,
            Self::Log(_) => EventKind::Log,
            Self::Error(_) => EventKind::Error,
            Self::Completed(_) => EventKind::Completed,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Self::Progress(p) => p.seq,
            Self::Log(p) => p.seq,
            Self::Error(p) => p.seq,
            Self::Completed(p) => p.seq,
        }
    }

    /// Reads a stored payload back, given its kind.
    pub fn from_json(kind: EventKind, json: &str) -> serde_json::Result<Self> {
        Ok(match kind {
            EventKind::Progress => Self::Progress(serde_json::from_str(json)?),
            EventKind::Log => Self::Log(serde_json::from_str(json)?),
            EventKind::Error => Self::Error(serde_json::from_str(json)?),
            EventKind::Completed => Self::Completed(serde_json::from_str(json)?),
        })
    }
}

/// A job's state as `GET /api/jobs/{id}` and subscription snapshots show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: JobId,
    pub project_id: ProjectId,
    pub pipeline: String,
    pub status: Status,
    pub phase: Phase,
    pub progress: u8,
    pub message: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: u64,
    pub artifacts: Vec<String>,
    pub last_seq: u64,
    pub epoch: String,
}

impl From<&JobRecord> for JobView {
    fn from(job: &JobRecord) -> Self {
        Self {
            job_id: job.id.clone(),
            project_id: job.project_id.clone(),
            pipeline: job.pipeline.clone(),
            status: job.status,
            phase: job.phase,
            progress: job.progress,
            message: job.message.clone(),
            created_at: Timestamp(job.created_at),
            started_at: job.started_at.map(Timestamp),
            finished_at: job.finished_at.map(Timestamp),
            duration_ms: job.duration_ms(OffsetDateTime::now_utc()),
            artifacts: job.artifacts.clone(),
            last_seq: job.last_seq,
            epoch: job.epoch.clone(),
        }
    }
}

/// An acknowledgement: `{ "ok": true, ...body }` or `{ "ok": false, "error": "..." }`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Ack<T: Serialize> {
    Ok {
        ok: True,
        #[serde(flatten)]
        body: T,
    },
    Err {
        ok: False,
        error: String,
    },
}

impl<T: Serialize> Ack<T> {
    pub fn ok(body: T) -> Self {
        Self::Ok { ok: True, body }
    }

    pub fn err(error: impl Into<String>) -> Self {
        Self::Err {
            ok: False,
            error: error.into(),
        }
    }
}

/// Serializes as `true`, so an `ok` key cannot say anything else.
#[derive(Debug)]
pub struct True;
/// Serializes as `false`.
#[derive(Debug)]
pub struct False;

impl Serialize for True {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}

impl Serialize for False {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}

/// An acknowledgement with nothing more to say than `ok`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// Answer to `subscribe:job`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSubscribed {
    /// The job's state now, or `null` when it does not exist (yet).
    pub job: Option<JobView>,
    /// Sequence number of the job's latest event when the subscription started.
    pub last_seq: u64,
    /// The history's epoch; `null` for a job that does not exist yet.
    pub epoch: Option<String>,
    /// Whether the events after the client's `since` could all be sent.
    pub recovered: bool,
    /// Why they could not, when `recovered` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Answer to `subscribe:project`.
#[derive(Debug, Serialize)]
pub struct ProjectSubscribed {
    /// The project's jobs, newest first.
    pub jobs: Vec<JobView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> Timestamp {
        Timestamp(time::macros::datetime!(2026-11-21 10:15:30.123456 UTC))
    }

    fn ids() -> (JobId, ProjectId) {
        (JobId::parse("j1").unwrap(), ProjectId::parse("p1").unwrap())
    }

    #[test]
    fn progress_json_is_pinned() {
        let (job_id, project_id) = ids();
        let p = EventPayload::Progress(ProgressPayload {
            job_id,
            project_id,
            status: Status::Building,
            phase: Phase::Building,
            progress: 50,
            message: "Running build".into(),
            timestamp: at(),
            seq: 3,
        });
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"jobId":"j1","projectId":"p1","status":"building","phase":"building",
                   "progress":50,"message":"Running build","timestamp":"2026-11-21T10:15:30.123Z","seq":3})
        );
    }

    #[test]
    fn log_error_and_completed_json_are_pinned() {
        let (job_id, project_id) = ids();
        let log = EventPayload::Log(LogPayload {
            job_id: job_id.clone(),
            project_id: project_id.clone(),
            stream: Stream::Stderr,
            message: "warning".into(),
            timestamp: at(),
            seq: 4,
        });
        assert_eq!(
            serde_json::to_value(&log).unwrap(),
            json!({"jobId":"j1","projectId":"p1","stream":"stderr","message":"warning",
                   "timestamp":"2026-11-21T10:15:30.123Z","seq":4})
        );
        let err = EventPayload::Error(ErrorPayload {
            job_id: job_id.clone(),
            project_id: project_id.clone(),
            phase: Phase::Installing,
            message: "exit code 3".into(),
            timestamp: at(),
            seq: 5,
        });
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"jobId":"j1","projectId":"p1","phase":"installing","message":"exit code 3",
                   "timestamp":"2026-11-21T10:15:30.123Z","seq":5})
        );
        let done = EventPayload::Completed(CompletedPayload {
            job_id,
            project_id,
            status: Status::Failed,
            success: false,
            progress: 30,
            duration_ms: 1234,
            artifacts: vec![],
            timestamp: at(),
            seq: 6,
        });
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            json!({"jobId":"j1","projectId":"p1","status":"failed","success":false,"progress":30,
                   "durationMs":1234,"artifacts":[],"timestamp":"2026-11-21T10:15:30.123Z","seq":6})
        );
    }

    #[test]
    fn stored_payloads_read_back_identically() {
        let (job_id, project_id) = ids();
        let log = EventPayload::Log(LogPayload {
            job_id,
            project_id,
            stream: Stream::System,
            message: "$ make".into(),
            timestamp: at(),
            seq: 9,
        });
        let json = serde_json::to_string(&log).unwrap();
        let back = EventPayload::from_json(EventKind::Log, &json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn acks_say_ok_or_error() {
        assert_eq!(
            serde_json::to_value(Ack::ok(Empty {})).unwrap(),
            json!({"ok": true})
        );
        assert_eq!(
            serde_json::to_value(Ack::<Empty>::err("forbidden")).unwrap(),
            json!({"ok": false, "error": "forbidden"})
        );
    }
}
