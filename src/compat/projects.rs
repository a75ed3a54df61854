//! Seed 004 (project generator "Phase 5: WebSocket Real-time Updates"): the flat
//! messages of `WS /api/ws/projects/{project_id}` (SPEC 6.3), translated from
//! the recorded events of every job of the project. The seed gives no shapes;
//! these are the SPEC's proposal, in the style of the seed's backend helpers.
//!
//! A generation run is a job, an agent is a step ([`super::steps`]).
//! [`ProjectJob`] folds one job's events: `agent_update`s for steps that end and
//! start, `status_update` for each progress, `log` for each line, and at the end
//! `agent_update`, `status_update` and `completion`. Every message names the
//! project and the job and carries the event's timestamp.

use serde::Serialize;

use super::jobs::completion_message;
use super::steps::{StepChange, StepStatus, Steps};
use crate::job::{Phase, ProjectId, Status, Stream};
use crate::wire::{EventPayload, Timestamp};

/// A job in the `active_jobs` of the `connection` message.
#[derive(Debug, Serialize)]
pub struct ActiveJob<'a> {
    pub job_id: &'a str,
    pub status: &'static str,
    pub phase: Phase,
    pub progress: u8,
}

/// Every message this gateway sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message<'a> {
    Connection {
        project_id: &'a str,
        message: String,
        active_jobs: Vec<ActiveJob<'a>>,
        timestamp: Timestamp,
    },
    StatusUpdate {
        project_id: &'a str,
        job_id: &'a str,
        status: &'static str,
        phase: Phase,
        progress: u8,
        message: &'a str,
        timestamp: Timestamp,
    },
    AgentUpdate {
        project_id: &'a str,
        job_id: &'a str,
        agent: &'a str,
        status: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration: Option<f64>,
        timestamp: Timestamp,
    },
    Log {
        project_id: &'a str,
        job_id: &'a str,
        message: &'a str,
        stream: Stream,
        timestamp: Timestamp,
    },
    Completion {
        project_id: &'a str,
        job_id: &'a str,
        status: &'static str,
        success: bool,
        message: &'a str,
        artifacts: &'a [String],
        duration_ms: u64,
        timestamp: Timestamp,
    },
    Pong {
        timestamp: Timestamp,
    },
}

fn json(message: &Message<'_>) -> String {
    serde_json::to_string(message).expect("a message serializes")
}

/// The seed's status of a job in `phase` (SPEC 2.7).
pub fn running_status(phase: Phase) -> &'static str {
    if phase == Phase::Queued {
        "queued"
    } else {
        "running"
    }
}

fn final_status(status: Status) -> &'static str {
    match status {
        Status::Completed => "completed",
        Status::Cancelled => "cancelled",
        _ => "failed",
    }
}

/// The first message of a connection, stamped `now`.
pub fn connection(project: &ProjectId, active: Vec<ActiveJob<'_>>, now: Timestamp) -> String {
    json(&Message::Connection {
        project_id: project.as_str(),
        message: format!("Connected to project {project}"),
        active_jobs: active,
        timestamp: now,
    })
}

/// The answer to a ping, stamped `now`.
pub fn pong(now: Timestamp) -> String {
    json(&Message::Pong { timestamp: now })
}

/// One job of the project in the seed's words, folded from its events.
#[derive(Debug, Clone)]
pub struct ProjectJob {
    steps: Steps,
    last_error: Option<String>,
}

impl ProjectJob {
    /// A job running `pipeline` (its step names), or no server pipeline.
    pub fn new(pipeline: Option<Vec<String>>) -> Self {
        Self {
            steps: Steps::new(pipeline, false),
            last_error: None,
        }
    }

    fn agent_update(&self, position: usize, at: Timestamp, ids: (&str, &str)) -> String {
        let step = self.steps.get(position);
        let (status, message) = match step.status {
            StepStatus::Running => ("started", format!("Starting {} agent", step.name)),
            StepStatus::Completed => (
                "completed",
                format!(
                    "Completed {} agent in {:.1}s",
                    step.name,
                    step.duration_secs().unwrap_or(0.0)
                ),
            ),
            StepStatus::Failed => (
                "failed",
                step.error
                    .clone()
                    .unwrap_or_else(|| format!("Failed {} agent", step.name)),
            ),
            StepStatus::Cancelled => ("cancelled", format!("Cancelled {} agent", step.name)),
        };
        json(&Message::AgentUpdate {
            project_id: ids.0,
            job_id: ids.1,
            agent: &step.name,
            status,
            message,
            duration: step.duration_secs(),
            timestamp: at,
        })
    }

