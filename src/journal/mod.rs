//! The journal: the one place where a job's events are numbered, recorded and
//! handed on.
//!
//! Producers (the runner, external workers) call [`Journal::record`]. Under the
//! job's lock the journal gives the event the job's next `seq`, folds it into the
//! job's state, keeps it in a bounded in-memory window, queues it for the store,
//! and passes it to the [`EventSink`] (the Socket.IO fan-out). Because numbering
//! and delivery happen under the same lock, a subscriber that attaches under that
//! lock ([`Journal::with_live`]) sees every event exactly once: those before from
//! history, those after live.
//!
//! Memory stays bounded: the window keeps the newest `HISTORY_WINDOW` events (and
//! any not yet committed), older ones are read back from the store. Finished jobs
//! leave memory a little after they end, once their history is committed. While the
//! store cannot write (a full disk), unstored events stay in the window; past
//! `MAX_UNSTORED_BYTES` waiting for the store, further log lines are delivered live
//! but not kept for history, and once storing resumes (or the job ends) one system
//! line says which seqs were not kept. Progress, errors and completions are always
//! kept.
//!
//! A `seq` means one content for ever: the notes about what history dropped (the
//! log cap, the unstored lines) take their own, new seq when the drop is over; no
//! delivered event is ever rewritten.
//!
//! The journal knows nothing of HTTP or Socket.IO.

pub mod log_budget;
pub mod mirror;
pub mod pacing;
pub mod payload;
pub mod reads;
pub mod recovery;
pub mod search;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use crate::job::{EventKind, JobEvent, JobId, JobRecord, Stream};
use crate::store::writer::{BatchWriter, WriterStatus};
use crate::store::{Store, StoredEvent, WriteOp};
use crate::tasks::Tasks;
use crate::wire::EventPayload;
use log_budget::{LogBudget, Unkept};

pub use log_budget::Dropped;
pub use mirror::Mirrored;
pub use pacing::{DeliveryLag, Pacing};
pub use reads::LiveView;

/// How long a finished job stays in memory (for cheap replays) before only the
/// store holds it.
const FINISHED_LINGER: Duration = Duration::from_secs(30);
/// One recorded event, as numbered and delivered.
#[derive(Debug)]
pub struct RecordedEvent {
    pub seq: u64,
    pub kind: EventKind,
    /// A log line's number: 1, 2, 3 … per job, counting every line the job printed.
    pub line: Option<u64>,
    /// The payload, serialized once: every socket and the store get these bytes.
    pub json: Box<serde_json::value::RawValue>,
}

impl RecordedEvent {
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Whether an event may be left out of history when too much waits for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// A system note about history itself: always kept.
    Always,
    /// Log lines are not kept past `MAX_UNSTORED_BYTES` (other events always are).
    WithinLimits,
}

/// Receives every recorded event, in order, with the job's lock held: it must not
/// block.
pub trait EventSink: Send + Sync + 'static {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>);

    /// Delivers whatever the sink held back of job `id` (batched log lines). Called
    /// with the job's lock held, before anyone attaches to the job's live events
    /// ([`Journal::with_live`]), so that what is held back is never delivered to a
    /// subscriber that also got it from history.
    fn flush_held(&self, _id: &JobId) {}
}

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("job {0} has already finished")]
    Finished(JobId),
    #[error("job {0} already exists")]
    Exists(JobId),
    #[error("job {0} is numbered by another node")]
    Mirrored(JobId),
}

/// Records, numbers and hands on job events; see the module docs.
pub struct Journal {
    /// Jobs held in memory: every queued or running job, and recently finished ones.
    live: RwLock<HashMap<JobId, Arc<LiveJob>>>,
    store: Arc<dyn Store>,
    writer: BatchWriter,
    /// Events the sink has not sent on yet; builds wait while it is long.
    delivery_lag: Arc<DeliveryLag>,
    /// The fan-out; set once the Socket.IO layer exists (absent when it is disabled).
    sink: OnceLock<Arc<dyn EventSink>>,
    /// Receives the events of this node's own jobs to share them with other nodes
    /// (set when Redis is configured).
    publisher: OnceLock<Arc<dyn EventSink>>,
    /// This server's node id: the owner of the jobs it creates.
    node: String,
    limits: Limits,
    /// Where the evictions of finished jobs are spawned.
    tasks: Tasks,
}

