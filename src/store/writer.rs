//! The batching writer: a dedicated thread that applies queued [`WriteOp`]s to the
//! [`Store`], as many as are waiting in one transaction.
//!
//! Callers never wait for the database: [`BatchWriter::send`] only queues. Batching
//! is natural rather than timed: while one transaction commits, the next batch
//! gathers.
//!
//! A failed batch is retried, with backoff, until it commits: a locked or full disk
//! delays history instead of losing it. An event's `persisted` mark is raised only
//! once its batch has committed, so the journal keeps every unstored event in
//! memory. While writes fail, [`BatchWriter::status`] says why and how much waits
//! (for `/health`). Only a stop gives up, after [`STOP_GRACE`] of failed attempts,
//! and logs how many events were lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::{Store, WriteOp};

/// Most ops applied in one transaction.
const MAX_BATCH: usize = 8192;
/// First pause after a failed batch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between attempts: how late history resumes once the disk is back.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long a stopping server keeps retrying a failing batch before giving up.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The sending side of the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<WriteOp>,
    health: Arc<Health>,
}

/// What the writer thread shares with its callers.
#[derive(Debug, Default)]
struct Health {
    /// The last write error, while writes fail; `None` once a batch commits.
    error: Mutex<Option<String>>,
    /// Events queued and not yet committed.
    backlog_events: AtomicU64,
    /// Payload bytes of those events.
    backlog_bytes: AtomicU64,
    /// Set by [`BatchWriter::stop`].
    stopping: AtomicBool,
    /// Woken when the backlog shrinks or writes start failing, for producers
    /// waiting in [`Backpressure::wait_for_room`].
    room: tokio::sync::Notify,
}

/// Lets a producer wait while the writer lags behind: past `limit` bytes waiting to
/// be written, [`Self::wait_for_room`] returns only once the backlog is below it
/// again. It never waits while writes fail (then the journal's own rule for a
/// failing store applies) or once the writer is stopping.
#[derive(Clone)]
pub struct Backpressure {
    health: Arc<Health>,
    limit: u64,
}

impl Backpressure {
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.health.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.health.backlog_bytes.load(Ordering::Relaxed) <= self.limit
                || self.health.error.lock().expect("writer health").is_some()
                || self.health.stopping.load(Ordering::Relaxed)
            {
                return;
            }
            notified.await;
        }
    }
}

/// The writer's state, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    /// Why the last write failed, while writes fail.
    pub error: Option<String>,
    /// Events queued and not yet committed.
    pub backlog_events: u64,
    /// Payload bytes of those events.
    pub backlog_bytes: u64,
}

/// Handle to join the writer thread after [`BatchWriter::stop`].
pub struct WriterThread(thread::JoinHandle<()>);

impl WriterThread {
    /// Waits until every queued write is applied and the thread has ended.
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the history writer thread panicked");
        }
    }
}

impl BatchWriter {
    /// Starts the writer thread for `store`.
    pub fn start(store: Arc<dyn Store>) -> (Self, WriterThread) {
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(Health::default());
        let shared = health.clone();
        let handle = thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || run(store.as_ref(), &rx, &shared))
            .expect("spawning the history writer thread");
        (Self { tx, health }, WriterThread(handle))
    }

    /// Queues a write. Never blocks.
    pub fn send(&self, op: WriteOp) {
        if let Some(bytes) = event_bytes(&op) {
            self.health.backlog_events.fetch_add(1, Ordering::Relaxed);
            self.health
                .backlog_bytes
                .fetch_add(bytes, Ordering::Relaxed);
        }
        if let Err(mpsc::SendError(op)) = self.tx.send(op) {
            tracing::error!("history writer has stopped; a write was not queued");
            self.health.committed(std::slice::from_ref(&op));
        }
    }

    /// Asks the thread to end once everything queued so far is committed (or,
    /// while writes fail, after [`STOP_GRACE`]).
    pub fn stop(&self) {
        self.health.stopping.store(true, Ordering::Relaxed);
        self.health.room.notify_waiters();
        self.send(WriteOp::Stop);
    }

    /// Waits until everything queued so far is committed (for ever while writes
    /// fail: callers that must answer meanwhile read the journal's window instead).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteOp::Flush(tx));
        // An error only means the thread ended without answering (it gave up at a stop).
        let _ = rx.await;
    }

    /// Whether writes succeed, and what waits to be written.
    pub fn status(&self) -> WriterStatus {
        WriterStatus {
            error: self.health.error.lock().expect("writer health").clone(),
            backlog_events: self.health.backlog_events.load(Ordering::Relaxed),
            backlog_bytes: self.health.backlog_bytes.load(Ordering::Relaxed),
        }
    }

    /// Producers that wait while more than `limit` bytes wait to be written.
    pub fn backpressure(&self, limit: u64) -> Backpressure {
        Backpressure {
            health: self.health.clone(),
            limit,
        }
    }

    /// Payload bytes of the events queued and not yet committed.
    pub fn backlog_bytes(&self) -> u64 {
        self.health.backlog_bytes.load(Ordering::Relaxed)
    }
}

