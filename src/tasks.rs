//! Every task the server spawns, in one place: a [`TaskTracker`] that shutdown
//! closes and waits for, and a token that tells the tasks still running to stop.
//!
//! Parts that spawn (the journal's evictions, the fan-out's batch timers and
//! catch-ups, the runner's jobs, the cluster's loops, the sweeps) take a clone of
//! [`Tasks`] when they are built. Nothing is spawned with a bare `tokio::spawn`, so
//! after [`Tasks::shutdown`] no task of the server is left running.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's spawned tasks; cheap to clone (all clones share one tracker).
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    /// Every task, so shutdown can wait until none is left.
    tracker: TaskTracker,
    /// Cancelled by [`Tasks::shutdown`]: tasks spawned with
    /// [`Tasks::spawn_until_stopped`] end then.
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a task that runs to its end; shutdown waits for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.tracker.spawn(task)
    }

    /// Spawns a task that is dropped at shutdown if it has not ended by then
    /// (timers, catch-ups, retries: work that only matters while the server runs).
    pub fn spawn_until_stopped(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// A token cancelled when shutdown begins to stop the tasks.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// How many tasks are still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Stops the tasks that end at shutdown and waits, at most `grace`, for every
    /// task to be gone; false if some were still running when it ran out.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_leaves_no_task_running() {
        let tasks = Tasks::new();
        tasks.spawn_until_stopped(std::future::pending());
        tasks.spawn_until_stopped(tokio::time::sleep(Duration::from_secs(3600)));
        let finite = tasks.spawn(async { 7 });
        assert_eq!(finite.await.unwrap(), 7);
        assert_eq!(tasks.len(), 2);
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert!(tasks.is_empty());
    }
}
