//! The batching writer: a dedicated thread that applies queued [`WriteOp`]s to the
//! [`Store`], as many as are waiting in one transaction.
//!
//! Callers never wait for the database: [`BatchWriter::send`] only queues. Batching
//! is natural rather than timed: while one transaction commits, the next batch
//! gathers. A failed batch is retried with backoff, so a briefly locked or full
//! disk delays history instead of losing it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::{Store, WriteOp};

/// Most ops applied in one transaction.
const MAX_BATCH: usize = 8192;
/// Attempts at one batch before it is given up (and logged as lost).
const MAX_ATTEMPTS: u32 = 8;

/// The sending side of the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<WriteOp>,
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
        let handle = thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || run(store.as_ref(), &rx))
            .expect("spawning the history writer thread");
        (Self { tx }, WriterThread(handle))
    }

    /// Queues a write. Never blocks.
    pub fn send(&self, op: WriteOp) {
        if self.tx.send(op).is_err() {
            tracing::error!("history writer has stopped; a write was not queued");
        }
    }

    /// Asks the thread to end once everything queued so far is committed.
    pub fn stop(&self) {
        self.send(WriteOp::Stop);
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteOp::Flush(tx));
        let _ = rx.await;
    }
}

fn run(store: &dyn Store, rx: &mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping && let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        apply(store, &batch);
        for op in batch.drain(..) {
            match op {
                WriteOp::PutEvent {
                    event, persisted, ..
                } => {
                    persisted.fetch_max(event.seq, Ordering::Release);
                }
                WriteOp::Flush(done) => {
                    let _ = done.send(());
                }
                WriteOp::Stop => stopping = true,
                _ => {}
            }
        }
    }
    tracing::debug!("history writer stopped");
}

fn apply(store: &dyn Store, batch: &[WriteOp]) {
    let mut delay = Duration::from_millis(10);
    for attempt in 1..=MAX_ATTEMPTS {
        match store.write_batch(batch) {
            Ok(()) => return,
            Err(error) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(%error, attempt, ops = batch.len(), "history write failed; retrying");
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::error!(%error, ops = batch.len(), "history write failed; these events are not stored");
            }
        }
    }
}
