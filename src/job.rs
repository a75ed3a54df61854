//! The build domain: job and project ids, phases, statuses, the events a build
//! produces, and a job's current state.
//!
//! These are internal types. What clients see on the wire is in [`crate::wire`];
//! this module knows nothing of HTTP, Socket.IO or storage.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Longest id accepted for a job or a project.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a usable job or project id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("id may only contain letters, digits, '.', '_', ':' and '-'")]
    BadCharacter,
    /// `.`, `..`, `.hidden`, `x.`: a path component, a hidden file, or a name some
    /// systems silently shorten.
    #[error("id may not start or end with '.'")]
    Dot,
    /// A name a shell command would take for an option.
    #[error("id may not start with '-'")]
    Dash,
    /// `CON`, `NUL`, `COM1`, … (with any extension): device names on Windows.
    #[error("id is a reserved device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9)")]
    Reserved,
}

/// Device names Windows reserves in every folder, whatever follows a `.` or `:`.
const RESERVED: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];
const RESERVED_NUMBERED: [&str; 2] = ["COM", "LPT"];

/// Checks an id: 1 to 128 characters of `[A-Za-z0-9._:-]`, usable as a file name
/// anywhere: not starting or ending with `.` (so never `.` or `..`), not starting
/// with `-`, not a reserved device name.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        Err(IdError::Empty)
    } else if id.len() > MAX_ID_LEN {
        Err(IdError::TooLong)
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        Err(IdError::BadCharacter)
    } else if id.starts_with('.') || id.ends_with('.') {
        Err(IdError::Dot)
    } else if id.starts_with('-') {
        Err(IdError::Dash)
    } else if is_reserved(id) {
        Err(IdError::Reserved)
    } else {
        Ok(())
    }
}

fn is_reserved(id: &str) -> bool {
    let stem = id.split(['.', ':']).next().unwrap_or(id);
    RESERVED.iter().any(|r| stem.eq_ignore_ascii_case(r))
        || RESERVED_NUMBERED.iter().any(|r| {
            stem.len() == 4
                && stem[..3].eq_ignore_ascii_case(r)
                && stem.as_bytes()[3].is_ascii_digit()
        })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `id` and wraps it.
            pub fn parse(id: &str) -> Result<Self, IdError> {
                validate_id(id)?;
                Ok(Self(id.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A job's id: assigned by the server (a UUID) or, for external workers, by them.
    JobId
);
id_type!(
    /// A project's id, chosen by whoever starts its jobs.
    ProjectId
);

impl JobId {
    /// A fresh id, time-ordered so that newer jobs sort after older ones.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string().into())
    }
}

/// The build phases, in order. Their names (`queued`, …) are serde's and strum's
/// lowercase variant names, on the wire and in the store alike.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Phase {
    Queued,
    Preparing,
    Installing,
    Building,
    Completed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A job's status: the phase it is in while it runs, then how it ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    Queued,
    Preparing,
    Installing,
    Building,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The status a job has while it is in `phase`.
    pub fn of_phase(phase: Phase) -> Self {
        match phase {
            Phase::Queued => Self::Queued,
            Phase::Preparing => Self::Preparing,
            Phase::Installing => Self::Installing,
            Phase::Building => Self::Building,
            Phase::Completed => Self::Completed,
        }
    }
}

/// The kind of a recorded event. Its lowercase name (`progress`, `log`, `error`,
/// `completed`) is how the store and other nodes name it; the Socket.IO event
/// names are the wire's business ([`crate::wire::job_event_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum EventKind {
    Progress,
    Log,
    Error,
    Completed,
}

impl EventKind {
    /// The short name used in storage and between nodes.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The kind of a [`EventKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Written by buildcast itself: the command being run, a timeout, a cut in the log.
    System,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn status(self) -> Status {
        match self {
            Self::Succeeded => Status::Completed,
            Self::Failed => Status::Failed,
            Self::Cancelled => Status::Cancelled,
        }
    }
}

/// Something that happened to a job, as its producer (the runner, an external
/// worker) reports it. The journal gives it a sequence number and a timestamp.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The job entered a phase or moved within one.
    Progress {
        phase: Phase,
        progress: u8,
        message: String,
    },
    /// One line of output.
    Log { stream: Stream, message: String },
    /// A step failed; a `Completed` with [`Outcome::Failed`] follows.
    Error { phase: Phase, message: String },
    /// The job ended. It is the last event of a job.
    Completed {
        outcome: Outcome,
        artifacts: Vec<String>,
    },
}

impl JobEvent {
    /// The kind of record this event becomes.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Progress { .. } => EventKind::Progress,
            Self::Log { .. } => EventKind::Log,
            Self::Error { .. } => EventKind::Error,
            Self::Completed { .. } => EventKind::Completed,
        }
    }

    /// The length of a log line's text (0 for other events).
    pub fn log_bytes(&self) -> usize {
        match self {
            Self::Log { message, .. } => message.len(),
            _ => 0,
        }
    }
}

