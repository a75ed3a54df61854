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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use crate::job::{JobEvent, JobId, JobRecord, Outcome, ProjectId, Stream};
use crate::store::writer::BatchWriter;
use crate::store::{JobFilter, Store, StoreError, StoredEvent, WriteOp};
use crate::wire::{
    CompletedPayload, ErrorPayload, EventKind, EventPayload, LogPayload, ProgressPayload, Timestamp,
};

/// How long a finished job stays in memory (for cheap replays) before only the
/// store holds it.
const FINISHED_LINGER: Duration = Duration::from_secs(30);

/// How long start-up waits for the history of recovered jobs to be written.
const RECOVERY_FLUSH: Duration = Duration::from_secs(5);

/// One recorded event, as numbered and delivered.
#[derive(Debug)]
pub struct Recorded {
    pub seq: u64,
    pub kind: EventKind,
    /// The payload, serialized once: every socket and the store get these bytes.
    pub json: Box<serde_json::value::RawValue>,
}

impl Recorded {
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
    fn deliver(&self, job: &JobRecord, event: &Arc<Recorded>);

    /// Delivers whatever the sink held back of job `id` (batched log lines). Called
    /// with the job's lock held, before anyone attaches to the job's live events
    /// ([`Journal::with_live`]), so that what is held back is never delivered to a
    /// subscriber that also got it from history.
    fn settle(&self, _id: &JobId) {}
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

/// What became of an event numbered by another node.
#[derive(Debug, PartialEq, Eq)]
pub enum Mirrored {
    Recorded,
    /// Already recorded (a retried publish).
    Duplicate,
    /// Events before it are missing: fetch from `expected` first.
    Gap {
        expected: u64,
    },
}

/// Records, numbers and hands on job events; see the module docs.
pub struct Journal {
    /// Jobs held in memory: every queued or running job, and recently finished ones.
    live: RwLock<HashMap<JobId, Arc<LiveJob>>>,
    store: Arc<dyn Store>,
    writer: BatchWriter,
    /// The fan-out; set once the Socket.IO layer exists (absent when it is disabled).
    sink: OnceLock<Arc<dyn EventSink>>,
    /// Receives the events of this node's own jobs to share them with other nodes
    /// (set when Redis is configured).
    publisher: OnceLock<Arc<dyn EventSink>>,
    /// This server's node id: the owner of the jobs it creates.
    node: String,
    limits: Limits,
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
    window: VecDeque<Arc<Recorded>>,
    log: LogBudget,
    /// Log lines delivered but not kept for history because too much waited for
    /// the store; closed by a note once storing resumes or the job ends.
    unkept: Option<Unkept>,
}

/// A run of log lines delivered live but not kept for history.
#[derive(Debug, Clone, Copy)]
struct Unkept {
    first_seq: u64,
    last_seq: u64,
    lines: u64,
    bytes: u64,
}

/// What the history keeps of a long log: a head, a rolling tail, and a note of the
/// middle it dropped.
#[derive(Debug, Default)]
struct LogBudget {
    /// Bytes the head may still take.
    head_left: u64,
    /// Log events in the tail, oldest first: (seq, bytes).
    tail: VecDeque<(u64, u64)>,
    tail_bytes: u64,
    tail_cap: u64,
    dropped: Option<Dropped>,
}

/// The middle of a log that was dropped from history.
#[derive(Debug, Clone, Copy)]
pub struct Dropped {
    pub first_seq: u64,
    pub last_seq: u64,
    pub lines: u64,
    pub bytes: u64,
}

impl LogBudget {
    fn new(cap: u64) -> Self {
        Self {
            head_left: cap / 2,
            tail_cap: cap - cap / 2,
            ..Self::default()
        }
    }

    /// Accounts for a new log line; returns the seqs that fall out of history.
    fn admit(&mut self, seq: u64, bytes: u64) -> Option<(u64, u64)> {
        if self.tail.is_empty() && bytes <= self.head_left {
            self.head_left -= bytes;
            return None;
        }
        self.head_left = 0;
        self.tail.push_back((seq, bytes));
        self.tail_bytes += bytes;
        let mut range: Option<(u64, u64)> = None;
        while self.tail_bytes > self.tail_cap {
            let Some((old, b)) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= b;
            let d = self.dropped.get_or_insert(Dropped {
                first_seq: old,
                last_seq: old,
                lines: 0,
                bytes: 0,
            });
            d.last_seq = old;
            d.lines += 1;
            d.bytes += b;
            range = Some((range.map_or(old, |r| r.0), old));
        }
        range
    }

