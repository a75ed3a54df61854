//! Crash and stop recovery: jobs the store holds as unfinished when the server
//! starts (it stopped while they ran) are marked failed, with a system line saying
//! so, and get a new epoch.

use std::sync::Arc;
use std::time::Duration;

use super::Journal;
use crate::job::{JobEvent, JobRecord, Outcome, Stream};
use crate::store::{StoreError, run_blocking};

/// How long start-up waits for the history of recovered jobs to be written.
const RECOVERY_FLUSH: Duration = Duration::from_secs(5);

impl Journal {
    /// Marks the jobs the store holds as unfinished (the server stopped while they
    /// ran) as failed, with a system line saying so. Runs once at start-up.
    pub async fn recover_interrupted(self: &Arc<Self>) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let node = self.node.clone();
        let jobs = run_blocking(move || {
            let jobs: Vec<JobRecord> = store
                .unfinished_jobs()?
                .into_iter()
                .filter(|job| job.node.is_empty() || job.node == node)
                .collect();
            jobs.into_iter()
                .map(|mut job| {
                    job.last_seq = store.max_seq(&job.id)?;
                    let lines = store.last_line(&job.id)?;
                    // Events numbered after the last one written may have reached
                    // clients before the stop: the history they knew is gone, so
                    // it gets a new name and a client resuming with the old one is
                    // told `recovered: false` and rebuilds from the whole history.
                    job.epoch = JobRecord::new_epoch();
                    Ok((job, lines))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
        let count = jobs.len();
        for (job, lines) in jobs {
            let id = job.id.clone();
            let persisted = job.last_seq;
            self.live.write().expect("journal map").insert(
                id.clone(),
                Arc::new(self.live_job(job, persisted, lines, false)),
            );
            let events = [
                JobEvent::Log {
                    stream: Stream::System,
                    message: "The server stopped during the build; the job was interrupted.".into(),
                },
                JobEvent::Completed {
                    outcome: Outcome::Failed,
                    artifacts: Vec::new(),
                },
            ];
            for event in events {
                if let Err(e) = self.record(&id, event) {
                    tracing::error!(job_id = %id, error = %e, "could not record the end of an interrupted job");
                }
            }
            tracing::warn!(job_id = %id, "job was interrupted by a server stop; marked failed");
        }
        // On a full disk the server still starts (and says `degraded`): these jobs
        // stay in memory until their history is written.
        if tokio::time::timeout(RECOVERY_FLUSH, self.writer.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                jobs = count,
                "the interrupted jobs' history is not written yet; it stays in memory until it is"
            );
        }
        Ok(count)
    }
}