impl Health {
    /// Takes the events of `ops` out of the backlog.
    fn committed(&self, ops: &[WriteOp]) {
        let (events, bytes) = ops
            .iter()
            .filter_map(event_bytes)
            .fold((0, 0), |(n, b), bytes| (n + 1, b + bytes));
        self.backlog_events.fetch_sub(events, Ordering::Relaxed);
        self.backlog_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    fn set_error(&self, error: Option<String>) {
        *self.error.lock().expect("writer health") = error;
        self.room.notify_waiters();
    }
}

/// The payload size of an event write; `None` for other ops.
fn event_bytes(op: &WriteOp) -> Option<u64> {
    match op {
        WriteOp::PutEvent { event, .. } => Some(event.payload.len() as u64),
        _ => None,
    }
}

fn run(store: &dyn Store, rx: &mpsc::Receiver<WriteOp>, health: &Health) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    let mut stop_seen = None;
    while !stopping && let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let stored = apply(store, &batch, health, &mut stop_seen);
        health.committed(&batch);
        for op in batch.drain(..) {
            match op {
                WriteOp::PutEvent {
                    event, persisted, ..
                } if stored => {
                    persisted.fetch_max(event.seq, Ordering::Release);
                }
                WriteOp::Flush(done) => {
                    // The caller may have stopped waiting; nothing to tell it then.
                    let _ = done.send(());
                }
                WriteOp::Stop => stopping = true,
                _ => {}
            }
        }
    }
    tracing::debug!("history writer stopped");
}

