//! Seed 001 (a6hub "WebSocket Integration Guide"): the `{type, data, timestamp}`
//! messages of `WS /api/v1/ws/jobs/{job_id}/updates` (SPEC 4.3), translated from
//! recorded job events.
//!
//! [`JobUpdates`] folds a job's events in `seq` order: [`JobUpdates::apply`]
//! answers the messages one event gives (`status`, `step`, `progress`, `log`,
//! `error`, `complete`), [`JobUpdates::connected`] the snapshot a connection
//! starts with. A terminal state is only ever told by `complete` (the seed's page
//! disconnects as soon as the status stops being `running`).

use serde::Serialize;

use super::steps::{StepChange, Steps};
use crate::job::{JobId, Phase, Status, Stream};
use crate::wire::{EventPayload, Timestamp};

/// One message: `{"type": …, "data": {…}, "timestamp": "<ISO 8601>"}`.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub data: Data<'a>,
    pub timestamp: Timestamp,
}

/// The `data` of each message type.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Data<'a> {
    Connected {
        job_id: &'a str,
        status: &'static str,
        current_step: String,
        progress: u8,
    },
    Status {
        status: &'static str,
    },
    Step {
        step_name: &'a str,
        step_label: &'a str,
    },
    Progress {
        progress: u8,
        current_step: String,
        completed_steps: Vec<String>,
    },
    Log {
        log_line: String,
        stream: Stream,
    },
    Error {
        error_message: &'a str,
    },
    Complete {
        status: &'static str,
        message: String,
    },
    Pong {},
}

fn json(kind: &'static str, data: Data<'_>, timestamp: Timestamp) -> String {
    serde_json::to_string(&Message {
        kind,
        data,
        timestamp,
    })
    .expect("a message serializes")
}

/// A job's state in seed 001's words, folded from its events.
#[derive(Debug, Clone)]
pub struct JobUpdates {
    steps: Steps,
    /// `pending` until the first progress out of `queued`, then `running`, then
    /// the terminal status.
    status: &'static str,
    progress: u8,
    /// The latest `job:error` message, for `complete`'s "Build failed: …".
    last_error: Option<String>,
}

/// The words of `complete` for a job that ended with `status`.
pub fn completion_message(status: Status, last_error: Option<&str>) -> String {
    match (status, last_error) {
        (Status::Completed, _) => "Build completed successfully".into(),
        (Status::Cancelled, _) => "Build cancelled".into(),
        (_, Some(error)) => format!("Build failed: {error}"),
        (_, None) => "Build failed".into(),
    }
}

fn terminal(status: Status) -> &'static str {
    match status {
        Status::Completed => "completed",
        Status::Cancelled => "cancelled",
        _ => "failed",
    }
}

impl JobUpdates {
    /// A job running `pipeline` (its step names), or no server pipeline.
    pub fn new(pipeline: Option<Vec<String>>) -> Self {
        Self {
            steps: Steps::new(pipeline, false),
            status: "pending",
            progress: 0,
            last_error: None,
        }
    }

    /// The snapshot a connection starts with, stamped `now`.
    pub fn connected(&self, job_id: &JobId, now: Timestamp) -> String {
        json(
            "connected",
            Data::Connected {
                job_id: job_id.as_str(),
                status: self.status,
                current_step: self.steps.current_name(),
                progress: self.progress,
            },
            now,
        )
    }

    /// The answer to a ping, stamped `now`.
    pub fn pong(now: Timestamp) -> String {
        json("pong", Data::Pong {}, now)
    }

