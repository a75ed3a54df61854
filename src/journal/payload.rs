//! Building the JSON clients see from a job event, and back: `payload` turns a
//! numbered [`JobEvent`] into its wire payload (serialized once by the journal),
//! `event_of` reads a mirrored payload back into the event it stands for, and
//! the notes the journal adds about what history did not keep are worded here.

use time::OffsetDateTime;

use super::log_budget::{Dropped, Unkept};
use crate::job::{JobEvent, JobId, JobRecord, Outcome, ProjectId};
use crate::wire::{
    CompletedPayload, ErrorPayload, EventPayload, LogPayload, ProgressPayload, Timestamp,
};

/// The system line saying which live-delivered lines are not in history.
pub(super) fn unkept_note(u: &Unkept) -> String {
    format!(
        "[buildcast] {} log lines ({} bytes) between seq {} and {} were delivered live but are not in history: the disk could not be written and MAX_UNSTORED_BYTES of history was waiting",
        u.lines, u.bytes, u.first_seq, u.last_seq
    )
}

/// The system line saying which middle of a long log was dropped from history.
pub(super) fn truncation_marker(d: &Dropped) -> String {
    format!(
        "[buildcast] log truncated: {} lines ({} bytes) between seq {} and {} were dropped from history to stay within MAX_LOG_BYTES_PER_JOB; the head and the tail are kept",
        d.lines, d.bytes, d.first_seq, d.last_seq
    )
}

fn ids(job: &JobRecord) -> (JobId, ProjectId) {
    (job.id.clone(), job.project_id.clone())
}

/// The wire payload of `event`, numbered `seq`, for a job whose state already
/// includes it.
pub(super) fn payload(
    job: &JobRecord,
    event: &JobEvent,
    seq: u64,
    at: OffsetDateTime,
) -> EventPayload {
    let (job_id, project_id) = ids(job);
    let timestamp = Timestamp(at);
    match event {
        JobEvent::Progress {
            phase,
            progress,
            message,
        } => EventPayload::Progress(ProgressPayload {
            job_id,
            project_id,
            status: job.status,
            phase: *phase,
            progress: *progress,
            message: message.clone(),
            timestamp,
            seq,
        }),
        JobEvent::Log { stream, message } => EventPayload::Log(LogPayload {
            job_id,
            project_id,
            stream: *stream,
            message: message.clone(),
            timestamp,
            seq,
        }),
        JobEvent::Error { phase, message } => EventPayload::Error(ErrorPayload {
            job_id,
            project_id,
            phase: *phase,
            message: message.clone(),
            timestamp,
            seq,
        }),
        JobEvent::Completed { outcome, artifacts } => EventPayload::Completed(CompletedPayload {
            job_id,
            project_id,
            status: job.status,
            success: *outcome == Outcome::Succeeded,
            progress: job.progress,
            duration_ms: job.duration_ms(at),
            artifacts: artifacts.clone(),
            timestamp,
            seq,
        }),
    }
}

/// The event a payload stands for, and when it happened.
pub(super) fn event_of(payload: &EventPayload) -> (JobEvent, OffsetDateTime) {
    match payload {
        EventPayload::Progress(p) => (
            JobEvent::Progress {
                phase: p.phase,
                progress: p.progress,
                message: p.message.clone(),
            },
            p.timestamp.0,
        ),
        EventPayload::Log(p) => (
            JobEvent::Log {
                stream: p.stream,
                message: p.message.clone(),
            },
            p.timestamp.0,
        ),
        EventPayload::Error(p) => (
            JobEvent::Error {
                phase: p.phase,
                message: p.message.clone(),
            },
            p.timestamp.0,
        ),
        EventPayload::Completed(p) => (
            JobEvent::Completed {
                outcome: match p.status {
                    crate::job::Status::Completed => Outcome::Succeeded,
                    crate::job::Status::Cancelled => Outcome::Cancelled,
                    _ => Outcome::Failed,
                },
                artifacts: p.artifacts.clone(),
            },
            p.timestamp.0,
        ),
    }
}
