//! The build runner: queues jobs, runs at most `MAX_CONCURRENT_JOBS` at once, walks
//! each through its pipeline's phases, and reports everything as [`JobEvent`]s to
//! the [`Journal`].
//!
//! The runner knows nothing of HTTP or Socket.IO: it only produces events.
//! Each job gets `DATA_DIR/jobs/<id>/`: a `workspace/` the steps run in (removed when
//! the job ends) and an `artifacts/` folder that keeps the collected files.

pub mod artifacts;
pub mod groups;
pub mod pipeline;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::tasks::Tasks;

use crate::job::{JobEvent, JobId, JobRecord, Outcome, Phase, ProjectId, Stream};
use crate::journal::{Journal, RecordError};
use groups::GroupRecords;
use pipeline::{Pipeline, Pipelines};
use process::StepEnd;

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown pipeline {0:?}")]
    UnknownPipeline(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CancelError {
    #[error("job not found")]
    NotFound,
    #[error("job has already finished")]
    Finished,
    /// Another node runs it (see [`crate::cluster`]).
    #[error("job runs on another node")]
    NotHere,
}

/// Queues and runs builds. Cheap to share behind an `Arc`.
pub struct Runner {
    journal: Arc<Journal>,
    pipelines: Arc<Pipelines>,
    /// One permit per job allowed to run; tokio's semaphore is fair, so jobs start
    /// in the order they were queued.
    slots: Arc<Semaphore>,
    /// `MAX_CONCURRENT_JOBS`.
    max_concurrent: usize,
    /// Root of the per-job folders.
    jobs_dir: PathBuf,
    /// Where running steps' process groups are recorded.
    groups: GroupRecords,
    /// Cancel handles of queued and running jobs.
    active: Mutex<HashMap<JobId, CancellationToken>>,
    /// Parent of every job's cancel handle: cancelled when the server stops.
    stopping: CancellationToken,
    /// The job tasks, so shutdown can wait for them (before the sockets close).
    jobs: TaskTracker,
    /// Where the job tasks are spawned: the server's tracker of every task.
    tasks: Tasks,
}

impl Runner {
    pub fn new(
        journal: Arc<Journal>,
        pipelines: Arc<Pipelines>,
        max_concurrent: usize,
        data_dir: &Path,
        tasks: Tasks,
    ) -> Arc<Self> {
        Arc::new(Self {
            journal,
            pipelines,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            jobs_dir: data_dir.join("jobs"),
            groups: GroupRecords::new(data_dir),
            active: Mutex::new(HashMap::new()),
            stopping: CancellationToken::new(),
            jobs: TaskTracker::new(),
            tasks,
        })
    }

    pub fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// Where a job's collected artifacts are kept.
    pub fn artifacts_dir(&self, id: &JobId) -> PathBuf {
        self.jobs_dir.join(id.as_str()).join("artifacts")
    }

    /// The folder holding everything a job left on disk.
    pub fn job_dir(&self, id: &JobId) -> PathBuf {
        self.jobs_dir.join(id.as_str())
    }

    /// Opens artifact `name` of job `id` for reading, confined to the job's
    /// artifacts folder (see [`crate::artifact::open`]).
    pub async fn open_artifact(&self, id: &JobId, name: &str) -> std::io::Result<tokio::fs::File> {
        let jobs_dir = self.jobs_dir.clone();
        let (id, name) = (id.clone(), name.to_owned());
        let file =
            tokio::task::spawn_blocking(move || crate::artifact::open(&jobs_dir, &id, &name))
                .await
                .map_err(std::io::Error::other)??;
        Ok(tokio::fs::File::from_std(file))
    }

    /// Deletes everything job `id` left on disk. Refuses, without touching
    /// anything, a folder that is not a direct child of the jobs folder named by the
    /// id (ids are validated, so this is a second guard); a folder already gone is fine.
    pub async fn remove_job_files(&self, id: &JobId) -> std::io::Result<()> {
        let Some(dir) = job_folder(&self.jobs_dir, id.as_str()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "refusing to remove the files of job {id:?}: not a folder directly inside {}",
                    self.jobs_dir.display()
                ),
            ));
        };
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    /// Queues a new job of `pipeline` for `project_id`.
    pub fn submit(
        self: &Arc<Self>,
        project_id: ProjectId,
        pipeline: &str,
    ) -> Result<JobRecord, SubmitError> {
        if self.stopping.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let pipeline = self
            .pipelines
            .get(pipeline)
            .ok_or_else(|| SubmitError::UnknownPipeline(pipeline.to_owned()))?
            .clone();
        let record = JobRecord::queued(JobId::generate(), project_id, pipeline.name.clone());
        let cancel = self.stopping.child_token();
        self.active
            .lock()
            .expect("active jobs")
            .insert(record.id.clone(), cancel.clone());
        if let Err(e) = self.journal.create(record.clone()) {
            self.active.lock().expect("active jobs").remove(&record.id);
            return Err(e.into());
        }
        // `create` recorded the job's first event (queued).
        crate::metrics::recorded(crate::job::EventKind::Progress.name(), "runner", 0);
        tracing::info!(job_id = %record.id, project_id = %record.project_id, pipeline = %pipeline.name, "job queued");
        let runner = self.clone();
        let id = record.id.clone();
        self.tasks.spawn(self.jobs.track_future(async move {
            runner.run_job(&id, &pipeline, &cancel).await;
            runner.active.lock().expect("active jobs").remove(&id);
        }));
        Ok(record)
    }

    /// Cancels a queued or running job.
    pub async fn cancel(&self, id: &JobId) -> Result<(), CancelError> {
        // A job that has recorded its completion is finished, even if its task is
        // still cleaning up.
        if let Ok(Some(job)) = self.journal.job(id).await
            && job.is_finished()
        {
            return Err(CancelError::Finished);
        }
        if let Some(token) = self.active.lock().expect("active jobs").get(id) {
            token.cancel();
            tracing::info!(job_id = %id, "job cancel requested");
            return Ok(());
        }
        match self.journal.job(id).await {
            Ok(Some(job)) if job.is_finished() => Err(CancelError::Finished),
            Ok(Some(job)) if job.node != self.journal.node() => Err(CancelError::NotHere),
            Ok(Some(_)) => Err(CancelError::Finished),
            _ => Err(CancelError::NotFound),
        }
    }

    /// Stops every job (they end `failed`, saying the server stopped) and waits for
    /// their processes to be gone.
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        self.jobs.close();
        self.jobs.wait().await;
    }

    fn emit(&self, id: &JobId, event: JobEvent) {
        let (kind, log_bytes) = (event.kind().name(), event.log_bytes());
        match self.journal.record(id, event) {
            Ok(_) => crate::metrics::recorded(kind, "runner", log_bytes),
            Err(e) => tracing::error!(job_id = %id, error = %e, "could not record a job event"),
        }
    }

    /// Jobs of this runner waiting for a slot, and running.
    pub fn load(&self) -> (usize, usize) {
        let active = self.active.lock().expect("active jobs").len();
        let running = self
            .max_concurrent
            .saturating_sub(self.slots.available_permits());
        (active.saturating_sub(running), running)
    }

    /// Whether new jobs are taken (false once the server is stopping).
    pub fn accepting(&self) -> bool {
        !self.stopping.is_cancelled()
    }

    #[tracing::instrument(skip_all, fields(job_id = %id, pipeline = %pipeline.name))]
    async fn run_job(&self, id: &JobId, pipeline: &Pipeline, cancel: &CancellationToken) {
        let queued = Instant::now();
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = cancel.cancelled() => {
                let outcome = self.finish_interrupted(id, "before it started");
                crate::metrics::job_finished(outcome.status().as_str(), None);
                tracing::info!(?outcome, "job finished before it started");
                return;
            }
        };
        let started = Instant::now();
        crate::metrics::job_started(started - queued);
        let outcome = self.run_steps(id, pipeline, cancel).await;
        crate::metrics::job_finished(outcome.status().as_str(), Some(started.elapsed()));
        drop(permit);
        tracing::info!(outcome = ?outcome, "job finished");
    }

    async fn run_steps(
        &self,
        id: &JobId,
        pipeline: &Pipeline,
        cancel: &CancellationToken,
    ) -> Outcome {
        let Some(project_id) = self
            .journal
            .job(id)
            .await
            .ok()
            .flatten()
            .map(|j| j.project_id)
        else {
            return Outcome::Failed;
        };
        let own_workspace = pipeline.workdir.is_none();
        let workdir = pipeline
            .workdir
            .clone()
            .unwrap_or_else(|| self.job_dir(id).join("workspace"));
        if let Err(e) = tokio::fs::create_dir_all(&workdir).await {
            return self.fail(
                id,
                Phase::Preparing,
                format!("cannot create the workspace: {e}"),
            );
        }
        let workspace = workdir.display().to_string();
        let env = [
            ("BUILDCAST_JOB_ID", id.as_str()),
            ("BUILDCAST_PROJECT_ID", project_id.as_str()),
            ("BUILDCAST_WORKSPACE", workspace.as_str()),
        ];
        let deadline = Instant::now() + pipeline.timeout;
        let outcome = 'steps: {
            for step in &pipeline.steps {
                self.emit(
                    id,
                    JobEvent::Progress {
                        phase: step.phase,
                        progress: step.progress,
                        message: step.message.into(),
                    },
                );
                let Some(script) = &step.script else { continue };
                tracing::info!(step = step.name, "step started");
                self.emit(id, system(format!("Running the {} step", step.name)));
                let end = process::run_step(
                    script,
                    &workdir,
                    &env,
                    deadline,
                    cancel,
                    process::StepHooks {
                        record_as: Some((&self.groups, id)),
                        backpressure: Some(self.journal.backpressure()),
                    },
                    |stream, line| {
                        self.emit(
                            id,
                            JobEvent::Log {
                                stream,
                                message: line,
                            },
                        );
                    },
                )
                .instrument(tracing::info_span!(
                    "step",
                    job_id = %id,
                    step = step.name,
                    phase = step.phase.as_str()
                ))
                .await;
                match end {
                    StepEnd::Succeeded => {}
                    StepEnd::Failed(why) => {
                        break 'steps self.fail(
                            id,
                            step.phase,
                            format!("The {} step {why}", step.name),
                        );
                    }
                    StepEnd::TimedOut => {
                        let limit = humantime::format_duration(pipeline.timeout);
                        break 'steps self.fail(
                            id,
                            step.phase,
                            format!(
                                "The {} step timed out: the job exceeded its {limit} limit",
                                step.name
                            ),
                        );
                    }
                    StepEnd::Cancelled => {
                        break 'steps self
                            .finish_interrupted(id, &format!("during the {} step", step.name));
                    }
                }
            }
            self.emit(
                id,
                JobEvent::Progress {
                    phase: Phase::Completed,
                    progress: 90,
                    message: "Collecting artifacts".into(),
                },
            );
            let collected =
                artifacts::collect(&workdir, &pipeline.artifacts, &self.artifacts_dir(id))
                    .instrument(tracing::info_span!("artifacts", job_id = %id))
                    .await;
            for note in &collected.notes {
                self.emit(id, system(note.clone()));
            }
            self.emit(
                id,
                JobEvent::Progress {
                    phase: Phase::Completed,
                    progress: 100,
                    message: "Build finished".into(),
                },
            );
            self.emit(
                id,
                JobEvent::Completed {
                    outcome: Outcome::Succeeded,
                    artifacts: collected.names,
                },
            );
            Outcome::Succeeded
        };
        if own_workspace && let Err(e) = tokio::fs::remove_dir_all(&workdir).await {
            tracing::warn!(error = %e, "could not remove the workspace");
        }
        outcome
    }

    fn fail(&self, id: &JobId, phase: Phase, message: String) -> Outcome {
        tracing::warn!(job_id = %id, %message, "job failed");
        self.emit(id, system(message.clone()));
        self.emit(id, JobEvent::Error { phase, message });
        self.emit(
            id,
            JobEvent::Completed {
                outcome: Outcome::Failed,
                artifacts: Vec::new(),
            },
        );
        Outcome::Failed
    }

    /// Ends a job that was cancelled, by a user or by the server stopping.
    fn finish_interrupted(&self, id: &JobId, when: &str) -> Outcome {
        let (outcome, message) = if self.stopping.is_cancelled() {
            (
                Outcome::Failed,
                format!("The server stopped during the build ({when}); the job was interrupted."),
            )
        } else {
            (Outcome::Cancelled, format!("Cancelled {when}."))
        };
        self.emit(id, system(message));
        self.emit(
            id,
            JobEvent::Completed {
                outcome,
                artifacts: Vec::new(),
            },
        );
        outcome
    }
}

fn system(message: String) -> JobEvent {
    JobEvent::Log {
        stream: Stream::System,
        message,
    }
}

/// `jobs_dir/id`, if that is a folder directly inside `jobs_dir` named exactly `id`
/// (not `.`, `..`, an absolute path or several components).
fn job_folder(jobs_dir: &Path, id: &str) -> Option<PathBuf> {
    let dir = jobs_dir.join(id);
    (dir.parent() == Some(jobs_dir) && dir.file_name() == Some(std::ffi::OsStr::new(id)))
        .then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_direct_children_of_the_jobs_folder_are_job_folders() {
        let jobs = Path::new("/data/jobs");
        assert_eq!(job_folder(jobs, "j1"), Some(PathBuf::from("/data/jobs/j1")));
        for bad in [".", "..", "", "a/b", "/etc", "a/..", "./a", "a/."] {
            assert_eq!(job_folder(jobs, bad), None, "{bad:?}");
        }
    }
}