/// A job's current state: what `GET /api/jobs/{id}` shows and what a subscriber's
/// snapshot holds.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub project_id: ProjectId,
    /// Name of the pipeline it runs (or the worker's label for ingested jobs).
    pub pipeline: String,
    pub status: Status,
    pub phase: Phase,
    pub progress: u8,
    /// The latest progress message.
    pub message: String,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub artifacts: Vec<String>,
    /// Sequence number of its latest event (0: none yet).
    pub last_seq: u64,
    /// Names this job's stored history; a client holding another epoch must reload.
    pub epoch: String,
    /// The server node that numbers this job's events (see [`crate::cluster`]).
    pub node: String,
}

impl JobRecord {
    /// A new job waiting in the queue.
    pub fn queued(id: JobId, project_id: ProjectId, pipeline: String) -> Self {
        Self {
            id,
            project_id,
            pipeline,
            status: Status::Queued,
            phase: Phase::Queued,
            progress: 0,
            message: "Waiting in queue".into(),
            created_at: OffsetDateTime::now_utc(),
            started_at: None,
            finished_at: None,
            artifacts: Vec::new(),
            last_seq: 0,
            epoch: Self::new_epoch(),
            node: String::new(),
        }
    }

    /// A fresh name for a job's history: given when the job is created, and again
    /// when its history may have lost events that clients already saw.
    pub fn new_epoch() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            Status::Completed | Status::Failed | Status::Cancelled
        ) && self.finished_at.is_some()
    }

    /// Folds an event into the state.
    pub fn apply(&mut self, event: &JobEvent, at: OffsetDateTime) {
        match event {
            JobEvent::Progress {
                phase,
                progress,
                message,
            } => {
                if *phase != Phase::Queued && self.started_at.is_none() {
                    self.started_at = Some(at);
                }
                self.phase = *phase;
                self.status = Status::of_phase(*phase);
                self.progress = *progress;
                self.message.clone_from(message);
            }
            JobEvent::Log { .. } => {}
            JobEvent::Error { phase, message } => {
                self.phase = *phase;
                self.message.clone_from(message);
            }
            JobEvent::Completed { outcome, artifacts } => {
                self.status = outcome.status();
                if *outcome == Outcome::Succeeded {
                    self.phase = Phase::Completed;
                    self.progress = 100;
                }
                self.artifacts.clone_from(artifacts);
                self.finished_at = Some(at);
            }
        }
    }

    /// Milliseconds from start (or creation) to the end, or to `now` while running.
    pub fn duration_ms(&self, now: OffsetDateTime) -> u64 {
        let start = self.started_at.unwrap_or(self.created_at);
        let end = self.finished_at.unwrap_or(now);
        u64::try_from((end - start).whole_milliseconds()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_alphabet() {
        assert!(validate_id("job-1.a_b:c").is_ok());
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"x".repeat(129)), Err(IdError::TooLong));
        assert!(validate_id(&"x".repeat(128)).is_ok());
        for bad in ["a/b", "a b", "../x", "é", "a\nb"] {
            assert_eq!(validate_id(bad), Err(IdError::BadCharacter), "{bad}");
        }
    }

    #[test]
    fn ids_that_are_dangerous_as_file_names_are_refused() {
        for bad in [".", "..", ".hidden", "...", "x.", "a.."] {
            assert_eq!(validate_id(bad), Err(IdError::Dot), "{bad}");
        }
        for bad in ["-", "-rf", "--x"] {
            assert_eq!(validate_id(bad), Err(IdError::Dash), "{bad}");
        }
        for bad in ["CON", "nul", "Aux.txt", "com1", "LPT9.tar.gz", "prn:x"] {
            assert_eq!(validate_id(bad), Err(IdError::Reserved), "{bad}");
        }
        for good in [
            "a.b", "x-", "a-.b", "console", "com10", "com", "nul_x", "lpt1a", "v1.2.3",
        ] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        assert_eq!(JobId::parse("."), Err(IdError::Dot));
        assert_eq!(ProjectId::parse(".."), Err(IdError::Dot));
    }

    #[test]
    fn completion_sets_status_and_progress() {
        let mut job = JobRecord::queued(
            JobId::generate(),
            ProjectId::parse("p").unwrap(),
            "demo".into(),
        );
        let now = OffsetDateTime::now_utc();
        job.apply(
            &JobEvent::Completed {
                outcome: Outcome::Succeeded,
                artifacts: vec!["a.txt".into()],
            },
            now,
        );
        assert_eq!(job.status, Status::Completed);
        assert_eq!(job.progress, 100);
        assert!(job.is_finished());
    }
}
