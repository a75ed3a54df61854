//! Retention: a periodic sweep that deletes finished jobs older than
//! `RETENTION_DAYS`, with their history and their files on disk.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::journal::Journal;
use crate::runner::Runner;
use crate::store::StoreError;

/// Runs the sweep every `interval` until `stop` is cancelled.
pub async fn run(
    journal: Arc<Journal>,
    runner: Arc<Runner>,
    keep: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        match sweep(&journal, &runner, keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "retention removed expired jobs"),
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Deletes the jobs that finished more than `keep` ago; returns how many.
pub async fn sweep(
    journal: &Journal,
    runner: &Runner,
    keep: Duration,
) -> Result<usize, StoreError> {
    let before = OffsetDateTime::now_utc() - keep;
    let expired = journal.delete_finished_before(before).await?;
    for id in &expired {
        if let Err(e) = runner.remove_job_files(id).await {
            tracing::warn!(job_id = %id, error = %e, "could not remove a job's files");
        }
    }
    Ok(expired.len())
}
