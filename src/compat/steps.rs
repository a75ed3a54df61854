//! The step model the gateways share (SPEC 2.8): which step of a job runs, which
//! ended and how, folded from the job's recorded events in `seq` order.
//!
//! Seed 001's `step`/`current_step`/`completed_steps`, seed 003's queue items and
//! seed 004's agents are all this one model. A runner job's steps are recognised
//! by the phase table (`preparing` 10 *Preparing the workspace* = `prepare`, …);
//! a step its pipeline leaves out still has its progress event, which then only
//! ends the running step. For other jobs (external workers, arbitrary progress
//! values) every `job:progress` in a running phase whose message differs from
//! the previous one starts a step named by that message.
//!
//! Pure: no I/O, no clock. The same events give the same steps on every node.

use std::collections::VecDeque;

use crate::job::{Phase, Status};
use crate::wire::{EventPayload, Timestamp};

/// The runner's phase table: step name, phase, progress and message of the
/// `job:progress` that starts it (as `runner::pipeline` announces them).
const TABLE: [(&str, Phase, u8, &str); 4] = [
    ("prepare", Phase::Preparing, 10, "Preparing the workspace"),
    ("install", Phase::Installing, 30, "Installing dependencies"),
    ("build", Phase::Building, 50, "Running the build"),
    ("test", Phase::Building, 70, "Running the tests"),
];

/// Bytes of log a step keeps at most (its newest lines), for seed 003.
pub const STEP_LOG_BYTES: usize = 256 * 1024;

/// How a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// One step of a job.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based position in order of appearance.
    pub index: usize,
    pub name: String,
    /// What the step's progress event said (`Running the build`).
    pub label: String,
    pub status: StepStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// The `job:error` message that failed it, if one did.
    pub error: Option<String>,
    /// Its newest log lines (when the model keeps logs).
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines left out of `lines` to stay within [`STEP_LOG_BYTES`].
    dropped: u64,
}

impl Step {
    /// The step's log, each line ending in `\n`; when lines were left out, the
    /// first line says how many.
    pub fn log(&self) -> String {
        let mut out = String::with_capacity(self.bytes + 64);
        if self.dropped > 0 {
            out.push_str(&format!(
                "[buildcast] {} earlier lines of this step left out\n",
                self.dropped
            ));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Seconds from its start to its end (milliseconds precision).
    pub fn duration_secs(&self) -> Option<f64> {
        let end = self.ended_at?;
        let ms = (end.0 - self.started_at.0).whole_milliseconds().max(0);
        Some(ms as f64 / 1000.0)
    }
}

/// A change one event made to the steps, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChange {
    /// The step at this position (0-based in [`Steps::all`]) ended.
    Ended(usize),
    /// The step at this position started.
    Started(usize),
}

/// A job's steps, folded from its events.
#[derive(Debug, Clone)]
pub struct Steps {
    /// The pipeline's steps when the job runs a server pipeline (else `None`).
    pipeline: Option<Vec<String>>,
    keep_logs: bool,
    steps: Vec<Step>,
    /// Position of the running step.
    current: Option<usize>,
    last_message: Option<String>,
    /// The job's phase, from its latest progress or error.
    phase: Phase,
}

impl Steps {
    /// Steps of a job running `pipeline` (the names of its steps, in order), or of
    /// a job that runs no server pipeline (`None`). `keep_logs`: keep each step's
    /// newest lines (seed 003).
    pub fn new(pipeline: Option<Vec<String>>, keep_logs: bool) -> Self {
        Self {
            pipeline,
            keep_logs,
            steps: Vec::new(),
            current: None,
            last_message: None,
            phase: Phase::Queued,
        }
    }

    pub fn all(&self) -> &[Step] {
        &self.steps
    }

    pub fn get(&self, position: usize) -> &Step {
        &self.steps[position]
    }

    /// The running step.
    pub fn current(&self) -> Option<&Step> {
        self.current.map(|i| &self.steps[i])
    }

    /// The job's phase as of the events folded so far.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Number of steps: the pipeline's, or those seen so far.
    pub fn total(&self) -> usize {
        self.pipeline
            .as_ref()
            .map_or(self.steps.len(), |p| p.len().max(self.steps.len()))
    }

    /// Steps that ended with this status.
    pub fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }

