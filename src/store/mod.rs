//! Durable job records and event history, behind one small interface.
//!
//! [`Store`] is what a database must do for buildcast: apply a batch of writes and
//! answer a few reads. [`sqlite::SqliteStore`] is the embedded default. Writes never
//! happen on the caller's path: [`writer::BatchWriter`] queues them and a dedicated
//! thread applies them in batches, one transaction per batch, so that a job printing
//! thousands of lines per second costs a handful of transactions.
//!
//! The store knows nothing of HTTP, Socket.IO or the runner.

pub mod probe;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use time::OffsetDateTime;

use crate::job::EventKind;
use crate::job::{JobId, JobRecord, ProjectId};

/// A failure of the database. Details are logged; callers answer a generic error.
///
/// Each message already carries the cause, so no variant reports it again as
/// its `source`: a chain printed whole (`{:#}`) says it once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(rusqlite_migration::Error),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("could not prepare the data directory: {0}")]
    Io(std::io::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<rusqlite_migration::Error> for StoreError {
    fn from(e: rusqlite_migration::Error) -> Self {
        Self::Migration(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// One event as stored: its number, kind and the JSON payload clients receive,
/// and for a log line its line number (1, 2, 3 … per job, among log lines).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: EventKind,
    pub payload: String,
    pub line: Option<u64>,
}

/// Which jobs a listing wants.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// `Some(true)`: only running or queued jobs; `Some(false)`: only finished ones.
    pub active: Option<bool>,
    pub project_id: Option<ProjectId>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A write, queued for the writer thread.
#[derive(Debug)]
pub enum WriteOp {
    /// Insert or replace a job's record.
    UpsertJob(JobRecord),
    /// Insert (or replace, for the truncation marker) one event. `persisted` is
    /// raised to `seq` once it is committed, which lets the journal drop it from memory.
    PutEvent {
        job_id: JobId,
        event: StoredEvent,
        persisted: Arc<AtomicU64>,
    },
    /// Delete the log lines with `from <= seq <= to` (the dropped middle of a long log).
    DeleteLogRange { job_id: JobId, from: u64, to: u64 },
    /// Delete a job and its history (retention).
    DeleteJob(JobId),
    /// Answered once everything queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Ends the writer thread after everything queued before it is committed.
    Stop,
}

/// A database that can hold buildcast's jobs and history.
///
/// Reads may run on any thread (callers use `spawn_blocking`); `write_batch` is
/// called by the writer thread only.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` atomically (one transaction). `Flush` ops are ignored here.
    fn write_batch(&self, ops: &[WriteOp]) -> Result<(), StoreError>;
    /// A job's stored record.
    fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;
    /// Jobs matching `filter`, newest first.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;
    /// Up to `limit` events of a job with `seq > after`, in order.
    fn events(&self, id: &JobId, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// Up to `limit` log events of a job with `seq > after`, in order.
    fn log_events(
        &self,
        id: &JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Up to `limit` log events of a job with `seq > after`, in order, that may
    /// contain `needle` (ASCII case ignored): every line whose payload holds it
    /// (a prefilter: the caller checks each line it gets) and every line with an
    /// escape sequence, which may hide it from the payload.
    fn log_events_containing(
        &self,
        id: &JobId,
        after: u64,
        limit: usize,
        needle: &str,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The seq of the first stored log line numbered `line` or later, if any.
    fn seq_of_line(&self, id: &JobId, line: u64) -> Result<Option<u64>, StoreError>;
    /// The number of a job's last stored log line (0 if none).
    fn last_line(&self, id: &JobId) -> Result<u64, StoreError>;
    /// The highest stored sequence number of a job (0 if none).
    fn max_seq(&self, id: &JobId) -> Result<u64, StoreError>;
    /// Jobs that were queued or running when the server last stopped.
    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Finished jobs that ended before `before`.
    fn finished_before(&self, before: OffsetDateTime) -> Result<Vec<JobId>, StoreError>;
}

/// Runs a blocking store call on Tokio's blocking threads, off the async ones.
pub async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("store task failed: {e}"))))
}
