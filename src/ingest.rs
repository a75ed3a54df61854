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

use serde::Deserialize;
use serde_json::Value;

use crate::artifact;
use crate::job::{JobEvent, JobId, JobRecord, Outcome, Phase, ProjectId, Stream};
use crate::journal::{Journal, RecordError};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest accepted log text in one event.
const MAX_LOG: usize = 256 * 1024;
/// Longest accepted short text (messages, step names).
const MAX_TEXT: usize = 4096;

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

/// A batch item that is not a valid worker event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {reason}")]
pub struct BatchError {
    pub index: usize,
    pub reason: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default, rename = "projectId")]
    project_id: Option<String>,
    #[serde(default)]
    pipeline: Option<String>,
    /// Sent by some publishers; the server stamps its own time.
    #[serde(default)]
    #[allow(dead_code)]
    timestamp: Option<Value>,
}

/// Validates a body: one event object or an array of them.
pub fn parse_batch(body: &Value) -> Result<Vec<WorkerEvent>, BatchError> {
    let items: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![body],
        _ => {
            return Err(BatchError {
                index: 0,
                reason: "expected an event object or an array of them".into(),
            });
        }
    };
    if items.is_empty() {
        return Err(BatchError {
            index: 0,
            reason: "the batch is empty".into(),
        });
    }
    if items.len() > MAX_BATCH {
        return Err(BatchError {
            index: MAX_BATCH,
            reason: format!("at most {MAX_BATCH} events per batch"),
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| parse_event(item).map_err(|reason| BatchError { index, reason }))
        .collect()
}

/// Validates one worker message.
pub fn parse_event(item: &Value) -> Result<WorkerEvent, String> {
    let envelope: Envelope = serde_json::from_value(item.clone()).map_err(|e| e.to_string())?;
    let project_id = envelope
        .project_id
        .map(|p| ProjectId::parse(&p).map_err(|e| format!("projectId: {e}")))
        .transpose()?;
    let pipeline = envelope
        .pipeline
        .map(|p| short_text(&p, "pipeline"))
        .transpose()?;
    let data = &envelope.data;
    let field = |name: &str| data.get(name).filter(|v| !v.is_null());
    let kind = match envelope.kind.as_str() {
        "status" => {
            let status = str_field(field("status"), "status")?;
            WorkerEventKind::Status(match status {
                "queued" | "pending" => Phase::Queued,
                "preparing" => Phase::Preparing,
                "installing" => Phase::Installing,
                "building" | "running" | "started" => Phase::Building,
                other => {
                    return Err(format!(
                        "data.status {other:?} is not one of queued, preparing, installing, building, running (end a job with a complete event)"
                    ));
                }
            })
        }
        "progress" => {
            let progress = match field("progress") {
                Some(Value::Number(n)) => n
                    .as_f64()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .map(|p| p.round() as u8)
                    .ok_or("data.progress must be a number from 0 to 100")?,
                _ => return Err("data.progress must be a number from 0 to 100".into()),
            };
            let current_step = field("current_step")
                .map(|v| {
                    str_field(Some(v), "current_step").and_then(|s| short_text(s, "current_step"))
                })
                .transpose()?;
            let completed_steps = match field("completed_steps") {
                None => Vec::new(),
                Some(Value::Array(steps)) => steps
                    .iter()
                    .map(|s| {
                        str_field(Some(s), "completed_steps[]")
                            .and_then(|s| short_text(s, "completed_steps[]"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("data.completed_steps must be an array of strings".into()),
            };
            WorkerEventKind::Progress {
                progress,
                current_step,
                completed_steps,
            }
        }
        "log" => {
            let text = str_field(field("log_line").or_else(|| field("message")), "log_line")?;
            if text.len() > MAX_LOG {
                return Err(format!("data.log_line is longer than {MAX_LOG} bytes"));
            }
            let stream = match field("stream")
                .map(|v| str_field(Some(v), "stream"))
                .transpose()?
            {
                None | Some("stdout") => Stream::Stdout,
                Some("stderr") => Stream::Stderr,
                Some("system") => Stream::System,
                Some(other) => {
                    return Err(format!(
                        "data.stream {other:?} is not stdout, stderr or system"
                    ));
                }
            };
            let text = text.strip_suffix('\n').unwrap_or(text);
            let lines = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
                .collect();
            WorkerEventKind::Log { stream, lines }
        }
        "step" => WorkerEventKind::Step {
            name: short_text(str_field(field("step_name"), "step_name")?, "step_name")?,
            label: field("step_label")
                .map(|v| str_field(Some(v), "step_label").and_then(|s| short_text(s, "step_label")))
                .transpose()?,
        },
        "complete" => {
            let outcome = match field("status")
                .map(|v| str_field(Some(v), "status"))
                .transpose()?
            {
                None | Some("completed" | "success" | "succeeded") => Outcome::Succeeded,
                Some("failed" | "failure" | "error") => Outcome::Failed,
                Some("cancelled" | "canceled") => Outcome::Cancelled,
                Some(other) => {
                    return Err(format!(
                        "data.status {other:?} is not completed, failed or cancelled"
                    ));
                }
            };
            let artifacts = match field("artifacts") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let name = str_field(Some(s), "artifacts[]")
                            .and_then(|s| short_text(s, "artifacts[]"))?;
                        artifact::validate_name(&name).map_err(|e| {
                            format!(
                                "data.artifacts[{i}] {:?} is not a relative path inside the job's artifacts folder: {e}",
                                truncate(&name)
                            )
                        })?;
                        Ok(name)
                    })
                    .collect::<Result<_, String>>()?,
                Some(_) => return Err("data.artifacts must be an array of strings".into()),
            };
            WorkerEventKind::Complete {
                outcome,
                message: field("message")
                    .map(|v| str_field(Some(v), "message").and_then(|s| short_text(s, "message")))
                    .transpose()?,
                artifacts,
            }
        }
        "error" => WorkerEventKind::Error {
            message: short_text(
                str_field(
                    field("error_message").or_else(|| field("message")),
                    "error_message",
                )?,
                "error_message",
            )?,
            phase: field("phase")
                .map(|v| {
                    let p = str_field(Some(v), "phase")?;
                    p.parse::<Phase>()
                        .ok()
                        .ok_or_else(|| format!("data.phase {p:?} is not a phase"))
                })
                .transpose()?,
        },
        other => {
            return Err(format!(
                "type {:?} is not one of status, progress, log, step, complete, error",
                truncate(other)
            ));
        }
    };
    Ok(WorkerEvent {
        project_id,
        pipeline,
        kind,
    })
}

fn str_field<'a>(value: Option<&'a Value>, name: &str) -> Result<&'a str, String> {
    match value {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("data.{name} must be a string")),
        None => Err(format!("data.{name} is missing")),
    }
}

