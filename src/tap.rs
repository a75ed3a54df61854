//! Following a job without Socket.IO: the recorded events of one job, in order,
//! from any position, then live — with no gap and no duplicate — for the HTTP
//! streams ([`crate::http::stream`], [`crate::http::follow`]).
//!
//! [`Taps`] is a second consumer of the journal's events next to the Socket.IO
//! fan-out ([`Tee`] hands every event to both). A [`Follower`] reads history
//! (store, then the journal's window) without any lock, and once what is missing
//! all sits in the window it takes it *and registers its tap under the job's
//! lock* ([`Journal::with_live`]): no event can be recorded in between, so the
//! first live event it gets is exactly the one after the last it read. This is
//! the same rule as [`crate::socket::replay::attach`].
//!
//! A tap is a bounded queue. When a client reads slower than events come, its
//! queue fills: the tap is dropped (what it held is still handed out) and the
//! follower goes back to history at the last seq it handed out, then attaches
//! again. Memory per stream is bounded by its queue (`STREAM_QUEUE_EVENTS`,
//! default [`QUEUE`] events) plus one page of history, and no event is ever
//! skipped. [`Taps::catch_ups`] counts the overflows (`/health`:
//! `delivery.stream_catch_ups`).
//!
//! Project taps get the project events (`project:progress`, `project:completed`);
//! a project follower whose queue overflowed is told so and starts again from a
//! snapshot of the project's jobs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::job::EventKind;
use crate::job::{JobId, JobRecord, ProjectId};
use crate::journal::{EventSink, Journal, RecordedEvent};
use crate::store::{StoreError, StoredEvent};

/// Events a tap may hold for a client that has not read them yet, by default
/// (`STREAM_QUEUE_EVENTS`).
pub const QUEUE: usize = 1024;
/// Events read from history per round trip, and most taken from the window at once.
const PAGE: usize = 1000;

/// One stream's queue of live events.
struct Tap {
    tx: mpsc::Sender<Arc<RecordedEvent>>,
}

type TapList = Vec<Arc<Tap>>;

/// Every open stream's tap, per job and per project. Receives every recorded
/// event with the job's lock held ([`EventSink`]); never blocks.
pub struct Taps {
    jobs: Mutex<HashMap<JobId, TapList>>,
    projects: Mutex<HashMap<ProjectId, TapList>>,
    /// Events each tap holds at most.
    queue: usize,
    /// Taps dropped because their queue was full.
    overflows: AtomicU64,
}

impl Default for Taps {
    fn default() -> Self {
        Self {
            jobs: Mutex::default(),
            projects: Mutex::default(),
            queue: QUEUE,
            overflows: AtomicU64::new(0),
        }
    }
}

/// Hands `event` to each tap of `list`; drops the taps whose queue is full (they
/// are caught up from history, and counted in `overflows`) or whose stream has
/// gone.
fn offer(list: &mut TapList, event: &Arc<RecordedEvent>, overflows: &AtomicU64) {
    list.retain(|tap| match tap.tx.try_send(event.clone()) {
        Ok(()) => true,
        // Full: the stream is caught up from history once it reads again.
        Err(TrySendError::Full(_)) => {
            overflows.fetch_add(1, Ordering::Relaxed);
            false
        }
        Err(TrySendError::Closed(_)) => false,
    });
}