    /// Folds one event; answers its messages in order.
    pub fn apply(&mut self, event: &EventPayload) -> Vec<String> {
        let had_step = self.steps.current().is_some();
        let changes = self.steps.apply(event);
        let agents = |this: &Self, at: Timestamp, ids| -> Vec<String> {
            changes
                .iter()
                .map(|change| match change {
                    StepChange::Ended(i) | StepChange::Started(i) => this.agent_update(*i, at, ids),
                })
                .collect()
        };
        match event {
            EventPayload::Progress(p) => {
                let ids = (p.project_id.as_str(), p.job_id.as_str());
                let mut out = agents(self, p.timestamp, ids);
                out.push(json(&Message::StatusUpdate {
                    project_id: ids.0,
                    job_id: ids.1,
                    status: running_status(p.phase),
                    phase: p.phase,
                    progress: p.progress,
                    message: &p.message,
                    timestamp: p.timestamp,
                }));
                out
            }
            EventPayload::Log(l) => vec![json(&Message::Log {
                project_id: l.project_id.as_str(),
                job_id: l.job_id.as_str(),
                message: &l.message,
                stream: l.stream,
                timestamp: l.timestamp,
            })],
            EventPayload::Error(e) => {
                self.last_error = Some(e.message.clone());
                let ids = (e.project_id.as_str(), e.job_id.as_str());
                if had_step {
                    agents(self, e.timestamp, ids)
                } else {
                    // An error outside any step: the phase stands for the agent.
                    vec![json(&Message::AgentUpdate {
                        project_id: ids.0,
                        job_id: ids.1,
                        agent: e.phase.as_str(),
                        status: "failed",
                        message: e.message.clone(),
                        duration: None,
                        timestamp: e.timestamp,
                    })]
                }
            }
            EventPayload::Completed(c) => {
                let ids = (c.project_id.as_str(), c.job_id.as_str());
                let mut out = agents(self, c.timestamp, ids);
                let message = completion_message(c.status, self.last_error.as_deref());
                out.push(json(&Message::StatusUpdate {
                    project_id: ids.0,
                    job_id: ids.1,
                    status: final_status(c.status),
                    phase: self.steps.phase(),
                    progress: c.progress,
                    message: &message,
                    timestamp: c.timestamp,
                }));
                out.push(json(&Message::Completion {
                    project_id: ids.0,
                    job_id: ids.1,
                    status: final_status(c.status),
                    success: c.success,
                    message: &message,
                    artifacts: &c.artifacts,
                    duration_ms: c.duration_ms,
                    timestamp: c.timestamp,
                }));
                out
            }
        }
    }
}

/// The `active_jobs` entry of a job.
pub fn active_job(job: &crate::job::JobRecord) -> ActiveJob<'_> {
    ActiveJob {
        job_id: job.id.as_str(),
        status: running_status(job.phase),
        phase: job.phase,
        progress: job.progress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::steps::tests::*;

    #[test]
    fn every_message_type_is_pinned() {
        let project = ProjectId::parse("p1").unwrap();
        assert_eq!(
            connection(&project, vec![], at(0)),
            r#"{"type":"connection","project_id":"p1","message":"Connected to project p1","active_jobs":[],"timestamp":"2025-12-02T07:53:55.000Z"}"#
        );
        assert_eq!(
            pong(at(0)),
            r#"{"type":"pong","timestamp":"2025-12-02T07:53:55.000Z"}"#
        );
        let mut job = ProjectJob::new(Some(
            ["prepare", "install", "build", "test"]
                .map(String::from)
                .to_vec(),
        ));
        let all: Vec<Vec<String>> = demo_success().iter().map(|e| job.apply(e)).collect();
        assert_eq!(
            all[0],
            [
                r#"{"type":"status_update","project_id":"p1","job_id":"j1","status":"queued","phase":"queued","progress":0,"message":"Waiting in queue","timestamp":"2025-12-02T07:53:55.100Z"}"#
            ]
        );
        assert_eq!(
            all[1][0],
            r#"{"type":"agent_update","project_id":"p1","job_id":"j1","agent":"prepare","status":"started","message":"Starting prepare agent","timestamp":"2025-12-02T07:53:55.200Z"}"#
        );
        assert_eq!(
            all[2],
            [
                r#"{"type":"log","project_id":"p1","job_id":"j1","message":"Running the prepare step","stream":"system","timestamp":"2025-12-02T07:53:55.300Z"}"#
            ]
        );
        assert_eq!(
            all[3][0],
            r#"{"type":"agent_update","project_id":"p1","job_id":"j1","agent":"prepare","status":"completed","message":"Completed prepare agent in 0.2s","duration":0.2,"timestamp":"2025-12-02T07:53:55.400Z"}"#
        );
        assert!(all[3][1].contains(r#""agent":"install","status":"started""#));
        assert!(all[3][2].starts_with(r#"{"type":"status_update""#));
        assert_eq!(
            all[11],
            [
                r#"{"type":"status_update","project_id":"p1","job_id":"j1","status":"completed","phase":"completed","progress":100,"message":"Build completed successfully","timestamp":"2025-12-02T07:53:56.200Z"}"#,
                r#"{"type":"completion","project_id":"p1","job_id":"j1","status":"completed","success":true,"message":"Build completed successfully","artifacts":["app.bin"],"duration_ms":5932,"timestamp":"2025-12-02T07:53:56.200Z"}"#,
            ]
        );
    }

    #[test]
    fn failures_and_cancels() {
        let mut job = ProjectJob::new(None);
        let all: Vec<Vec<String>> = demo_fail().iter().map(|e| job.apply(e)).collect();
        assert_eq!(
            all[6],
            [
                r#"{"type":"agent_update","project_id":"p1","job_id":"j1","agent":"build","status":"failed","message":"The build step exited with code 1","duration":0.3,"timestamp":"2025-12-02T07:53:55.700Z"}"#
            ]
        );
        assert!(all[7][0].contains(r#""status":"failed","phase":"building","progress":50,"message":"Build failed: The build step exited with code 1""#), "{}", all[7][0]);
        assert!(all[7][1].contains(r#""type":"completion""#));
        let mut cancelled = ProjectJob::new(None);
        cancelled.apply(&progress(1, Phase::Building, 50, "Running the build"));
        let out = cancelled.apply(&completed(2, Status::Cancelled, 50, &[]));
        assert!(
            out[0].contains(
                r#""agent":"build","status":"cancelled","message":"Cancelled build agent""#
            ),
            "{}",
            out[0]
        );
        assert!(
            out[2].contains(r#""status":"cancelled","success":false,"message":"Build cancelled""#)
        );
        let mut outside = ProjectJob::new(None);
        let out = outside.apply(&error(1, Phase::Preparing, "cannot create the workspace"));
        assert!(out[0].contains(r#""agent":"preparing","status":"failed""#));
    }
}
