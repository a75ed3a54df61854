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
//! A project subscriber whose buffer is full gets a backlog of its own: the
//! project events it could not take wait there, in order, and go out as its
//! client reads again. Only a backlog past [`MAX_PROJECT_BACKLOG`] ends the
//! connection, and that ending is retried until it has happened: no socket stays
//! connected without being delivered to.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SocketError, SocketIo};

use super::batch::Pending;
use super::emit::{Emit, emit_event, emit_project, emit_run};
use super::replay::{self, AttachError, Start};
use super::{job_batch_room, job_room, project_room, room_of, session};
use crate::job::EventKind;
use crate::job::{JobId, JobRecord};
use crate::journal::{EventSink, Journal, RecordedEvent};
use crate::state::SocketStats;
use crate::tasks::Tasks;

/// Most project events held for one socket whose buffer is full. Past it the
/// client has fallen hopelessly behind: it is disconnected, reconnects and takes a
/// fresh snapshot.
pub const MAX_PROJECT_BACKLOG: usize = 4096;

/// A project event waiting for a socket: the event's name and what was recorded.
type ProjectEvent = (&'static str, Arc<RecordedEvent>);

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
    /// Project events waiting for sockets whose buffer was full, oldest first.
    /// While a socket has an entry, its new project events queue behind it.
    project_backlogs: Arc<Mutex<HashMap<Sid, VecDeque<ProjectEvent>>>>,
    /// Where catch-ups, batch timers, backlog drains and disconnects are spawned.
    tasks: Tasks,
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
        tasks: Tasks,
    ) -> Self {
        Self {
            io,
            journal: Arc::downgrade(journal),
            stats,
            pending: Mutex::default(),
            batch_interval,
            audience: Mutex::default(),
            project_backlogs: Arc::default(),
            tasks,
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
        self.tasks.spawn_until_stopped(async move {
            let from = Start::After(missed.saturating_sub(1));
            match replay::attach(&journal, &socket, &job, from, subscription).await {
                Ok(_) => {}
                Err(e @ (AttachError::Closed | AttachError::Superseded)) => {
                    tracing::debug!(sid = %socket.id, job_id = %job, error = %e, "catch-up ended");
                }
                Err(e @ AttachError::Store(_)) => {
                    // Out of the room and not caught up: the only honest thing
                    // left is to end the connection, so the client resumes.
                    tracing::error!(sid = %socket.id, job_id = %job, error = %e, "catch-up failed; disconnecting the client so it resumes");
                    disconnect(socket).await;
                }
            }
        });
    }

    /// Emits one event to every socket in job room `room`.
    fn emit_to(&self, room: String, job: &JobId, event: &RecordedEvent) {
        let mut sent = 0;
        let members = self.members(room);
        for socket in members.iter() {
            match emit_event(socket, event) {
                Ok(()) => sent += 1,
                Err(Emit::Full) => self.catch_up(socket.clone(), job, event.seq()),
                Err(Emit::Closed) => {}
            }
        }
        let name = crate::wire::job_event_name(event.kind);
        crate::metrics::delivered(name, sent);
        super::admin::events_sent(&self.stats, &members, name, &*event.json);
    }

    /// Holds a log line for the job's batching subscribers, if it has any.
    fn hold_for_runs(&self, job: &JobId, event: &Arc<RecordedEvent>) {
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
        // socket joins the batch room only after `flush_held`, under the job's lock.)
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
            self.send_run(job, &run);
        }
    }

    fn send_run(&self, job: &JobId, run: &Pending) {
        let Some(first) = run.events.first() else {
            return;
        };
        let mut sent = 0;
        let members = self.members(job_batch_room(job));
        for socket in members.iter() {
            match emit_run(socket, &run.events) {
                Ok(()) => sent += 1,
                Err(Emit::Full) => self.catch_up(socket.clone(), job, first.seq()),
                Err(Emit::Closed) => {}
            }
        }
        crate::metrics::delivered(crate::wire::events::JOB_LOGS, sent);
        super::admin::events_sent(
            &self.stats,
            &members,
            crate::wire::events::JOB_LOGS,
            &super::batch::LogRun(&run.events),
        );
    }
}