    /// Folds one event; answers its messages in order.
    pub fn apply(&mut self, event: &EventPayload) -> Vec<String> {
        let changes = self.steps.apply(event);
        let mut out = Vec::new();
        match event {
            EventPayload::Progress(p) => {
                if p.phase != Phase::Queued && self.status == "pending" {
                    self.status = "running";
                    out.push(json(
                        "status",
                        Data::Status { status: "running" },
                        p.timestamp,
                    ));
                }
                for change in changes {
                    if let StepChange::Started(i) = change {
                        let step = self.steps.get(i);
                        out.push(json(
                            "step",
                            Data::Step {
                                step_name: &step.name,
                                step_label: &step.label,
                            },
                            p.timestamp,
                        ));
                    }
                }
                self.progress = p.progress;
                out.push(json(
                    "progress",
                    Data::Progress {
                        progress: p.progress,
                        current_step: self.steps.current_name(),
                        completed_steps: self.steps.completed_names(),
                    },
                    p.timestamp,
                ));
            }
            EventPayload::Log(l) => out.push(json(
                "log",
                Data::Log {
                    log_line: format!("{}\n", l.message),
                    stream: l.stream,
                },
                l.timestamp,
            )),
            EventPayload::Error(e) => {
                self.last_error = Some(e.message.clone());
                out.push(json(
                    "error",
                    Data::Error {
                        error_message: &e.message,
                    },
                    e.timestamp,
                ));
            }
            EventPayload::Completed(c) => {
                self.status = terminal(c.status);
                self.progress = c.progress;
                out.push(json(
                    "complete",
                    Data::Complete {
                        status: terminal(c.status),
                        message: completion_message(c.status, self.last_error.as_deref()),
                    },
                    c.timestamp,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::steps::tests::*;

    fn demo() -> Option<Vec<String>> {
        Some(
            ["prepare", "install", "build", "test"]
                .map(String::from)
                .to_vec(),
        )
    }

    #[test]
    fn every_message_type_is_pinned() {
        let id = JobId::parse("j1").unwrap();
        let mut updates = JobUpdates::new(demo());
        assert_eq!(
            updates.connected(&id, at(0)),
            r#"{"type":"connected","data":{"job_id":"j1","status":"pending","current_step":"queued","progress":0},"timestamp":"2025-12-02T07:53:55.000Z"}"#
        );
        let all: Vec<Vec<String>> = demo_success().iter().map(|e| updates.apply(e)).collect();
        assert_eq!(
            all[0],
            [
                r#"{"type":"progress","data":{"progress":0,"current_step":"queued","completed_steps":[]},"timestamp":"2025-12-02T07:53:55.100Z"}"#
            ]
        );
        assert_eq!(
            all[1],
            [
                r#"{"type":"status","data":{"status":"running"},"timestamp":"2025-12-02T07:53:55.200Z"}"#,
                r#"{"type":"step","data":{"step_name":"prepare","step_label":"Preparing the workspace"},"timestamp":"2025-12-02T07:53:55.200Z"}"#,
                r#"{"type":"progress","data":{"progress":10,"current_step":"prepare","completed_steps":[]},"timestamp":"2025-12-02T07:53:55.200Z"}"#,
            ]
        );
        assert_eq!(
            all[2],
            [
                r#"{"type":"log","data":{"log_line":"Running the prepare step\n","stream":"system"},"timestamp":"2025-12-02T07:53:55.300Z"}"#
            ]
        );
        assert_eq!(
            all[7][1],
            r#"{"type":"progress","data":{"progress":70,"current_step":"test","completed_steps":["prepare","install","build"]},"timestamp":"2025-12-02T07:53:55.800Z"}"#
        );
        assert_eq!(
            all[9],
            [
                r#"{"type":"progress","data":{"progress":90,"current_step":"completed","completed_steps":["prepare","install","build","test"]},"timestamp":"2025-12-02T07:53:56.000Z"}"#
            ]
        );
        assert_eq!(
            all[11],
            [
                r#"{"type":"complete","data":{"status":"completed","message":"Build completed successfully"},"timestamp":"2025-12-02T07:53:56.200Z"}"#
            ]
        );
        assert_eq!(
            updates.connected(&id, at(0)),
            r#"{"type":"connected","data":{"job_id":"j1","status":"completed","current_step":"completed","progress":100},"timestamp":"2025-12-02T07:53:55.000Z"}"#
        );
        assert_eq!(
            JobUpdates::pong(at(0)),
            r#"{"type":"pong","data":{},"timestamp":"2025-12-02T07:53:55.000Z"}"#
        );
    }

    #[test]
    fn failures_and_cancels() {
        let mut updates = JobUpdates::new(Some(vec![
            "prepare".into(),
            "install".into(),
            "build".into(),
        ]));
        let all: Vec<Vec<String>> = demo_fail().iter().map(|e| updates.apply(e)).collect();
        assert_eq!(
            all[6],
            [
                r#"{"type":"error","data":{"error_message":"The build step exited with code 1"},"timestamp":"2025-12-02T07:53:55.700Z"}"#
            ]
        );
        assert_eq!(
            all[7],
            [
                r#"{"type":"complete","data":{"status":"failed","message":"Build failed: The build step exited with code 1"},"timestamp":"2025-12-02T07:53:55.800Z"}"#
            ]
        );
        assert!(
            updates
                .connected(&JobId::parse("j1").unwrap(), at(0))
                .contains(r#""status":"failed","current_step":"build","progress":50"#)
        );
        let mut cancelled = JobUpdates::new(None);
        let out = cancelled.apply(&completed(1, Status::Cancelled, 0, &[]));
        assert!(
            out[0].contains(r#""status":"cancelled","message":"Build cancelled""#),
            "{}",
            out[0]
        );
        assert_eq!(completion_message(Status::Failed, None), "Build failed");
    }
}
