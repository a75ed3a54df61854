//! Events from external workers: builds that buildcast does not run itself but
//! streams all the same.
//!
//! Workers speak the vocabulary of Celery-style publishers — `{ "type", "data" }`
//! with types `status`, `progress`, `log`, `step`, `complete` and `error` — over
//! `POST /api/jobs/{id}/events` or Redis pub/sub (`job:<id>:updates`). This module
//! validates such messages ([`parse_batch`]) and turns them into [`JobEvent`]s
//! recorded by the journal exactly like the runner's ([`Ingestor::apply`]). A batch
//! is checked whole before anything of it is recorded.
//!
//! It knows nothing of HTTP or Redis.

use std::sync::Arc;

pub mod parse;

use crate::job::{JobEvent, JobId, JobRecord, Outcome, Phase, ProjectId, Stream};
use crate::journal::{Journal, RecordError};

pub use parse::{BatchError, MAX_BATCH, parse_batch, parse_event};

/// One validated worker message.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEvent {
    /// The project, required on a job's first event.
    pub project_id: Option<ProjectId>,
    /// A label shown as the job's pipeline (default `external`).
    pub pipeline: Option<String>,
    pub kind: WorkerEventKind,
}

/// What a worker reported.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEventKind {
    /// `status`: `queued`, `preparing`, `installing`, `building`/`running`.
    Status(Phase),
    /// `progress`: a percentage and the step it is in.
    Progress {
        progress: u8,
        current_step: Option<String>,
        completed_steps: Vec<String>,
    },
    /// `log`: one or more lines.
    Log { stream: Stream, lines: Vec<String> },
    /// `step`: a new step started.
    Step { name: String, label: Option<String> },
    /// `complete`: the job ended.
    Complete {
        outcome: Outcome,
        message: Option<String>,
        artifacts: Vec<String>,
    },
    /// `error`: something failed.
    Error {
        message: String,
        phase: Option<Phase>,
    },
}

/// Why a valid batch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("job {0} does not exist yet: its first event must carry projectId")]
    NeedsProject(JobId),
    #[error("job {0} belongs to project {1}, not {2}")]
    WrongProject(JobId, ProjectId, ProjectId),
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl WorkerEventKind {
    /// The journal events this message stands for, given the job's state now.
    pub fn to_job_events(&self, job: &JobRecord) -> Vec<JobEvent> {
        let running_phase = || match job.phase {
            Phase::Queued | Phase::Completed => Phase::Building,
            phase => phase,
        };
        match self {
            Self::Status(phase) => vec![JobEvent::Progress {
                phase: *phase,
                progress: job.progress,
                message: format!("Status: {}", phase.as_str()),
            }],
            Self::Progress {
                progress,
                current_step,
                completed_steps,
            } => {
                let message = match (current_step, completed_steps.len()) {
                    (Some(step), 0) => step.clone(),
                    (Some(step), n) => format!("{step} ({n} steps done)"),
                    (None, _) => job.message.clone(),
                };
                vec![JobEvent::Progress {
                    phase: running_phase(),
                    progress: *progress,
                    message,
                }]
            }
            Self::Log { stream, lines } => lines
                .iter()
                .map(|line| JobEvent::Log {
                    stream: *stream,
                    message: line.clone(),
                })
                .collect(),
            Self::Step { name, label } => vec![JobEvent::Progress {
                phase: running_phase(),
                progress: job.progress,
                message: label.clone().unwrap_or_else(|| name.clone()),
            }],
            Self::Complete {
                outcome,
                message,
                artifacts,
            } => {
                let mut events = Vec::new();
                if let Some(message) = message {
                    events.push(JobEvent::Log {
                        stream: Stream::System,
                        message: message.clone(),
                    });
                }
                events.push(JobEvent::Completed {
                    outcome: *outcome,
                    artifacts: artifacts.clone(),
                });
                events
            }
            Self::Error { message, phase } => vec![JobEvent::Error {
                phase: phase.unwrap_or(job.phase),
                message: message.clone(),
            }],
        }
    }
}

/// Records validated worker events through the journal.
pub struct Ingestor {
    journal: Arc<Journal>,
}

/// Which way a worker's messages came, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/jobs/{id}/events`.
    Rest,
    /// The Redis channel `job:<id>:updates`.
    Redis,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Self::Rest => "worker_rest",
            Self::Redis => "worker_redis",
        }
    }
}

impl Ingestor {
    pub fn new(journal: Arc<Journal>) -> Self {
        Self { journal }
    }

    /// Records `events` for job `id`, creating the job on first contact; returns
    /// the seq of the last event recorded.
    pub async fn apply(
        &self,
        id: &JobId,
        events: &[WorkerEvent],
        source: Source,
    ) -> Result<u64, ApplyError> {
        let existing = self.journal.job(id).await.ok().flatten();
        match &existing {
            Some(job) if job.is_finished() => {
                return Err(RecordError::Finished(id.clone()).into());
            }
            Some(job) => {
                if let Some(p) = events.iter().find_map(|e| e.project_id.as_ref())
                    && *p != job.project_id
                {
                    return Err(ApplyError::WrongProject(
                        id.clone(),
                        job.project_id.clone(),
                        p.clone(),
                    ));
                }
            }
            None => {
                let first = events.first();
                let project = first
                    .and_then(|e| e.project_id.clone())
                    .ok_or_else(|| ApplyError::NeedsProject(id.clone()))?;
                let pipeline = first
                    .and_then(|e| e.pipeline.clone())
                    .unwrap_or_else(|| "external".into());
                let record = JobRecord::queued(id.clone(), project, pipeline);
                match self.journal.create(record) {
                    // `create` recorded the job's first event (queued).
                    Ok(()) => crate::metrics::recorded(
                        crate::job::EventKind::Progress.name(),
                        source.label(),
                        0,
                    ),
                    Err(RecordError::Exists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(job_id = %id, "external job created");
            }
        }
        let mut last = 0;
        for event in events {
            let job = self
                .journal
                .job(id)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| RecordError::UnknownJob(id.clone()))?;
            for job_event in event.kind.to_job_events(&job) {
                let (kind, log_bytes) = (job_event.kind().name(), job_event.log_bytes());
                last = self.journal.record(id, job_event)?;
                crate::metrics::recorded(kind, source.label(), log_bytes);
            }
        }
        Ok(last)
    }
}