    fn is_dropped(&self, seq: u64, kind: EventKind) -> bool {
        kind == EventKind::Log
            && self
                .dropped
                .is_some_and(|d| d.first_seq <= seq && seq <= d.last_seq)
    }
}

/// What a subscriber sees of a live job while holding its lock.
pub struct LiveView<'a> {
    pub record: &'a JobRecord,
    state: &'a LiveState,
}

impl LiveView<'_> {
    /// The first `limit` events with `seq > since` and whether more follow, if
    /// memory still holds all of them; else the lowest seq memory holds (the rest
    /// must come from the store first).
    pub fn events_after(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<Arc<Recorded>>, bool), u64> {
        let first = self
            .state
            .window
            .front()
            .map_or(self.record.last_seq + 1, |e| e.seq());
        if since + 1 < first {
            return Err(first);
        }
        // Not an index: lines not kept for history are missing from the window.
        let skip = self.state.window.partition_point(|e| e.seq() <= since);
        let mut after = self
            .state
            .window
            .iter()
            .skip(skip)
            .filter(|e| !self.state.log.is_dropped(e.seq(), e.kind));
        let events: Vec<_> = after.by_ref().take(limit).cloned().collect();
        Ok((events, after.next().is_some()))
    }

    /// The part of the log dropped from history, if any.
    pub fn dropped(&self) -> Option<Dropped> {
        self.state.log.dropped
    }
}

impl Journal {
    pub fn new(
        store: Arc<dyn Store>,
        writer: BatchWriter,
        node: String,
        limits: Limits,
    ) -> Arc<Self> {
        Arc::new(Self {
            live: RwLock::new(HashMap::new()),
            store,
            writer,
            sink: OnceLock::new(),
            publisher: OnceLock::new(),
            node,
            limits,
        })
    }

    /// Connects the fan-out. Events recorded before this are only stored.
    pub fn set_sink(&self, sink: Arc<dyn EventSink>) {
        let _ = self.sink.set(sink);
    }

    /// Connects the cluster publisher: it gets every event of this node's own jobs.
    pub fn set_publisher(&self, publisher: Arc<dyn EventSink>) {
        let _ = self.publisher.set(publisher);
    }

    /// This server's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn writer(&self) -> &BatchWriter {
        &self.writer
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
            live.insert(id.clone(), Arc::new(self.live_job(record, 0, false)));
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

