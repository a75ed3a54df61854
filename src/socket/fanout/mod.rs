//! The fan-out: the one place where recorded job events become Socket.IO emits.
//!
//! Every event goes to the sockets in its job's room; progress and completion also
//! go to the project's room as `project:*`. Nothing is broadcast globally.
//!
//! The journal hands each event over under the job's lock; the fan-out only
//! decides who gets it and queues it for its [`workers`] (one thread per core, each
//! owning a share of the sockets), which do the emits. Nothing under the job's
//! lock waits for a socket, and one event to thousands of sockets is spread over
//! every core.
//!
//! Subscribers that chose `batch` are in the job's batch room: their log lines are
//! held per job and go out as one `job:logs` run ([`super::batch`]) at most
//! `LOG_BATCH_INTERVAL_MS` later; any other event first sends what is held, so
//! nothing overtakes a line recorded before it.
//!
//! A socket whose buffer is full never silently misses a line: its worker takes it
//! out of its job room and catches it up from history ([`super::replay`]), then it
//! rejoins live. Project subscribers get a backlog instead ([`workers`]).

pub mod workers;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use super::batch::Pending;
use super::{job_batch_room, job_room, project_room, session};
use crate::job::EventKind;
use crate::job::{JobId, JobRecord};
use crate::journal::{EventSink, Journal, RecordedEvent};
use crate::state::SocketStats;
use crate::tasks::Tasks;
pub use workers::MAX_PROJECT_BACKLOG;
use workers::{Member, Work, Workers};

/// Delivers recorded events to subscribed sockets.
pub struct Fanout {
    io: SocketIo,
    /// For the batch timers; weak because the journal owns this fan-out.
    journal: Weak<Journal>,
    stats: Arc<SocketStats>,
    /// Log lines held for each job's batching subscribers.
    pending: Mutex<HashMap<JobId, Pending>>,
    /// `LOG_BATCH_INTERVAL_MS`: how long a line may be held.
    batch_interval: Duration,
    /// Each job room's sockets, split by worker, as of a
    /// [`SocketStats::membership`] version (listing a room from socketioxide for
    /// every line costs a sixth of the fan-out with thousands of subscribers).
    audience: Mutex<HashMap<String, Audience>>,
    /// Where the emits happen.
    workers: Workers,
    /// Where batch timers are spawned.
    tasks: Tasks,
}

/// The sockets of one job room: for each worker, those it emits to.
struct Audience {
    version: u64,
    shares: Arc<[Arc<[Member]>]>,
}

/// The journal's delivery lag limit (items of work the workers may hold before a
/// build is paced) for subscribers' queues of `socket_buffer` packets
/// (`WEBSOCKET_MAX_BUFFER_SIZE`): a quarter of a queue, at most 256 (the default
/// 1,024 gives 256; more measured no better and holds more memory).
///
/// Enough that a fan-out worker finds a burst of a job's events queued together
/// and hands each socket the whole burst at once, so that its writer sends many
/// packets per wake (at saturation, 256 took half the CPU per delivery that 16
/// did); small enough that a burst fills at most a quarter of the queue of a
/// client that reads at full speed, which must keep room for Engine.IO's
/// heartbeat ping, and that a fast build does not outrun every subscriber into
/// catch-up (unbounded, every socket was caught up). The README's Performance
/// section has the figures.
pub fn delivery_lag_limit(socket_buffer: usize) -> usize {
    (socket_buffer / 4).clamp(1, 256)
}

impl Fanout {
    /// Builds the fan-out and starts its workers (within the Tokio runtime).
    pub fn new(
        io: SocketIo,
        journal: &Arc<Journal>,
        stats: Arc<SocketStats>,
        batch_interval: Duration,
        tasks: Tasks,
    ) -> Self {
        Self {
            io,
            journal: Arc::downgrade(journal),
            workers: Workers::start(journal, stats.clone(), tasks.clone()),
            stats,
            pending: Mutex::default(),
            batch_interval,
            audience: Mutex::default(),
            tasks,
        }
    }

    /// Waits until every event handed over so far has been emitted (shutdown,
    /// before the connections close).
    pub async fn drained(&self) {
        self.workers.drained().await;
    }

    /// Ends the workers (shutdown, after [`Fanout::drained`]).
    pub fn stop(&self) {
        self.workers.stop();
    }