impl Taps {
    /// Taps whose queues hold `queue` events each (at least one).
    pub fn new(queue: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: queue.max(1),
            ..Self::default()
        })
    }

    /// Times a stream's queue overflowed and the stream went back to history
    /// (a job stream) or to a new snapshot (a project stream).
    pub fn catch_ups(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    fn add<K: std::hash::Hash + Eq + Clone>(
        self: &Arc<Self>,
        map: &Mutex<HashMap<K, TapList>>,
        key: &K,
    ) -> (mpsc::Receiver<Arc<RecordedEvent>>, Weak<Tap>) {
        let (tx, rx) = mpsc::channel(self.queue);
        let tap = Arc::new(Tap { tx });
        map.lock()
            .expect("taps")
            .entry(key.clone())
            .or_default()
            .push(tap.clone());
        (rx, Arc::downgrade(&tap))
    }

    fn remove<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, TapList>>, key: &K, tap: &Weak<Tap>) {
        let mut map = map.lock().expect("taps");
        if let Some(list) = map.get_mut(key) {
            list.retain(|t| !std::ptr::eq(Arc::as_ptr(t), tap.as_ptr()));
            if list.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Open taps (job and project), for tests and `/health`-like reports.
    pub fn open(&self) -> usize {
        let jobs: usize = self.jobs.lock().expect("taps").values().map(Vec::len).sum();
        let projects: usize = self
            .projects
            .lock()
            .expect("taps")
            .values()
            .map(Vec::len)
            .sum();
        jobs + projects
    }

    /// Starts receiving the project events of `project`, live from now.
    pub fn follow_project(self: &Arc<Self>, project: &ProjectId) -> ProjectTap {
        let (rx, tap) = self.add(&self.projects, project);
        ProjectTap {
            rx,
            _guard: Guard {
                taps: Arc::downgrade(self),
                key: Key::Project(project.clone()),
                tap,
            },
        }
    }
}

impl EventSink for Taps {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>) {
        {
            let mut jobs = self.jobs.lock().expect("taps");
            if let Some(list) = jobs.get_mut(&job.id) {
                offer(list, event, &self.overflows);
                if list.is_empty() {
                    jobs.remove(&job.id);
                }
            }
        }
        if crate::wire::project_event_name(event.kind).is_some() {
            let mut projects = self.projects.lock().expect("taps");
            if let Some(list) = projects.get_mut(&job.project_id) {
                offer(list, event, &self.overflows);
                if list.is_empty() {
                    projects.remove(&job.project_id);
                }
            }
        }
    }
}

/// Hands every event to two sinks, in order: the Socket.IO fan-out and the taps.
pub struct Tee(pub Arc<dyn EventSink>, pub Arc<dyn EventSink>);

impl EventSink for Tee {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>) {
        self.0.deliver(job, event);
        self.1.deliver(job, event);
    }

    fn flush_held(&self, id: &JobId) {
        self.0.flush_held(id);
        self.1.flush_held(id);
    }
}

enum Key {
    Job(JobId),
    Project(ProjectId),
}

/// Removes a tap when its stream ends. Holds it weakly: once the taps drop it
/// (its queue overflowed), its channel closes and the stream notices.
struct Guard {
    taps: Weak<Taps>,
    key: Key,
    tap: Weak<Tap>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(taps) = self.taps.upgrade() {
            match &self.key {
                Key::Job(id) => Taps::remove(&taps.jobs, id, &self.tap),
                Key::Project(id) => Taps::remove(&taps.projects, id, &self.tap),
            }
        }
    }
}

/// A project's live events.
pub struct ProjectTap {
    rx: mpsc::Receiver<Arc<RecordedEvent>>,
    _guard: Guard,
}

/// What a [`ProjectTap`] yields.
pub enum ProjectNext {
    Event(Arc<RecordedEvent>),
    /// The queue overflowed: events were lost for this stream; start again from a
    /// snapshot (with a new tap).
    Overflowed,
}

impl ProjectTap {
    pub async fn next(&mut self) -> ProjectNext {
        match self.rx.recv().await {
            Some(event) => ProjectNext::Event(event),
            None => ProjectNext::Overflowed,
        }
    }
}

/// Reads one job's events in order from a position, then (when `live`) follows
/// it until its `job:completed`. See the module docs.
pub struct Follower {
    journal: Arc<Journal>,
    taps: Arc<Taps>,
    id: JobId,
    /// Last seq handed out.
    cursor: u64,
    /// Whether to follow live events; else the follower ends with the history.
    live: bool,
    /// Events read from history, not handed out yet.
    buffer: VecDeque<Arc<RecordedEvent>>,
    tap: Option<(mpsc::Receiver<Arc<RecordedEvent>>, Guard)>,
    done: bool,
    /// Whether some seq after the starting position was missing (history cut).
    gap: bool,
    /// Times the tap overflowed and the follower went back to history.
    pub catch_ups: u64,
    /// Whether the job did not exist when the follower was made: its tap is then
    /// registered while no job can be created ([`Journal::if_not_live`]), so the
    /// job's first event is not missed.
    pending: bool,
}

impl Follower {
    /// Follows job `id` from after seq `since`.
    pub fn new(journal: Arc<Journal>, taps: Arc<Taps>, id: JobId, since: u64, live: bool) -> Self {
        Self {
            journal,
            taps,
            id,
            cursor: since,
            live,
            buffer: VecDeque::new(),
            tap: None,
            done: false,
            gap: false,
            catch_ups: 0,
            pending: false,
        }
    }

    /// Follows job `id`, which does not exist yet (on this node: another node may
    /// be creating it), live from its first event — as `subscribe:job` does for
    /// an unknown job. Waits as long as the stream stays open.
    pub fn pending(journal: Arc<Journal>, taps: Arc<Taps>, id: JobId) -> Self {
        Self {
            pending: true,
            ..Self::new(journal, taps, id, 0, true)
        }
    }