/// The journal's memory and history bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events kept in memory per job once committed (`HISTORY_WINDOW`).
    pub window: usize,
    /// `MAX_LOG_BYTES_PER_JOB`.
    pub log_cap: u64,
    /// `MAX_UNSTORED_BYTES`: event bytes waiting for the store past which log lines
    /// are no longer kept for history.
    pub max_unstored: u64,
    /// Items of delivery work (an event for one fan-out worker) that may wait
    /// before a build's output is paced ([`Pacing`]); the fan-out's choice
    /// (`socket::fanout::delivery_lag_limit`).
    pub delivery_lag: usize,
}

/// A job held in memory.
struct LiveJob {
    /// Whether another node numbers this job's events (this one mirrors them).
    mirrored: bool,
    /// Highest seq committed to the store; raised by the writer thread.
    persisted: Arc<AtomicU64>,
    state: Mutex<LiveState>,
}

struct LiveState {
    record: JobRecord,
    /// The newest events and every one not yet committed, oldest first (log lines
    /// that were not kept for history are not here).
    window: VecDeque<Arc<RecordedEvent>>,
    log: LogBudget,
    /// Log lines recorded so far (the last one's number).
    lines: u64,
    /// Log lines delivered but not kept for history because too much waited for
    /// the store; closed by a note once storing resumes or the job ends.
    unkept: Option<Unkept>,
}

impl Journal {
    pub fn new(
        store: Arc<dyn Store>,
        writer: BatchWriter,
        node: String,
        limits: Limits,
        tasks: Tasks,
    ) -> Arc<Self> {
        Arc::new(Self {
            live: RwLock::new(HashMap::new()),
            store,
            writer,
            delivery_lag: Arc::new(DeliveryLag::new(limits.delivery_lag)),
            sink: OnceLock::new(),
            publisher: OnceLock::new(),
            node,
            limits,
            tasks,
        })
    }

    /// Connects the fan-out. Events recorded before this are only stored.
    pub fn set_sink(&self, sink: Arc<dyn EventSink>) {
        if self.sink.set(sink).is_err() {
            tracing::error!("the journal's fan-out was connected twice; keeping the first");
        }
    }

    /// Connects the cluster publisher: it gets every event of this node's own jobs.
    pub fn set_publisher(&self, publisher: Arc<dyn EventSink>) {
        if self.publisher.set(publisher).is_err() {
            tracing::error!(
                "the journal's cluster publisher was connected twice; keeping the first"
            );
        }
    }

    /// This server's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The history writer's health (error, backlog), for `/health`.
    pub fn writer_status(&self) -> WriterStatus {
        self.writer.status()
    }

    /// What producers wait on while history falls behind: a quarter of
    /// `MAX_UNSTORED_BYTES` waiting for a store that works (a slow disk) pauses a
    /// build's output until the writer catches up, so memory stays bounded and no
    /// line is dropped; while the store fails, the rule of [`Self::record`] applies.
    pub fn backpressure(&self) -> Pacing {
        Pacing {
            history: self.writer.backpressure(self.limits.max_unstored / 4),
            delivery: self.delivery_lag.clone(),
        }
    }

    /// Where the sink counts the events it has not sent on yet ([`Pacing`]).
    pub fn delivery_lag(&self) -> Arc<DeliveryLag> {
        self.delivery_lag.clone()
    }

    /// Waits until every write queued so far is committed.
    pub async fn flush_history(&self) {
        self.writer.flush().await;
    }

    /// Ends the history writer once what is queued is written (shutdown).
    pub fn stop_writer(&self) {
        self.writer.stop();
    }