    /// The sockets in room `room` of job `job` now, split by worker.
    fn members(&self, room: String, job: &JobId) -> Arc<[Arc<[Member]>]> {
        let version = self.stats.membership.load(Ordering::Acquire);
        if let Some(known) = self.audience.lock().expect("audience").get(&room)
            && known.version == version
        {
            return known.shares.clone();
        }
        let mut shares: Vec<Vec<Member>> = (0..self.workers.count()).map(|_| Vec::new()).collect();
        for socket in self.io.to(room.clone()).sockets() {
            let gate = session(&socket).gate(job);
            shares[self.workers.of(socket.id)].push(Member { socket, gate });
        }
        let shares: Arc<[Arc<[Member]>]> = shares.into_iter().map(Arc::from).collect();
        self.audience.lock().expect("audience").insert(
            room,
            Audience {
                version,
                shares: shares.clone(),
            },
        );
        shares
    }

    /// Forgets the socket lists of a job that ended.
    fn forget(&self, job: &JobId) {
        let mut audience = self.audience.lock().expect("audience");
        audience.remove(&job_room(job));
        audience.remove(&job_batch_room(job));
    }

    /// Queues one event for every socket in job room `room`.
    fn emit_to(&self, room: String, job: &JobId, event: &Arc<RecordedEvent>) {
        for (n, to) in self.members(room, job).iter().enumerate() {
            if to.is_empty() {
                continue;
            }
            self.workers.send(
                n,
                Work::Event {
                    job: job.clone(),
                    event: event.clone(),
                    to: to.clone(),
                },
            );
        }
    }

    /// Queues a project event for `sockets`.
    fn emit_project(
        &self,
        sockets: Vec<SocketRef>,
        name: &'static str,
        event: &Arc<RecordedEvent>,
    ) {
        if sockets.is_empty() {
            return;
        }
        let mut shares: Vec<Vec<SocketRef>> =
            (0..self.workers.count()).map(|_| Vec::new()).collect();
        for socket in sockets {
            shares[self.workers.of(socket.id)].push(socket);
        }
        for (n, to) in shares.into_iter().enumerate() {
            if !to.is_empty() {
                self.workers.send(
                    n,
                    Work::Project {
                        name,
                        event: event.clone(),
                        to,
                    },
                );
            }
        }
    }

    /// Holds a log line for the job's batching subscribers, if it has any.
    fn hold_for_runs(&self, job: &JobId, event: &Arc<RecordedEvent>) {
        let mut pending = self.pending.lock().expect("pending batches");
        if let Some(run) = pending.get_mut(job) {
            if run.push(event.clone()) {
                let run = pending.remove(job).expect("just pushed");
                drop(pending);
                self.send_run(job, run);
            }
            return;
        }
        // The first line of a run: only worth holding if someone takes runs. (A
        // socket joins the batch room only after `flush_held`, under the job's lock.)
        if self
            .members(job_batch_room(job), job)
            .iter()
            .all(|to| to.is_empty())
        {
            return;
        }
        let mut run = Pending::default();
        run.push(event.clone());
        pending.insert(job.clone(), run);
        drop(pending);
        let journal = self.journal.clone();
        let job = job.clone();
        let interval = self.batch_interval;
        self.tasks.spawn_until_stopped(async move {
            tokio::time::sleep(interval).await;
            if let Some(journal) = journal.upgrade() {
                journal.flush_held(&job);
            }
        });
    }

    /// Sends the lines held for `job`, if any.
    fn flush(&self, job: &JobId) {
        let run = self.pending.lock().expect("pending batches").remove(job);
        if let Some(run) = run {
            self.send_run(job, run);
        }
    }

    fn send_run(&self, job: &JobId, run: Pending) {
        if run.events.is_empty() {
            return;
        }
        let run: Arc<[Arc<RecordedEvent>]> = run.events.into();
        for (n, to) in self.members(job_batch_room(job), job).iter().enumerate() {
            if to.is_empty() {
                continue;
            }
            self.workers.send(
                n,
                Work::Run {
                    job: job.clone(),
                    run: run.clone(),
                    to: to.clone(),
                },
            );
        }
    }
}

impl EventSink for Fanout {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>) {
        self.emit_to(job_room(&job.id), &job.id, event);
        if event.kind == EventKind::Log {
            self.hold_for_runs(&job.id, event);
        } else {
            self.flush(&job.id);
            self.emit_to(job_batch_room(&job.id), &job.id, event);
            if event.kind == EventKind::Completed {
                self.forget(&job.id);
            }
        }
        let Some(name) = crate::wire::project_event_name(event.kind) else {
            return;
        };
        self.emit_project(
            self.io.to(project_room(&job.project_id)).sockets(),
            name,
            event,
        );
        if event.seq == 1 {
            let watching = self
                .io
                .to(super::feed::FEED_ROOM)
                .sockets()
                .into_iter()
                .filter(|socket| session(socket).principal.can_see(&job.project_id))
                .collect();
            self.emit_project(watching, super::feed::JOBS_CREATED, event);
        }
    }

    fn flush_held(&self, id: &JobId) {
        self.flush(id);
    }
}