impl Fanout {
    /// Emits a project event to one socket, or queues it behind the socket's
    /// backlog.
    fn deliver_project(&self, socket: SocketRef, name: &'static str, event: &Arc<RecordedEvent>) {
        let mut backlogs = self.project_backlogs.lock().expect("project backlogs");
        if let Some(backlog) = backlogs.get_mut(&socket.id) {
            if backlog.len() < MAX_PROJECT_BACKLOG {
                backlog.push_back((name, event.clone()));
                return;
            }
            backlogs.remove(&socket.id);
            drop(backlogs);
            self.stats
                .dropped_project_sockets
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sid = %socket.id, "project subscriber fell {MAX_PROJECT_BACKLOG} events behind; disconnecting it so it resubscribes");
            self.tasks.spawn_until_stopped(disconnect(socket));
            return;
        }
        match emit_project(&socket, name, event) {
            Ok(()) => crate::metrics::delivered(name, 1),
            Err(Emit::Closed) => {}
            Err(Emit::Full) => {
                self.stats.project_catch_ups.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sid = %socket.id, "project subscriber's buffer full; keeping its project events until it reads");
                backlogs.insert(socket.id, VecDeque::from([(name, event.clone())]));
                self.tasks.spawn_until_stopped(drain_project_backlog(
                    self.project_backlogs.clone(),
                    socket,
                ));
            }
        }
    }
}

/// Sends a socket's waiting project events, in order, as its client reads them;
/// ends when they are all sent or the socket has closed.
async fn drain_project_backlog(
    backlogs: Arc<Mutex<HashMap<Sid, VecDeque<ProjectEvent>>>>,
    socket: SocketRef,
) {
    let mut stalled = 0;
    loop {
        tokio::time::sleep(replay::pause_after(stalled)).await;
        let mut all = backlogs.lock().expect("project backlogs");
        if session(&socket).is_closed() {
            all.remove(&socket.id);
            return;
        }
        let Some(backlog) = all.get_mut(&socket.id) else {
            // Dropped for growing too long: the socket is being disconnected.
            return;
        };
        let before = backlog.len();
        while let Some((name, event)) = backlog.front() {
            match emit_project(&socket, name, event) {
                Ok(()) => {
                    backlog.pop_front();
                }
                Err(Emit::Full) => break,
                Err(Emit::Closed) => {
                    all.remove(&socket.id);
                    return;
                }
            }
        }
        if backlog.is_empty() {
            all.remove(&socket.id);
            return;
        }
        stalled = if backlog.len() == before {
            stalled + 1
        } else {
            0
        };
    }
}

/// Disconnects a socket, retrying while its buffer is too full to take the
/// DISCONNECT packet, until it is gone. (socketioxide's `disconnect` fails on a
/// full buffer and leaves the socket connected; a client that never reads again is
/// dropped by the Engine.IO heartbeat meanwhile.)
pub(super) async fn disconnect(socket: SocketRef) {
    let mut stalled = 0;
    loop {
        match socket.clone().disconnect() {
            Ok(()) => return,
            Err(SocketError::Closed) => return,
            Err(SocketError::InternalChannelFull) => {
                if session(&socket).is_closed() {
                    return;
                }
                tokio::time::sleep(replay::pause_after(stalled)).await;
                stalled += 1;
            }
        }
    }
}

impl EventSink for Fanout {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>) {
        let _timer = crate::metrics::FanoutTimer::start(event.kind.name());
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
        for socket in self.io.to(project_room(&job.project_id)).sockets() {
            self.deliver_project(socket, name, event);
        }
        if event.seq == 1 {
            for socket in self.io.to(super::feed::FEED_ROOM).sockets() {
                if session(&socket).principal.can_see(&job.project_id) {
                    self.deliver_project(socket, super::feed::JOBS_CREATED, event);
                }
            }
        }
    }

    fn flush_held(&self, id: &JobId) {
        self.flush(id);
    }
}
