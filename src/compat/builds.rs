//! Seed 003 (reqpm "WebSocket Real-Time Updates", Django Channels): the
//! `build_update` and `queue_update` messages of `WS /ws/builds/{id}/`
//! (SPEC 5.3), translated from recorded job events.
//!
//! A "package" of reqpm is a step ([`super::steps`]); a build job is a job.
//! [`BuildJob`] folds a job's events: [`BuildJob::apply`] answers one
//! `queue_update` per step that ends or starts, then a `build_update` after every
//! progress, error and completion; [`BuildJob::snapshot`] is the `build_update`
//! a connection starts with. No timestamps on the messages, as in the seed; the
//! build's own times come from the job and its events.

use serde::Serialize;

use super::steps::{StepChange, StepStatus, Steps};
use crate::job::{JobId, Phase, ProjectId, Status};
use crate::wire::{EventPayload, Timestamp};

/// One message: `{"type": …, "data": {…}}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Message<'a> {
    BuildUpdate(BuildData<'a>),
    QueueUpdate(QueueData<'a>),
}

#[derive(Debug, Serialize)]
pub struct BuildData<'a> {
    pub id: &'a str,
    pub status: &'static str,
    pub progress: u8,
    pub total_packages: usize,
    pub completed_packages: usize,
    pub failed_packages: usize,
    pub project: &'a str,
    pub project_name: &'a str,
    pub created_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct Package<'a> {
    pub id: usize,
    pub name: &'a str,
}

#[derive(Debug, Serialize)]
pub struct QueueData<'a> {
    pub id: usize,
    pub status: &'static str,
    pub package: Package<'a>,
    pub build_log: String,
    pub error_message: &'a str,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

/// A build job in reqpm's words, folded from a job's events.
#[derive(Debug, Clone)]
pub struct BuildJob {
    id: JobId,
    project: Option<ProjectId>,
    steps: Steps,
    status: &'static str,
    progress: u8,
    created_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
}

fn json(message: &Message<'_>) -> String {
    serde_json::to_string(message).expect("a message serializes")
}

/// reqpm's build status while a job is in `phase` (SPEC 2.7).
fn running_status(phase: Phase) -> &'static str {
    match phase {
        Phase::Queued => "pending",
        Phase::Preparing => "preparing",
        Phase::Installing | Phase::Building | Phase::Completed => "running",
    }
}

impl BuildJob {
    /// Job `id` of `project` created at `created_at` (both unknown for a job that
    /// does not exist yet: then taken from its first event), running `pipeline`
    /// (its step names) or no server pipeline.
    pub fn new(
        id: JobId,
        project: Option<ProjectId>,
        created_at: Option<Timestamp>,
        pipeline: Option<Vec<String>>,
    ) -> Self {
        Self {
            id,
            project,
            steps: Steps::new(pipeline, true),
            status: "pending",
            progress: 0,
            created_at,
            started_at: None,
            completed_at: None,
        }
    }

    /// Sets the pipeline (its step names) of a job whose pipeline was not known
    /// when it was made; before its first event only.
    pub fn set_pipeline(&mut self, pipeline: Option<Vec<String>>) {
        if self.steps.all().is_empty() {
            self.steps = Steps::new(pipeline, true);
        }
    }

    /// The job's current state as one `build_update`.
    pub fn snapshot(&self) -> String {
        let project = self.project.as_ref().map_or("", ProjectId::as_str);
        json(&Message::BuildUpdate(BuildData {
            id: self.id.as_str(),
            status: self.status,
            progress: self.progress,
            total_packages: self.steps.total(),
            completed_packages: self.steps.count(StepStatus::Completed),
            failed_packages: self.steps.count(StepStatus::Failed),
            project,
            project_name: project,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
        }))
    }

    fn queue_update(&self, position: usize) -> String {
        let step = self.steps.get(position);
        let started = matches!(step.status, StepStatus::Running);
        json(&Message::QueueUpdate(QueueData {
            id: step.index,
            status: match step.status {
                StepStatus::Running => "building",
                StepStatus::Completed => "completed",
                StepStatus::Failed => "failed",
                StepStatus::Cancelled => "cancelled",
            },
            package: Package {
                id: step.index,
                name: &step.name,
            },
            build_log: if started { String::new() } else { step.log() },
            error_message: step.error.as_deref().unwrap_or(""),
            started_at: step.started_at,
            completed_at: step.ended_at,
        }))
    }