    fn live_job(&self, record: JobRecord, persisted: u64, mirrored: bool) -> LiveJob {
        LiveJob {
            mirrored,
            persisted: Arc::new(AtomicU64::new(persisted)),
            state: Mutex::new(LiveState {
                record,
                window: VecDeque::new(),
                log: LogBudget::new(self.limits.log_cap),
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
            notes.push(format!(
                "[buildcast] {} log lines ({} bytes) between seq {} and {} were delivered live but are not in history: the disk could not be written and MAX_UNSTORED_BYTES of history was waiting",
                u.lines, u.bytes, u.first_seq, u.last_seq
            ));
        }
        if ends && let Some(d) = state.log.dropped {
            notes.push(format!(
                "[buildcast] log truncated: {} lines ({} bytes) between seq {} and {} were dropped from history to stay within MAX_LOG_BYTES_PER_JOB; the head and the tail are kept",
                d.lines, d.bytes, d.first_seq, d.last_seq
            ));
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
        let payload = payload(&state.record, event, seq, now);
        self.append(id, job, state, payload, true, keep)
    }

    /// Records an event numbered by another node (its `seq` must be the next one).
    pub fn record_mirrored(
        self: &Arc<Self>,
        id: &JobId,
        payload: EventPayload,
    ) -> Result<Mirrored, RecordError> {
        let job = self
            .get_live(id)
            .ok_or_else(|| RecordError::UnknownJob(id.clone()))?;
        let mut state = job.state.lock().expect("job state");
        let seq = payload.seq();
        let expected = state.record.last_seq + 1;
        if seq < expected {
            return Ok(Mirrored::Duplicate);
        }
        if seq > expected {
            return Ok(Mirrored::Gap { expected });
        }
        let (event, at) = event_of(&payload);
        state.record.last_seq = seq;
        state.record.apply(&event, at);
        self.append(id, &job, &mut state, payload, false, Keep::WithinLimits);
        Ok(Mirrored::Recorded)
    }

    /// Adds a job that another node numbers; its events come through
    /// [`Journal::record_mirrored`].
    pub fn create_mirrored(&self, record: JobRecord) -> Result<(), RecordError> {
        let mut live = self.live.write().expect("journal map");
        if live.contains_key(&record.id) {
            return Err(RecordError::Exists(record.id));
        }
        self.writer.send(WriteOp::UpsertJob(record.clone()));
        live.insert(record.id.clone(), Arc::new(self.live_job(record, 0, true)));
        Ok(())
    }

    /// Whether the job is in memory, and if so whether another node numbers it.
    pub fn is_mirrored(&self, id: &JobId) -> Option<bool> {
        self.get_live(id).map(|j| j.mirrored)
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
        let recorded = Arc::new(Recorded {
            seq,
            kind,
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
    fn deliver(&self, state: &LiveState, recorded: &Arc<Recorded>, own: bool) {
        if let Some(sink) = self.sink.get() {
            sink.deliver(&state.record, recorded);
        }
        if own && let Some(publisher) = self.publisher.get() {
            publisher.deliver(&state.record, recorded);
        }
    }

    fn evict_later(self: &Arc<Self>, id: JobId) {
        let journal = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(FINISHED_LINGER).await;
            if let Some(journal) = journal.upgrade() {
                journal.writer.flush().await;
                journal.live.write().expect("journal map").remove(&id);
            }
        });
    }

    /// Drops a finished job from memory (retention deleted it from the store).
    pub fn forget(&self, id: &JobId) {
        let mut live = self.live.write().expect("journal map");
        let finished = live
            .get(id)
            .is_some_and(|j| j.state.lock().expect("job state").record.is_finished());
        if finished {
            live.remove(id);
        }
    }

    /// Runs `f` on a job held in memory with its lock held, so that no event of it
    /// can be recorded meanwhile. `None` if the job is not in memory.
    pub fn with_live<R>(&self, id: &JobId, f: impl FnOnce(LiveView<'_>) -> R) -> Option<R> {
        let job = self.get_live(id)?;
        let state = job.state.lock().expect("job state");
        if let Some(sink) = self.sink.get() {
            sink.settle(id);
        }
        Some(f(LiveView {
            record: &state.record,
            state: &state,
        }))
    }

    /// Has the sink deliver what it holds back of job `id`, under the job's lock.
    pub fn settle(&self, id: &JobId) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        match self.get_live(id) {
            Some(job) => {
                let _state = job.state.lock().expect("job state");
                sink.settle(id);
            }
            None => sink.settle(id),
        }
    }

    /// Runs `f` while no job can be created, if `id` is not in memory: a subscriber
    /// to a job that does not exist yet attaches in `f` and cannot miss its first event.
    pub fn if_not_live<R>(&self, id: &JobId, f: impl FnOnce() -> R) -> Option<R> {
        let live = self.live.read().expect("journal map");
        (!live.contains_key(id)).then(f)
    }

    /// A job's current state, from memory or the store.
    pub async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        if let Some(job) = self.get_live(id) {
            return Ok(Some(job.state.lock().expect("job state").record.clone()));
        }
        let store = self.store.clone();
        let id = id.clone();
        blocking(move || store.job(&id)).await
    }

    /// Jobs matching `filter`, newest first, live state taking precedence.
    pub async fn jobs(&self, filter: JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let mut live: Vec<JobRecord> = {
            let map = self.live.read().expect("journal map");
            map.values()
                .map(|j| j.state.lock().expect("job state").record.clone())
                .filter(|r| {
                    filter
                        .project_id
                        .as_ref()
                        .is_none_or(|p| *p == r.project_id)
                        && filter.active.is_none_or(|a| a != r.is_finished())
                })
                .collect()
        };
        let store = self.store.clone();
        let stored = blocking(move || store.jobs(&filter).map(|jobs| (jobs, filter.limit))).await?;
        let (stored, limit) = stored;
        let known: std::collections::HashSet<JobId> = live.iter().map(|r| r.id.clone()).collect();
        live.extend(stored.into_iter().filter(|r| !known.contains(&r.id)));
        live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        live.truncate(limit);
        Ok(live)
    }

    /// Up to `limit` events of a job after `since`, in order: what the store holds,
    /// then what only memory holds yet. Answers at once even while the store cannot
    /// write.
    pub async fn events(
        &self,
        id: &JobId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.history(id, since, limit, false).await
    }

    /// Like [`Journal::events`], log lines only.
    pub async fn log_events(
        &self,
        id: &JobId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.history(id, since, limit, true).await
    }

    async fn history(
        &self,
        id: &JobId,
        mut since: u64,
        limit: usize,
        logs_only: bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let wanted = |kind: EventKind| !logs_only || kind == EventKind::Log;
        let mut out = Vec::new();
        while out.len() < limit {
            let room = limit - out.len();
            let memory = self.get_live(id).map(|job| {
                let state = job.state.lock().expect("job state");
                let view = LiveView {
                    record: &state.record,
                    state: &state,
                };
                (view.events_after(since, room), view.dropped())
            });
            // Below `until` everything is committed: read it from the store.
            let (until, dropped) = match memory {
                None => (None, None),
                Some((Ok((events, more)), _)) => {
                    let last = events.last().map(|e| e.seq());
                    out.extend(
                        events
                            .iter()
                            .filter(|e| wanted(e.kind))
                            .map(|e| StoredEvent {
                                seq: e.seq(),
                                kind: e.kind,
                                payload: e.json.get().to_owned(),
                            }),
                    );
                    match last {
                        Some(last) if more => {
                            since = last;
                            continue;
                        }
                        _ => return Ok(out),
                    }
                }
                Some((Err(first), dropped)) => (Some(first), dropped),
            };
            let store = self.store.clone();
            let key = id.clone();
            let page = blocking(move || {
                if logs_only {
                    store.log_events(&key, since, room)
                } else {
                    store.events(&key, since, room)
                }
            })
            .await?;
            let read = page.len();
            let below: Vec<StoredEvent> = page
                .into_iter()
                .take_while(|e| until.is_none_or(|u| e.seq < u))
                .collect();
            let short = below.len() < read || read < room;
            since = below.last().map_or(since, |e| e.seq);
            // A cut whose deletion is not committed yet is not history any more.
            out.extend(below.into_iter().filter(|e| {
                !(e.kind == EventKind::Log
                    && dropped.is_some_and(|d| d.first_seq <= e.seq && e.seq <= d.last_seq))
            }));
            match until {
                None if short => return Ok(out),
                // The store holds nothing more below the window: go on from it.
                Some(first) if short => since = since.max(first - 1),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Marks the jobs the store holds as unfinished (the server stopped while they
    /// ran) as failed, with a system line saying so. Runs once at start-up.
    pub async fn recover_interrupted(self: &Arc<Self>) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let node = self.node.clone();
        let jobs = blocking(move || {
            let jobs: Vec<JobRecord> = store
                .unfinished_jobs()?
                .into_iter()
                .filter(|job| job.node.is_empty() || job.node == node)
                .collect();
            jobs.into_iter()
                .map(|mut job| {
                    job.last_seq = store.max_seq(&job.id)?;
                    // Events numbered after the last one written may have reached
                    // clients before the stop: the history they knew is gone, so
                    // it gets a new name and a client resuming with the old one is
                    // told `recovered: false` and rebuilds from the whole history.
                    job.epoch = JobRecord::new_epoch();
                    Ok(job)
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
        let count = jobs.len();
        for job in jobs {
            let id = job.id.clone();
            let persisted = job.last_seq;
            self.live
                .write()
                .expect("journal map")
                .insert(id.clone(), Arc::new(self.live_job(job, persisted, false)));
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

    /// Ids of mirrored jobs in memory that have not finished.
    pub fn mirrored_unfinished(&self) -> Vec<JobId> {
        self.unfinished_where(|job| job.mirrored)
    }

    /// Ids of jobs in memory that have not finished.
    pub fn unfinished(&self) -> Vec<JobId> {
        self.unfinished_where(|_| true)
    }

    fn unfinished_where(&self, keep: impl Fn(&LiveJob) -> bool) -> Vec<JobId> {
        self.live
            .read()
            .expect("journal map")
            .iter()
            .filter(|(_, job)| {
                keep(job)
                    && job
                        .state
                        .lock()
                        .expect("job state")
                        .record
                        .finished_at
                        .is_none()
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Runs a blocking store call off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("store task failed: {e}"))))
}

fn ids(job: &JobRecord) -> (JobId, ProjectId) {
    (job.id.clone(), job.project_id.clone())
}

/// The wire payload of `event`, numbered `seq`, for a job whose state already
/// includes it.
fn payload(job: &JobRecord, event: &JobEvent, seq: u64, at: OffsetDateTime) -> EventPayload {
    let (job_id, project_id) = ids(job);
    let timestamp = Timestamp(at);
    match event {
        JobEvent::Progress {
            phase,
            progress,
            message,
        } => EventPayload::Progress(ProgressPayload {
            job_id,
            project_id,
            status: job.status,
            phase: *phase,
            progress: *progress,
            message: message.clone(),
            timestamp,
            seq,
        }),
        JobEvent::Log { stream, message } => EventPayload::Log(LogPayload {
            job_id,
            project_id,
            stream: *stream,
            message: message.clone(),
            timestamp,
            seq,
        }),
        JobEvent::Error { phase, message } => EventPayload::Error(ErrorPayload {
            job_id,
            project_id,
            phase: *phase,
            message: message.clone(),
            timestamp,
            seq,
        }),
        JobEvent::Completed { outcome, artifacts } => EventPayload::Completed(CompletedPayload {
            job_id,
            project_id,
            status: job.status,
            success: *outcome == Outcome::Succeeded,
            progress: job.progress,
            duration_ms: job.duration_ms(at),
            artifacts: artifacts.clone(),
            timestamp,
            seq,
        }),
    }
}

/// The event a payload stands for, and when it happened.
fn event_of(payload: &EventPayload) -> (JobEvent, OffsetDateTime) {
    match payload {
        EventPayload::Progress(p) => (
            JobEvent::Progress {
                phase: p.phase,
                progress: p.progress,
                message: p.message.clone(),
            },
            p.timestamp.0,
        ),
        EventPayload::Log(p) => (
            JobEvent::Log {
                stream: p.stream,
                message: p.message.clone(),
            },
            p.timestamp.0,
        ),
        EventPayload::Error(p) => (
            JobEvent::Error {
                phase: p.phase,
                message: p.message.clone(),
            },
            p.timestamp.0,
        ),
        EventPayload::Completed(p) => (
            JobEvent::Completed {
                outcome: match p.status {
                    crate::job::Status::Completed => Outcome::Succeeded,
                    crate::job::Status::Cancelled => Outcome::Cancelled,
                    _ => Outcome::Failed,
                },
                artifacts: p.artifacts.clone(),
            },
            p.timestamp.0,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_keeps_head_and_rolling_tail() {
        let mut b = LogBudget::new(100);
        // Head: 50 bytes.
        assert_eq!(b.admit(1, 25), None);
        assert_eq!(b.admit(2, 25), None);
        // Tail: 50 bytes.
        assert_eq!(b.admit(3, 25), None);
        assert_eq!(b.admit(4, 25), None);
        assert_eq!(b.admit(5, 25), Some((3, 3)));
        assert_eq!(b.admit(6, 25), Some((4, 4)));
        let d = b.dropped.unwrap();
        assert_eq!((d.first_seq, d.last_seq, d.lines, d.bytes), (3, 4, 2, 50));
        assert!(b.is_dropped(4, EventKind::Log));
        assert!(!b.is_dropped(4, EventKind::Progress));
        assert!(!b.is_dropped(5, EventKind::Log));
    }
}