    /// Adds a new job and records its first event (`queued`, 0 %).
    pub fn create(self: &Arc<Self>, mut record: JobRecord) -> Result<(), RecordError> {
        let id = record.id.clone();
        record.node.clone_from(&self.node);
        {
            let mut live = self.live.write().expect("journal map");
            if live.contains_key(&id) {
                return Err(RecordError::Exists(id));
            }
            self.writer.send(WriteOp::UpsertJob(record.clone()));
            live.insert(id.clone(), Arc::new(self.live_job(record, 0, 0, false)));
        }
        self.record(
            &id,
            JobEvent::Progress {
                phase: crate::job::Phase::Queued,
                progress: 0,
                message: "Waiting in queue".into(),
            },
        )
        .map(|_| ())
    }

    fn live_job(&self, record: JobRecord, persisted: u64, lines: u64, mirrored: bool) -> LiveJob {
        LiveJob {
            mirrored,
            persisted: Arc::new(AtomicU64::new(persisted)),
            state: Mutex::new(LiveState {
                record,
                window: VecDeque::new(),
                log: LogBudget::new(self.limits.log_cap),
                lines,
                unkept: None,
            }),
        }
    }

    fn get_live(&self, id: &JobId) -> Option<Arc<LiveJob>> {
        self.live.read().expect("journal map").get(id).cloned()
    }

    /// Numbers, records and delivers an event of a job; returns its seq.
    pub fn record(self: &Arc<Self>, id: &JobId, event: JobEvent) -> Result<u64, RecordError> {
        let job = self
            .get_live(id)
            .ok_or_else(|| RecordError::UnknownJob(id.clone()))?;
        if job.mirrored {
            return Err(RecordError::Mirrored(id.clone()));
        }
        let mut state = job.state.lock().expect("job state");
        if state.record.finished_at.is_some() {
            return Err(RecordError::Finished(id.clone()));
        }
        let ends = matches!(event, JobEvent::Completed { .. });
        for note in self.notes_due(&mut state, ends) {
            let note = JobEvent::Log {
                stream: Stream::System,
                message: note,
            };
            self.number(id, &job, &mut state, &note, Keep::Always);
        }
        Ok(self.number(id, &job, &mut state, &event, Keep::WithinLimits))
    }

    /// The system lines due before the next event: the unkept lines once storing
    /// resumes, and the log cap's cut when the job ends. Each takes its own seq.
    fn notes_due(&self, state: &mut LiveState, ends: bool) -> Vec<String> {
        let mut notes = Vec::new();
        if state.unkept.is_some()
            && (ends || self.writer.backlog_bytes() < self.limits.max_unstored)
            && let Some(u) = state.unkept.take()
        {
            notes.push(payload::unkept_note(&u));
            crate::metrics::truncated("unstored");
        }
        if ends && let Some(d) = state.log.dropped {
            notes.push(payload::truncation_marker(&d));
            crate::metrics::truncated("log_cap");
        }
        notes
    }

    /// Gives an event of this node's own job the next seq and appends it.
    fn number(
        self: &Arc<Self>,
        id: &JobId,
        job: &LiveJob,
        state: &mut LiveState,
        event: &JobEvent,
        keep: Keep,
    ) -> u64 {
        let now = OffsetDateTime::now_utc();
        let seq = state.record.last_seq + 1;
        state.record.last_seq = seq;
        state.record.apply(event, now);
        let payload = payload::payload(&state.record, event, seq, now);
        self.append(id, job, state, payload, true, keep)
    }