    /// Folds one event; answers its messages in order.
    pub fn apply(&mut self, event: &EventPayload) -> Vec<String> {
        let changes = self.steps.apply(event);
        let (timestamp, project) = match event {
            EventPayload::Progress(p) => (p.timestamp, &p.project_id),
            EventPayload::Log(_) => return Vec::new(),
            EventPayload::Error(e) => (e.timestamp, &e.project_id),
            EventPayload::Completed(c) => (c.timestamp, &c.project_id),
        };
        if self.project.is_none() {
            self.project = Some(project.clone());
        }
        self.created_at.get_or_insert(timestamp);
        match event {
            EventPayload::Progress(p) => {
                if p.phase != Phase::Queued {
                    self.started_at.get_or_insert(timestamp);
                }
                self.status = running_status(p.phase);
                self.progress = p.progress;
            }
            EventPayload::Completed(c) => {
                self.status = match c.status {
                    Status::Completed => "completed",
                    Status::Cancelled => "cancelled",
                    _ => "failed",
                };
                self.progress = c.progress;
                self.completed_at = Some(timestamp);
            }
            _ => {}
        }
        let mut out: Vec<String> = changes
            .iter()
            .map(|change| match change {
                StepChange::Ended(i) | StepChange::Started(i) => self.queue_update(*i),
            })
            .collect();
        out.push(self.snapshot());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::steps::tests::*;

    fn job(pipeline: &[&str]) -> BuildJob {
        BuildJob::new(
            JobId::parse("j1").unwrap(),
            Some(ProjectId::parse("p1").unwrap()),
            Some(at(0)),
            Some(pipeline.iter().map(|s| s.to_string()).collect()),
        )
    }

    #[test]
    fn every_message_type_is_pinned() {
        let mut build = job(&["prepare", "install", "build", "test"]);
        assert_eq!(
            build.snapshot(),
            r#"{"type":"build_update","data":{"id":"j1","status":"pending","progress":0,"total_packages":4,"completed_packages":0,"failed_packages":0,"project":"p1","project_name":"p1","created_at":"2025-12-02T07:53:55.000Z","started_at":null,"completed_at":null}}"#
        );
        let all: Vec<Vec<String>> = demo_success().iter().map(|e| build.apply(e)).collect();
        assert_eq!(
            all[1][0],
            r#"{"type":"queue_update","data":{"id":1,"status":"building","package":{"id":1,"name":"prepare"},"build_log":"","error_message":"","started_at":"2025-12-02T07:53:55.200Z","completed_at":null}}"#
        );
        assert_eq!(
            all[1][1],
            r#"{"type":"build_update","data":{"id":"j1","status":"preparing","progress":10,"total_packages":4,"completed_packages":0,"failed_packages":0,"project":"p1","project_name":"p1","created_at":"2025-12-02T07:53:55.000Z","started_at":"2025-12-02T07:53:55.200Z","completed_at":null}}"#
        );
        assert!(all[2].is_empty(), "a log line gives no message");
        assert_eq!(
            all[3][0],
            r#"{"type":"queue_update","data":{"id":1,"status":"completed","package":{"id":1,"name":"prepare"},"build_log":"Running the prepare step\n","error_message":"","started_at":"2025-12-02T07:53:55.200Z","completed_at":"2025-12-02T07:53:55.400Z"}}"#
        );
        assert!(all[3][1].contains(r#""id":2,"status":"building""#));
        assert!(all[3][2].contains(r#""status":"running","progress":30"#));
        assert_eq!(all[9].len(), 2);
        assert!(all[9][0].contains(r#""id":4,"status":"completed""#));
        assert!(all[9][1].contains(r#""status":"running","progress":90,"total_packages":4,"completed_packages":4,"failed_packages":0"#));
        assert_eq!(all[11].len(), 1);
        assert!(all[11][0].contains(r#""status":"completed","progress":100"#));
        assert!(all[11][0].ends_with(r#""completed_at":"2025-12-02T07:53:56.200Z"}}"#));
    }

    #[test]
    fn a_build_watched_before_it_existed_learns_its_pipeline() {
        let mut build = BuildJob::new(JobId::parse("j1").unwrap(), None, None, None);
        build.set_pipeline(Some(["prepare", "build"].map(String::from).to_vec()));
        let out = build.apply(&demo_success()[0]);
        assert!(out[0].contains(r#""total_packages":2"#), "{}", out[0]);
        assert!(out[0].contains(r#""project":"p1""#), "{}", out[0]);
        assert!(
            out[0].contains(r#""created_at":"2025-12-02T07:53:55.100Z""#),
            "{}",
            out[0]
        );
    }

    #[test]
    fn a_failed_build() {
        let mut build = job(&["prepare", "install", "build"]);
        let all: Vec<Vec<String>> = demo_fail().iter().map(|e| build.apply(e)).collect();
        assert_eq!(all[6].len(), 2);
        assert!(all[6][0].contains(r#""id":3,"status":"failed","package":{"id":3,"name":"build"},"build_log":"error[E0425]: cannot find value\nThe build step exited with code 1\n","error_message":"The build step exited with code 1""#), "{}", all[6][0]);
        assert!(all[6][1].contains(r#""status":"running","progress":50,"total_packages":3,"completed_packages":2,"failed_packages":1"#));
        assert_eq!(all[7].len(), 1);
        assert!(all[7][0].contains(r#""status":"failed","progress":50,"total_packages":3,"completed_packages":2,"failed_packages":1"#));
    }
}