fn short_text(s: &str, name: &str) -> Result<String, String> {
    if s.len() > MAX_TEXT {
        Err(format!("data.{name} is longer than {MAX_TEXT} bytes"))
    } else {
        Ok(s.to_owned())
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

impl Ingestor {
    pub fn new(journal: Arc<Journal>) -> Self {
        Self { journal }
    }

    /// Records `events` for job `id`, creating the job on first contact; returns
    /// the seq of the last event recorded.
    pub async fn apply(&self, id: &JobId, events: &[WorkerEvent]) -> Result<u64, ApplyError> {
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
                    Ok(()) | Err(RecordError::Exists(_)) => {}
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
                last = self.journal.record(id, job_event)?;
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_worker_vocabulary_parses() {
        let batch = parse_batch(&json!([
            {"type": "status", "data": {"status": "running"}, "projectId": "p1"},
            {"type": "progress", "data": {"progress": 45, "current_step": "synthesis", "completed_steps": ["init"]}},
            {"type": "log", "data": {"log_line": "a\nb\n"}},
            {"type": "step", "data": {"step_name": "synthesis", "step_label": "Synthesis"}},
            {"type": "error", "data": {"error_message": "Build failed"}},
            {"type": "complete", "data": {"status": "failed", "message": "done"}, "timestamp": "2025-01-06T12:10:00Z"},
        ]))
        .unwrap();
        assert_eq!(batch.len(), 6);
        assert_eq!(batch[0].project_id.as_ref().unwrap().as_str(), "p1");
        assert_eq!(
            batch[2].kind,
            WorkerEventKind::Log {
                stream: Stream::Stdout,
                lines: vec!["a".into(), "b".into()]
            }
        );
    }

    #[test]
    fn bad_items_name_their_index_and_reason() {
        let e = parse_batch(&json!([
            {"type": "log", "data": {"log_line": "ok"}},
            {"type": "progress", "data": {"progress": 140}},
        ]))
        .unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.reason.contains("0 to 100"), "{e}");
        for bad in [
            json!("text"),
            json!([]),
            json!({"type": "nope"}),
            json!({"type": "log"}),
            json!({"type": "log", "data": {"log_line": 3}}),
            json!({"type": "status", "data": {"status": "completed"}}),
            json!({"type": "complete", "data": {"status": "maybe"}}),
            json!({"type": "log", "data": {"log_line": "x"}, "projectId": "a/b"}),
            json!({"type": "log", "data": {"log_line": "x"}, "extra": 1}),
        ] {
            assert!(parse_batch(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn artifact_names_must_stay_inside_the_artifacts_folder() {
        for bad in [
            "/etc/passwd",
            "../../x",
            "a/../../b",
            "C:\\x",
            "\\\\server\\share",
            "a\0b",
            "",
        ] {
            let body = json!([
                {"type": "log", "data": {"log_line": "x"}},
                {"type": "complete", "data": {"artifacts": ["ok.txt", bad]}},
            ]);
            let e = parse_batch(&body).unwrap_err();
            assert_eq!(e.index, 1, "{bad:?}");
            assert!(e.reason.starts_with("data.artifacts[1] "), "{e}");
        }
        let ok =
            parse_batch(&json!({"type": "complete", "data": {"artifacts": ["dist/app.tar.gz"]}}));
        assert!(ok.is_ok());
    }
}