    /// Stores, windows and delivers a numbered event; the job's lock is held.
    fn append(
        self: &Arc<Self>,
        id: &JobId,
        job: &LiveJob,
        state: &mut LiveState,
        payload: EventPayload,
        own: bool,
        keep: Keep,
    ) -> u64 {
        let seq = payload.seq();
        let kind = payload.kind();
        let json = serde_json::to_string(&payload).expect("event payloads serialize");
        let bytes = json.len() as u64;
        let line = (kind == EventKind::Log).then(|| {
            state.lines += 1;
            state.lines
        });
        let recorded = Arc::new(RecordedEvent {
            seq,
            kind,
            line,
            json: serde_json::value::RawValue::from_string(json.clone())
                .expect("serialized JSON is valid"),
        });

        if keep == Keep::WithinLimits
            && kind == EventKind::Log
            && self.writer.backlog_bytes() >= self.limits.max_unstored
        {
            // Too much waits for the store: deliver, but keep no copy.
            let u = state.unkept.get_or_insert(Unkept {
                first_seq: seq,
                last_seq: seq,
                lines: 0,
                bytes: 0,
            });
            if u.lines == 0 {
                tracing::error!(job_id = %id, seq, max_unstored = self.limits.max_unstored, "history backlog is full; log lines are delivered live but not kept until the store writes again");
            }
            u.last_seq = seq;
            u.lines += 1;
            u.bytes += bytes;
            self.deliver(state, &recorded, own);
            return seq;
        }

        self.writer.send(WriteOp::PutEvent {
            job_id: id.clone(),
            event: StoredEvent {
                seq,
                kind,
                payload: json,
                line,
            },
            persisted: job.persisted.clone(),
        });
        if kind == EventKind::Log
            && keep == Keep::WithinLimits
            && let Some((from, to)) = state.log.admit(seq, bytes)
        {
            self.writer.send(WriteOp::DeleteLogRange {
                job_id: id.clone(),
                from,
                to,
            });
        }
        if kind != EventKind::Log {
            self.writer.send(WriteOp::UpsertJob(state.record.clone()));
        }

        state.window.push_back(recorded.clone());
        let persisted = job.persisted.load(Ordering::Acquire);
        while state.window.len() > self.limits.window
            && state.window.front().is_some_and(|e| e.seq() <= persisted)
        {
            state.window.pop_front();
        }
        self.deliver(state, &recorded, own);
        if kind == EventKind::Completed {
            self.evict_later(id.clone());
        }
        seq
    }

    /// Hands a recorded event to the fan-out, and to the cluster if it is ours.
    fn deliver(&self, state: &LiveState, recorded: &Arc<RecordedEvent>, own: bool) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(&state.record, recorded);
        }
        if own && let Some(publisher) = self.publisher.get() {
            publisher.deliver(&state.record, recorded);
        }
    }

    fn evict_later(self: &Arc<Self>, id: JobId) {
        let journal = Arc::downgrade(self);
        self.tasks.spawn_until_stopped(async move {
            tokio::time::sleep(FINISHED_LINGER).await;
            if let Some(journal) = journal.upgrade() {
                journal.writer.flush().await;
                journal.live.write().expect("journal map").remove(&id);
            }
        });
    }

    /// Runs `f` on a job held in memory with its lock held, so that no event of it
    /// can be recorded meanwhile. `None` if the job is not in memory.
    pub fn with_live<R>(&self, id: &JobId, f: impl FnOnce(LiveView<'_>) -> R) -> Option<R> {
        let job = self.get_live(id)?;
        let state = job.state.lock().expect("job state");
        if let Some(sink) = self.sink.get() {
            sink.flush_held(id);
        }
        Some(f(LiveView {
            record: &state.record,
            state: &state,
        }))
    }

    /// Has the sink deliver what it holds back of job `id`, under the job's lock.
    pub fn flush_held(&self, id: &JobId) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        match self.get_live(id) {
            Some(job) => {
                let _state = job.state.lock().expect("job state");
                sink.flush_held(id);
            }
            None => sink.flush_held(id),
        }
    }

    /// Runs `f` while no job can be created, if `id` is not in memory: a subscriber
    /// to a job that does not exist yet attaches in `f` and cannot miss its first event.
    pub fn if_not_live<R>(&self, id: &JobId, f: impl FnOnce() -> R) -> Option<R> {
        let live = self.live.read().expect("journal map");
        (!live.contains_key(id)).then(f)
    }
}
