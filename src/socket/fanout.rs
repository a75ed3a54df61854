//! The fan-out: the one place where recorded job events become Socket.IO emits.
//!
//! Every event goes to the sockets in its job's room; progress and completion also
//! go to the project's room as `project:*`. Nothing is broadcast globally.
//!
//! Subscribers that chose `batch` are in the job's batch room: their log lines are
//! held per job and go out as one `job:logs` run ([`super::batch`]) at most
//! `LOG_BATCH_INTERVAL_MS` later; any other event first sends what is held, so
//! nothing overtakes a line recorded before it.
//!
//! A socket whose buffer is full never silently misses a line: it is taken out of
//! its job room and caught up from history ([`super::replay`]), then rejoins live.
//! A project subscriber that overflows is disconnected instead (project rooms have
//! no per-socket history); its client reconnects and gets a fresh snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use super::batch::Pending;
use super::replay::{self, Emit, Start};
use super::{job_batch_room, job_room, project_room, room_of, session};
use crate::job::{JobId, JobRecord};
use crate::journal::{EventSink, Journal, Recorded};
use crate::wire::EventKind;

/// Counters of the Socket.IO side, reported by `/health`.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Clients connected right now, over either transport (shared with the cluster
    /// heartbeat).
    pub connected: Arc<std::sync::atomic::AtomicUsize>,
    /// Times a socket's buffer was full and it was switched to catch-up.
    pub lagged: AtomicU64,
    /// Project subscribers disconnected because their buffer was full.
    pub dropped_project_sockets: AtomicU64,
    /// Bumped whenever a socket joins or leaves a room, or disconnects: the fan-out
    /// keeps each job room's socket list until this changes.
    pub membership: AtomicU64,
}

/// Delivers recorded events to subscribed sockets.
pub struct Fanout {
    io: SocketIo,
    /// To catch lagging sockets up; weak because the journal owns this fan-out.
    journal: Weak<Journal>,
    stats: Arc<SocketStats>,
    /// Log lines held for each job's batching subscribers.
    pending: Mutex<HashMap<JobId, Pending>>,
    /// `LOG_BATCH_INTERVAL_MS`: how long a line may be held.
    batch_interval: Duration,
    /// Each job room's sockets, as of a [`SocketStats::membership`] version
    /// (listing a room from socketioxide for every line costs a sixth of the
    /// fan-out with thousands of subscribers).
    audience: Mutex<HashMap<String, Audience>>,
}

/// The sockets of one room.
struct Audience {
    version: u64,
    sockets: Arc<[SocketRef]>,
}

impl Fanout {
    pub fn new(
        io: SocketIo,
        journal: &Arc<Journal>,
        stats: Arc<SocketStats>,
        batch_interval: Duration,
    ) -> Self {
        Self {
            io,
            journal: Arc::downgrade(journal),
            stats,
            pending: Mutex::default(),
            batch_interval,
            audience: Mutex::default(),
        }
    }

    /// The sockets in job room `room` now.
    fn members(&self, room: String) -> Arc<[SocketRef]> {
        let version = self.stats.membership.load(Ordering::Acquire);
        if let Some(known) = self.audience.lock().expect("audience").get(&room)
            && known.version == version
        {
            return known.sockets.clone();
        }
        let sockets: Arc<[SocketRef]> = self.io.to(room.clone()).sockets().into();
        self.audience.lock().expect("audience").insert(
            room,
            Audience {
                version,
                sockets: sockets.clone(),
            },
        );
        sockets
    }

    /// Forgets the socket lists of a job that ended.
    fn forget(&self, job: &JobId) {
        let mut audience = self.audience.lock().expect("audience");
        audience.remove(&job_room(job));
        audience.remove(&job_batch_room(job));
    }

    /// Switches a socket that missed the event `missed` to catch-up from just
    /// before it.
    fn catch_up(&self, socket: SocketRef, job: &JobId, missed: u64) {
        self.stats.lagged.fetch_add(1, Ordering::Relaxed);
        let Some(subscription) = session(&socket).subscription(job) else {
            return;
        };
        super::leave(&socket, room_of(job, subscription));
        let Some(journal) = self.journal.upgrade() else {
            return;
        };
        tracing::warn!(sid = %socket.id, job_id = %job, seq = missed, "socket buffer full; catching it up from history");
        let job = job.clone();
        tokio::spawn(async move {
            let from = Start::After(missed.saturating_sub(1));
            if let Err(e) = replay::attach(&journal, &socket, &job, from, subscription).await {
                tracing::debug!(sid = %socket.id, job_id = %job, error = %e, "catch-up ended");
            }
        });
    }

    /// Emits one event to every socket in job room `room`.
    fn emit_to(&self, room: String, job: &JobId, event: &Recorded) {
        for socket in self.members(room).iter() {
            if let Err(Emit::Full) = replay::emit(socket, event) {
                self.catch_up(socket.clone(), job, event.seq());
            }
        }
    }

    /// Holds a log line for the job's batching subscribers, if it has any.
    fn hold(&self, job: &JobId, event: &Arc<Recorded>) {
        let mut pending = self.pending.lock().expect("pending batches");
        if let Some(run) = pending.get_mut(job) {
            if run.push(event.clone()) {
                let run = pending.remove(job).expect("just pushed");
                drop(pending);
                self.send_run(job, &run);
            }
            return;
        }
        // The first line of a run: only worth holding if someone takes runs. (A
        // socket joins the batch room only after `settle`, under the job's lock.)
        if self.members(job_batch_room(job)).is_empty() {
            return;
        }
        let mut run = Pending::default();
        run.push(event.clone());
        pending.insert(job.clone(), run);
        drop(pending);
        let journal = self.journal.clone();
        let job = job.clone();
        let interval = self.batch_interval;
        tokio::spawn(async move {
            tokio::time::sleep(interval).await;
            if let Some(journal) = journal.upgrade() {
                journal.settle(&job);
            }
        });
    }

    /// Sends the lines held for `job`, if any.
    fn flush(&self, job: &JobId) {
        let run = self.pending.lock().expect("pending batches").remove(job);
        if let Some(run) = run {
            self.send_run(job, &run);
        }
    }

    fn send_run(&self, job: &JobId, run: &Pending) {
        let Some(first) = run.events.first() else {
            return;
        };
        for socket in self.members(job_batch_room(job)).iter() {
            if let Err(Emit::Full) = replay::emit_run(socket, &run.events) {
                self.catch_up(socket.clone(), job, first.seq());
            }
        }
    }
}

impl EventSink for Fanout {
    fn deliver(&self, job: &JobRecord, event: &Arc<Recorded>) {
        self.emit_to(job_room(&job.id), &job.id, event);
        if event.kind == EventKind::Log {
            self.hold(&job.id, event);
        } else {
            self.flush(&job.id);
            self.emit_to(job_batch_room(&job.id), &job.id, event);
            if event.kind == EventKind::Completed {
                self.forget(&job.id);
            }
        }
        let Some(name) = event.kind.project_event() else {
            return;
        };
        for socket in self.io.to(project_room(&job.project_id)).sockets() {
            if let Err(e) = socket.emit(name, &*event.json)
                && matches!(
                    e,
                    socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)
                )
            {
                self.stats
                    .dropped_project_sockets
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sid = %socket.id, project_id = %job.project_id, "project subscriber's buffer full; disconnecting it so it resubscribes");
                tokio::spawn(async move {
                    let _ = socket.disconnect();
                });
            }
        }
    }

    fn settle(&self, id: &JobId) {
        self.flush(id);
    }
}
