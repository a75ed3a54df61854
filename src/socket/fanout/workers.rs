//! The fan-out's workers: one thread per core, each emitting events to its share
//! of the sockets, so that writing one event to thousands of sockets is not one
//! thread's work.
//!
//! A socket always belongs to the same worker (by its id), and each worker takes
//! its work in the order the fan-out queued it, which is the order events were
//! recorded: every socket gets a job's events in `seq` order. The fan-out only
//! queues (nothing under the job's lock waits for a socket); the workers emit, and
//! switch a socket whose buffer is full to a catch-up from history
//! ([`super::super::replay`]). A socket's [`Gate`] decides which live events it may
//! still take: a worker may hold events for a socket list taken before the socket
//! left for a replay.
//!
//! A project subscriber whose buffer is full gets a backlog of its own: the
//! project events it could not take wait there, in order, and go out as its
//! client reads again. Only a backlog past [`MAX_PROJECT_BACKLOG`] ends the
//! connection, and that ending is retried until it has happened: no socket stays
//! connected without being delivered to.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use socketioxide::SocketError;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::oneshot;

use super::super::admin;
use super::super::batch::LogRun;
use super::super::emit::{Emit, emit_event, emit_project, emit_run};
use super::super::replay::{self, AttachError, Start};
use super::super::session::Gate;
use super::super::{room_of, session};
use crate::job::JobId;
use crate::journal::{DeliveryLag, Journal, RecordedEvent};
use crate::state::SocketStats;
use crate::tasks::Tasks;
use crate::wire::events::JOB_LOGS;

/// Most project events held for one socket whose buffer is full. Past it the
/// client has fallen hopelessly behind: it is disconnected, reconnects and takes a
/// fresh snapshot.
pub const MAX_PROJECT_BACKLOG: usize = 4096;

/// Most items of work a worker takes from its queue at once. The journal's pacing
/// keeps the queues no longer than this for the runner's builds
/// ([`super::delivery_lag_limit`]); external workers and mirrored events are not
/// paced, and are taken in bursts of this size.
const MAX_BURST: usize = 256;