    /// Names of the steps that ended `completed`, in order.
    pub fn completed_names(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed)
            .map(|s| s.name.clone())
            .collect()
    }

    /// The running step's name; for a job that ended in a step (failed,
    /// cancelled), that step's; else the phase.
    pub fn current_name(&self) -> String {
        if let Some(step) = self.current() {
            return step.name.clone();
        }
        match self.steps.last() {
            Some(step) if matches!(step.status, StepStatus::Failed | StepStatus::Cancelled) => {
                step.name.clone()
            }
            _ => self.phase.as_str().to_owned(),
        }
    }

    fn end(&mut self, status: StepStatus, at: Timestamp, changes: &mut Vec<StepChange>) {
        if let Some(i) = self.current.take() {
            let step = &mut self.steps[i];
            step.status = status;
            step.ended_at = Some(at);
            changes.push(StepChange::Ended(i));
        }
    }

    fn start(&mut self, name: String, label: String, at: Timestamp, changes: &mut Vec<StepChange>) {
        let index = self.steps.len();
        self.steps.push(Step {
            index: index + 1,
            name,
            label,
            status: StepStatus::Running,
            started_at: at,
            ended_at: None,
            error: None,
            lines: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        });
        self.current = Some(index);
        changes.push(StepChange::Started(index));
    }

    /// Folds one event; answers the step changes it made, in order (an ending
    /// before a start).
    pub fn apply(&mut self, event: &EventPayload) -> Vec<StepChange> {
        let mut changes = Vec::new();
        match event {
            EventPayload::Progress(p) => {
                self.phase = p.phase;
                match p.phase {
                    Phase::Queued => {}
                    Phase::Completed => self.end(StepStatus::Completed, p.timestamp, &mut changes),
                    Phase::Preparing | Phase::Installing | Phase::Building => {
                        let row = TABLE.iter().find(|(_, phase, progress, message)| {
                            *phase == p.phase && *progress == p.progress && *message == p.message
                        });
                        match (row, &self.pipeline) {
                            (Some((name, ..)), Some(pipeline))
                                if !pipeline.iter().any(|s| s == name) =>
                            {
                                // A step the pipeline leaves out: the previous one is over.
                                self.end(StepStatus::Completed, p.timestamp, &mut changes);
                            }
                            (Some((name, ..)), _) => {
                                self.end(StepStatus::Completed, p.timestamp, &mut changes);
                                self.start(
                                    (*name).into(),
                                    p.message.clone(),
                                    p.timestamp,
                                    &mut changes,
                                );
                            }
                            (None, _) if self.last_message.as_deref() != Some(&p.message) => {
                                self.end(StepStatus::Completed, p.timestamp, &mut changes);
                                self.start(
                                    p.message.clone(),
                                    p.message.clone(),
                                    p.timestamp,
                                    &mut changes,
                                );
                            }
                            (None, _) => {}
                        }
                    }
                }
                self.last_message = Some(p.message.clone());
            }
            EventPayload::Log(l) => {
                if self.keep_logs
                    && let Some(i) = self.current
                {
                    let step = &mut self.steps[i];
                    step.bytes += l.message.len() + 1;
                    step.lines.push_back(l.message.clone());
                    while step.bytes > STEP_LOG_BYTES && step.lines.len() > 1 {
                        if let Some(old) = step.lines.pop_front() {
                            step.bytes -= old.len() + 1;
                            step.dropped += 1;
                        }
                    }
                }
            }
            EventPayload::Error(e) => {
                self.phase = e.phase;
                if let Some(i) = self.current {
                    self.steps[i].error = Some(e.message.clone());
                }
                self.end(StepStatus::Failed, e.timestamp, &mut changes);
            }
            EventPayload::Completed(c) => {
                let status = match c.status {
                    Status::Cancelled => StepStatus::Cancelled,
                    Status::Completed => StepStatus::Completed,
                    _ => StepStatus::Failed,
                };
                self.end(status, c.timestamp, &mut changes);
            }
        }
        changes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::job::{JobId, ProjectId, Stream};
    use crate::wire::{CompletedPayload, ErrorPayload, LogPayload, ProgressPayload};
    use time::macros::datetime;

    pub fn at(ms: i64) -> Timestamp {
        Timestamp(datetime!(2025-12-02 07:53:55 UTC) + time::Duration::milliseconds(ms))
    }

    fn ids() -> (JobId, ProjectId) {
        (JobId::parse("j1").unwrap(), ProjectId::parse("p1").unwrap())
    }

    pub fn progress(seq: u64, phase: Phase, progress: u8, message: &str) -> EventPayload {
        let (job_id, project_id) = ids();
        EventPayload::Progress(ProgressPayload {
            job_id,
            project_id,
            status: Status::of_phase(phase),
            phase,
            progress,
            message: message.into(),
            timestamp: at(seq as i64 * 100),
            seq,
        })
    }

    pub fn log(seq: u64, stream: Stream, message: &str) -> EventPayload {
        let (job_id, project_id) = ids();
        EventPayload::Log(LogPayload {
            job_id,
            project_id,
            stream,
            message: message.into(),
            timestamp: at(seq as i64 * 100),
            seq,
        })
    }

    pub fn error(seq: u64, phase: Phase, message: &str) -> EventPayload {
        let (job_id, project_id) = ids();
        EventPayload::Error(ErrorPayload {
            job_id,
            project_id,
            phase,
            message: message.into(),
            timestamp: at(seq as i64 * 100),
            seq,
        })
    }

    pub fn completed(seq: u64, status: Status, progress: u8, artifacts: &[&str]) -> EventPayload {
        let (job_id, project_id) = ids();
        EventPayload::Completed(CompletedPayload {
            job_id,
            project_id,
            status,
            success: status == Status::Completed,
            progress,
            duration_ms: 5932,
            artifacts: artifacts.iter().map(|a| a.to_string()).collect(),
            timestamp: at(seq as i64 * 100),
            seq,
        })
    }

    /// The events of a `demo`-like job that succeeds (two log lines per step).
    pub fn demo_success() -> Vec<EventPayload> {
        vec![
            progress(1, Phase::Queued, 0, "Waiting in queue"),
            progress(2, Phase::Preparing, 10, "Preparing the workspace"),
            log(3, Stream::System, "Running the prepare step"),
            progress(4, Phase::Installing, 30, "Installing dependencies"),
            log(5, Stream::Stdout, "Fetching serde"),
            progress(6, Phase::Building, 50, "Running the build"),
            log(7, Stream::Stdout, "Compiling unit 1/20"),
            progress(8, Phase::Building, 70, "Running the tests"),
            log(9, Stream::Stderr, "test parse ... ok"),
            progress(10, Phase::Completed, 90, "Collecting artifacts"),
            progress(11, Phase::Completed, 100, "Build finished"),
            completed(12, Status::Completed, 100, &["app.bin"]),
        ]
    }

    /// A `demo-fail`-like job: fails in its build step.
    pub fn demo_fail() -> Vec<EventPayload> {
        vec![
            progress(1, Phase::Queued, 0, "Waiting in queue"),
            progress(2, Phase::Preparing, 10, "Preparing the workspace"),
            progress(3, Phase::Installing, 30, "Installing dependencies"),
            progress(4, Phase::Building, 50, "Running the build"),
            log(5, Stream::Stderr, "error[E0425]: cannot find value"),
            log(6, Stream::System, "The build step exited with code 1"),
            error(7, Phase::Building, "The build step exited with code 1"),
            completed(8, Status::Failed, 50, &[]),
        ]
    }

    fn demo_pipeline() -> Option<Vec<String>> {
        Some(
            ["prepare", "install", "build", "test"]
                .map(String::from)
                .to_vec(),
        )
    }

    #[test]
    fn runner_steps_follow_the_phase_table() {
        let mut steps = Steps::new(demo_pipeline(), true);
        let changes: Vec<_> = demo_success().iter().map(|e| steps.apply(e)).collect();
        assert_eq!(changes[0], vec![]);
        assert_eq!(changes[1], vec![StepChange::Started(0)]);
        assert_eq!(
            changes[3],
            vec![StepChange::Ended(0), StepChange::Started(1)]
        );
        assert_eq!(changes[9], vec![StepChange::Ended(3)]);
        assert_eq!(changes[10], vec![]);
        assert_eq!(
            steps.completed_names(),
            ["prepare", "install", "build", "test"]
        );
        assert_eq!(steps.get(2).log(), "Compiling unit 1/20\n");
        assert_eq!(steps.get(0).duration_secs(), Some(0.2));
        assert_eq!(steps.current_name(), "completed");
        assert_eq!(steps.total(), 4);
    }

    #[test]
    fn a_failed_step_and_a_left_out_one() {
        let mut steps = Steps::new(Some(vec!["prepare".into(), "build".into()]), false);
        for e in demo_fail() {
            steps.apply(&e);
        }
        // install is left out: it only ended prepare.
        let names: Vec<_> = steps.all().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["prepare", "build"]);
        assert_eq!(steps.get(1).status, StepStatus::Failed);
        assert_eq!(
            steps.get(1).error.as_deref(),
            Some("The build step exited with code 1")
        );
        assert_eq!(steps.current_name(), "build");
        assert_eq!(steps.count(StepStatus::Failed), 1);
    }

    #[test]
    fn worker_steps_are_named_by_their_messages() {
        let mut steps = Steps::new(None, false);
        steps.apply(&progress(1, Phase::Building, 5, "synthesis"));
        steps.apply(&progress(2, Phase::Building, 20, "synthesis"));
        let c = steps.apply(&progress(3, Phase::Building, 40, "placement"));
        assert_eq!(c, vec![StepChange::Ended(0), StepChange::Started(1)]);
        let c = steps.apply(&completed(4, Status::Cancelled, 40, &[]));
        assert_eq!(c, vec![StepChange::Ended(1)]);
        assert_eq!(steps.get(1).status, StepStatus::Cancelled);
        assert_eq!(steps.total(), 2);
    }

    #[test]
    fn a_step_log_keeps_its_newest_lines() {
        let mut steps = Steps::new(None, true);
        steps.apply(&progress(1, Phase::Building, 5, "big"));
        let line = "x".repeat(1023);
        for seq in 2..400 {
            steps.apply(&log(seq, Stream::Stdout, &line));
        }
        let log = steps.get(0).log();
        assert!(log.len() <= STEP_LOG_BYTES + 100, "{}", log.len());
        assert!(
            log.starts_with("[buildcast] 142 earlier lines"),
            "{}",
            &log[..60]
        );
    }
}