/// Commits `batch`, retrying with backoff until it succeeds; returns whether it
/// did. Gives up only when the server is stopping and [`STOP_GRACE`] has passed.
/// `stop_seen` is when a failing attempt first saw the stop, for every batch after it.
fn apply(
    store: &dyn Store,
    batch: &[WriteOp],
    health: &Health,
    stop_seen: &mut Option<Instant>,
) -> bool {
    let mut delay = FIRST_BACKOFF;
    let mut failing_since: Option<Instant> = None;
    let mut attempts: u32 = 0;
    let started = crate::metrics::timer();
    loop {
        attempts += 1;
        let error = match store.write_batch(batch) {
            Ok(()) => {
                if let Some(started) = started {
                    crate::metrics::store_batch(batch.len(), started.elapsed());
                }
                if let Some(since) = failing_since {
                    health.set_error(None);
                    tracing::info!(
                        attempts,
                        failed_for = ?since.elapsed(),
                        "history writes succeed again"
                    );
                }
                return true;
            }
            Err(error) => error,
        };
        crate::metrics::store_error();
        let message = error.to_string();
        if failing_since.is_none() {
            failing_since = Some(Instant::now());
            tracing::error!(
                %error,
                ops = batch.len(),
                "history write failed; retrying until it succeeds (events stay in memory)"
            );
        }
        health.set_error(Some(message));
        if health.stopping.load(Ordering::Relaxed) {
            let seen = *stop_seen.get_or_insert_with(Instant::now);
            if seen.elapsed() >= STOP_GRACE {
                let events = batch.iter().filter_map(event_bytes).count();
                tracing::error!(
                    %error,
                    events,
                    ops = batch.len(),
                    "history write still fails at stop; giving up: these events are not stored"
                );
                return false;
            }
        }
        thread::sleep(delay);
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::job::EventKind;
    use crate::job::JobId;
    use crate::store::{JobFilter, StoreError, StoredEvent};

    /// A store whose writes fail while `full` is set, take their time while `slow`
    /// is set, and that counts committed events.
    #[derive(Default)]
    struct Flaky {
        full: AtomicBool,
        slow: AtomicBool,
        attempts: AtomicUsize,
        stored: Mutex<Vec<u64>>,
    }

    impl Store for Flaky {
        fn write_batch(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            while self.slow.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(1));
            }
            if self.full.load(Ordering::Relaxed) {
                return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    None,
                )));
            }
            let mut stored = self.stored.lock().unwrap();
            for op in ops {
                if let WriteOp::PutEvent { event, .. } = op {
                    stored.push(event.seq);
                }
            }
            Ok(())
        }
        fn job(&self, _: &JobId) -> Result<Option<crate::job::JobRecord>, StoreError> {
            Ok(None)
        }
        fn jobs(&self, _: &JobFilter) -> Result<Vec<crate::job::JobRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn events(&self, _: &JobId, _: u64, _: usize) -> Result<Vec<StoredEvent>, StoreError> {
            Ok(Vec::new())
        }
        fn log_events(&self, _: &JobId, _: u64, _: usize) -> Result<Vec<StoredEvent>, StoreError> {
            Ok(Vec::new())
        }
        fn log_events_containing(
            &self,
            _: &JobId,
            _: u64,
            _: usize,
            _: &str,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            Ok(Vec::new())
        }
        fn seq_of_line(&self, _: &JobId, _: u64) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        fn last_line(&self, _: &JobId) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn max_seq(&self, _: &JobId) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn unfinished_jobs(&self) -> Result<Vec<crate::job::JobRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn finished_before(&self, _: time::OffsetDateTime) -> Result<Vec<JobId>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn put(seq: u64, persisted: &Arc<AtomicU64>) -> WriteOp {
        WriteOp::PutEvent {
            job_id: JobId::parse("job-1").unwrap(),
            event: StoredEvent {
                seq,
                kind: EventKind::Log,
                payload: "{\"seq\":1}".into(),
                line: Some(seq),
            },
            persisted: persisted.clone(),
        }
    }

    fn wait(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "waited 10 s for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_failing_batch_is_retried_until_it_commits_and_only_then_marked_stored() {
        let store = Arc::new(Flaky::default());
        store.full.store(true, Ordering::Relaxed);
        let (writer, thread) = BatchWriter::start(store.clone());
        let persisted = Arc::new(AtomicU64::new(0));

        for seq in 1..=3 {
            writer.send(put(seq, &persisted));
        }
        // Well past the old eight attempts.
        wait("ten failed attempts", || {
            store.attempts.load(Ordering::Relaxed) >= 10
        });

        assert_eq!(
            persisted.load(Ordering::Acquire),
            0,
            "nothing marked stored"
        );
        let status = writer.status();
        assert!(
            status.error.as_deref().is_some_and(|e| e.contains("full")),
            "{status:?}"
        );
        assert_eq!(status.backlog_events, 3, "{status:?}");
        assert_eq!(status.backlog_bytes, 3 * 9, "{status:?}");

        store.full.store(false, Ordering::Relaxed);
        wait("the backlog to commit", || {
            persisted.load(Ordering::Acquire) == 3
        });
        wait("the status to clear", || writer.status().error.is_none());
        assert_eq!(*store.stored.lock().unwrap(), vec![1, 2, 3]);
        assert_eq!(writer.status().backlog_events, 0);
        assert_eq!(writer.status().backlog_bytes, 0);
        writer.stop();
        thread.join();
    }

    #[test]
    fn a_stop_gives_up_a_failing_batch_after_the_grace_without_marking_it() {
        let store = Arc::new(Flaky::default());
        store.full.store(true, Ordering::Relaxed);
        let (writer, thread) = BatchWriter::start(store.clone());
        let persisted = Arc::new(AtomicU64::new(0));
        writer.send(put(1, &persisted));
        wait("a failed attempt", || {
            store.attempts.load(Ordering::Relaxed) >= 1
        });

        let started = Instant::now();
        writer.stop();
        thread.join();

        assert!(started.elapsed() >= STOP_GRACE, "{:?}", started.elapsed());
        assert!(
            started.elapsed() < STOP_GRACE * 3,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(persisted.load(Ordering::Acquire), 0);
        assert!(store.stored.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn producers_wait_while_a_working_store_lags_but_not_while_it_fails() {
        let store = Arc::new(Flaky::default());
        store.slow.store(true, Ordering::Relaxed);
        let (writer, thread) = BatchWriter::start(store.clone());
        let persisted = Arc::new(AtomicU64::new(0));
        for seq in 1..=3 {
            writer.send(put(seq, &persisted));
        }
        let room = writer.backpressure(10);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), room.wait_for_room())
                .await
                .is_err(),
            "27 bytes wait for a slow store: past the limit of 10"
        );
        store.slow.store(false, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), room.wait_for_room())
            .await
            .expect("room once the writer has caught up");

        store.full.store(true, Ordering::Relaxed);
        for seq in 4..=6 {
            writer.send(put(seq, &persisted));
        }
        tokio::time::timeout(Duration::from_secs(10), room.wait_for_room())
            .await
            .expect("no waiting while writes fail");
        assert!(writer.status().error.is_some());

        store.full.store(false, Ordering::Relaxed);
        writer.stop();
        thread.join();
    }
}