    /// Last seq handed out (or the starting position).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether seqs were missing between handed-out events (a cut history).
    pub fn gap(&self) -> bool {
        self.gap
    }

    /// The next event, or `None` once the job has completed (or, when not live,
    /// once its history is read).
    pub async fn next(&mut self) -> Result<Option<Arc<RecordedEvent>>, StoreError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                if event.seq <= self.cursor {
                    continue;
                }
                return Ok(Some(self.hand_out(event)));
            }
            if self.done {
                return Ok(None);
            }
            if let Some((rx, _)) = &mut self.tap {
                match rx.recv().await {
                    Some(event) => {
                        if event.seq <= self.cursor {
                            continue;
                        }
                        return Ok(Some(self.hand_out(event)));
                    }
                    None => {
                        // Overflowed (or the server is stopping): back to history.
                        self.tap = None;
                        self.catch_ups += 1;
                        continue;
                    }
                }
            }
            self.fill().await?;
        }
    }

    /// The next event if one is ready without waiting (for grouping log runs).
    pub fn ready(&mut self) -> Option<Arc<RecordedEvent>> {
        loop {
            let event = match self.buffer.pop_front() {
                Some(event) => event,
                None => self.tap.as_mut()?.0.try_recv().ok()?,
            };
            if event.seq > self.cursor {
                return Some(self.hand_out(event));
            }
        }
    }

    fn hand_out(&mut self, event: Arc<RecordedEvent>) -> Arc<RecordedEvent> {
        if event.seq != self.cursor + 1 {
            self.gap = true;
        }
        self.cursor = event.seq;
        if event.kind == EventKind::Completed {
            self.done = true;
            self.buffer.clear();
            self.tap = None;
        }
        event
    }

    /// Reads the next events from history, or attaches live under the job's lock.
    async fn fill(&mut self) -> Result<(), StoreError> {
        if std::mem::take(&mut self.pending) {
            let taps = self.taps.clone();
            let attached = self
                .journal
                .if_not_live(&self.id, || taps.add(&taps.jobs, &self.id));
            if let Some((rx, tap)) = attached {
                self.tap = Some((
                    rx,
                    Guard {
                        taps: Arc::downgrade(&self.taps),
                        key: Key::Job(self.id.clone()),
                        tap,
                    },
                ));
                return Ok(());
            }
            // Created meanwhile: attach as to any live job.
        }
        let since = self.cursor;
        if self.live {
            let taps = self.taps.clone();
            let id = self.id.clone();
            let attached =
                self.journal
                    .with_live(&self.id, |view| match view.events_after(since, PAGE) {
                        Ok((events, false)) => {
                            let (rx, tap) = taps.add(&taps.jobs, &id);
                            Some((events, Some((rx, tap))))
                        }
                        Ok((events, true)) => Some((events, None)),
                        Err(_) => None,
                    });
            if let Some(Some((events, tap))) = attached {
                self.buffer.extend(events);
                if let Some((rx, tap)) = tap {
                    self.tap = Some((
                        rx,
                        Guard {
                            taps: Arc::downgrade(&self.taps),
                            key: Key::Job(self.id.clone()),
                            tap,
                        },
                    ));
                } else if self.buffer.is_empty() {
                    self.done = true;
                }
                return Ok(());
            }
        }
        let page = self.journal.events(&self.id, since, PAGE).await?;
        if page.is_empty() {
            let first = self.journal.with_live(&self.id, |view| {
                view.events_after(since, 1).err().or_else(|| {
                    // Seqs after `since` that exist nowhere (not kept for history).
                    (view.record.last_seq > since).then_some(view.record.last_seq + 1)
                })
            });
            match first {
                // Not in memory (finished, all of it read), or nothing left: done.
                None | Some(None) if !self.live => self.done = true,
                None => self.done = true,
                Some(None) => {}
                Some(Some(first)) => {
                    // Nothing readable below `first`: go on from it.
                    self.cursor = self.cursor.max(first - 1);
                    self.gap = true;
                }
            }
            return Ok(());
        }
        for stored in page {
            self.buffer.push_back(Arc::new(recorded(stored)?));
        }
        Ok(())
    }
}

/// A stored event as the journal records it.
pub fn recorded(stored: StoredEvent) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        seq: stored.seq,
        kind: stored.kind,
        line: stored.line,
        json: serde_json::value::RawValue::from_string(stored.payload)
            .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", stored.seq)))?,
    })
}
