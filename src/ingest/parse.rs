//! Validating worker messages: [`parse_batch`] checks a whole batch (at most
//! [`MAX_BATCH`] `{ type, data }` items) and [`parse_event`] one item, with the
//! limits on texts; nothing is recorded here.

use serde::Deserialize;
use serde_json::Value;

use super::{WorkerEvent, WorkerEventKind};
use crate::artifact;
use crate::job::{Outcome, Phase, ProjectId, Stream};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest accepted log text in one event.
const MAX_LOG: usize = 256 * 1024;
/// Longest accepted short text (messages, step names).
const MAX_TEXT: usize = 4096;

/// A batch item that is not a valid worker event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {reason}")]
pub struct BatchError {
    pub index: usize,
    pub reason: String,
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