/// A project event waiting for a socket: the event's name and what was recorded.
type ProjectEvent = (&'static str, Arc<RecordedEvent>);

/// A socket of a job's room, with its gate for that job.
pub struct Member {
    pub socket: SocketRef,
    pub gate: Arc<Gate>,
}

/// What the fan-out asks of a worker.
pub enum Work {
    /// One job event, as its `job:*` event, to these sockets.
    Event {
        job: JobId,
        event: Arc<RecordedEvent>,
        to: Arc<[Member]>,
    },
    /// A run of log lines, as one `job:logs`, to these sockets.
    Run {
        job: JobId,
        run: Arc<[Arc<RecordedEvent>]>,
        to: Arc<[Member]>,
    },
    /// A project event (`project:*`, or `jobs:created`) to these sockets.
    Project {
        name: &'static str,
        event: Arc<RecordedEvent>,
        to: Vec<SocketRef>,
    },
    /// Answered once everything queued before it has been emitted.
    Barrier(oneshot::Sender<()>),
    /// Ends the worker.
    Stop,
}

/// What every worker shares: where catch-ups come from and go.
struct Delivery {
    /// To catch lagging sockets up; weak because the journal owns the fan-out.
    journal: Weak<Journal>,
    stats: Arc<SocketStats>,
    /// Project events waiting for sockets whose buffer was full, oldest first.
    /// While a socket has an entry, its new project events queue behind it.
    project_backlogs: Arc<Mutex<HashMap<Sid, VecDeque<ProjectEvent>>>>,
    /// Where catch-ups, backlog drains and disconnects are spawned.
    tasks: Tasks,
}

/// The worker threads and their queues.
pub struct Workers {
    queues: Vec<Sender<Work>>,
    /// Work queued and not yet done, which the journal paces builds by.
    lag: Arc<DeliveryLag>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts one worker per core. Must be called within the Tokio runtime, whose
    /// handle the workers use to spawn catch-ups.
    pub fn start(journal: &Arc<Journal>, stats: Arc<SocketStats>, tasks: Tasks) -> Self {
        let lag = journal.delivery_lag();
        let journal = Arc::downgrade(journal);
        let count = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let delivery = Arc::new(Delivery {
            journal,
            stats,
            project_backlogs: Arc::default(),
            tasks,
        });
        let runtime = tokio::runtime::Handle::current();
        let mut queues = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for n in 0..count {
            let (queue, work) = channel();
            let delivery = delivery.clone();
            let runtime = runtime.clone();
            let lag = lag.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fanout-{n}"))
                .spawn(move || {
                    let _runtime = runtime.enter();
                    delivery.run(&work, &lag);
                })
                .expect("the fan-out worker threads start");
            queues.push(queue);
            threads.push(thread);
        }
        Self {
            queues,
            lag,
            threads: Mutex::new(threads),
        }
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// The worker that emits to socket `sid`.
    pub fn of(&self, sid: Sid) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(sid);
        usize::try_from(hash % self.queues.len() as u64).expect("below the worker count")
    }

    /// Queues `work` for worker `n`.
    pub fn send(&self, n: usize, work: Work) {
        self.lag.queued(1);
        if self.queues[n].send(work).is_err() {
            self.lag.sent(1);
            // Only after `stop`: the server is shutting down and its sockets close.
            tracing::warn!(
                worker = n,
                "fan-out worker already stopped; event not emitted"
            );
        }
    }

    /// Waits until everything queued so far has been emitted.
    pub async fn drained(&self) {
        let mut answers = Vec::with_capacity(self.queues.len());
        for n in 0..self.queues.len() {
            let (done, answer) = oneshot::channel();
            self.send(n, Work::Barrier(done));
            answers.push(answer);
        }
        for answer in answers {
            // An error means the worker ended, so it holds nothing either.
            let _ = answer.await;
        }
    }

    /// Ends the workers once they have emitted what they hold, and waits for
    /// their threads to end (call it after [`Workers::drained`], when they are idle).
    pub fn stop(&self) {
        for n in 0..self.queues.len() {
            self.send(n, Work::Stop);
        }
        for thread in self.threads.lock().expect("fan-out threads").drain(..) {
            if thread.join().is_err() {
                tracing::error!("a fan-out worker had panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for queue in &self.queues {
            // A worker that already stopped has nothing to be told.
            let _ = queue.send(Work::Stop);
        }
    }
}

impl Delivery {
    /// A worker's loop: emits its work, in order, until told to stop.
    ///
    /// It takes what is queued (up to [`MAX_BURST`] items) at once; consecutive
    /// events of one job to the same sockets go out together ([`Delivery::emit_events`]).
    fn run(&self, work: &Receiver<Work>, lag: &DeliveryLag) {
        let mut burst = Vec::with_capacity(MAX_BURST);
        let mut events = Vec::new();
        while let Ok(first) = work.recv() {
            burst.push(first);
            burst.extend(work.try_iter().take(MAX_BURST - 1));
            let mut items = burst.drain(..).peekable();
            while let Some(next) = items.next() {
                let Work::Event { job, event, to } = next else {
                    let go_on = self.handle(next);
                    lag.sent(1);
                    if go_on {
                        continue;
                    }
                    return;
                };
                events.push(event);
                while let Some(Work::Event { event, .. }) = items.next_if(
                    |w| matches!(w, Work::Event { job: j, to: t, .. } if *j == job && Arc::ptr_eq(t, &to)),
                ) {
                    events.push(event);
                }
                self.emit_events(&job, &events, &to);
                lag.sent(events.len());
                events.clear();
            }
        }
    }

    /// Emits consecutive events of one job to the sockets of one room share,
    /// socket by socket: each socket gets the whole run of events in `seq` order,
    /// so its writer wakes once and sends them together. A socket whose buffer
    /// fills is switched to catch-up from the event it missed.
    fn emit_events(&self, job: &JobId, events: &[Arc<RecordedEvent>], to: &[Member]) {
        let started = crate::metrics::timer();
        let mut sent = vec![0; events.len()];
        for member in to {
            for (event, sent) in events.iter().zip(&mut sent) {
                if !member.gate.admits(event.seq()) {
                    continue;
                }
                match emit_event(&member.socket, event) {
                    Ok(()) => *sent += 1,
                    Err(Emit::Full) => {
                        // The catch-up closes the gate: the rest comes from history.
                        self.catch_up(member, job, event.seq());
                        break;
                    }
                    Err(Emit::Closed) => break,
                }
            }
        }
        crate::metrics::fanout_burst(started, events.iter().map(|e| e.kind.name()));
        for (event, sent) in events.iter().zip(sent) {
            let name = crate::wire::job_event_name(event.kind);
            crate::metrics::delivered(name, sent);
            admin::events_sent(
                &self.stats,
                to.iter().map(|m| &m.socket),
                name,
                &*event.json,
            );
        }
    }

    /// Does one piece of work (the loop hands job events to
    /// [`Delivery::emit_events`] in bursts itself); false once told to stop.
    fn handle(&self, next: Work) -> bool {
        match next {
            Work::Event { job, event, to } => self.emit_events(&job, &[event], &to),
            Work::Run { job, run, to } => {
                let (Some(first), Some(last)) = (run.first(), run.last()) else {
                    return true;
                };
                let timer = crate::metrics::FanoutTimer::start(JOB_LOGS);
                let mut sent = 0;
                for member in to.iter() {
                    // A run is flushed before a socket joins its room, so the
                    // gate admits all of it or none.
                    if !member.gate.admits(last.seq()) {
                        continue;
                    }
                    match emit_run(&member.socket, &run) {
                        Ok(()) => sent += 1,
                        Err(Emit::Full) => self.catch_up(member, &job, first.seq()),
                        Err(Emit::Closed) => {}
                    }
                }
                drop(timer);
                crate::metrics::delivered(JOB_LOGS, sent);
                admin::events_sent(
                    &self.stats,
                    to.iter().map(|m| &m.socket),
                    JOB_LOGS,
                    &LogRun(&run),
                );
            }
            Work::Project { name, event, to } => {
                for socket in to {
                    self.deliver_project(socket, name, &event);
                }
            }
            Work::Barrier(done) => {
                // The waiter may have given up (shutdown's deadline).
                let _ = done.send(());
            }
            Work::Stop => return false,
        }
        true
    }

    /// Switches a socket that missed the event `missed` to catch-up from just
    /// before it.
    fn catch_up(&self, member: &Member, job: &JobId, missed: u64) {
        member.gate.close();
        self.stats.lagged.fetch_add(1, Ordering::Relaxed);
        let socket = member.socket.clone();
        let Some(subscription) = session(&socket).subscription(job) else {
            return;
        };
        super::super::leave(&socket, room_of(job, subscription));
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
pub(in crate::socket) async fn disconnect(socket: SocketRef) {
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
