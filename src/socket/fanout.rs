//! The fan-out: the one place where recorded job events become Socket.IO emits.
//!
//! Every event goes to the sockets in its job's room; progress and completion also
//! go to the project's room as `project:*`. Nothing is broadcast globally.
//!
//! A socket whose buffer is full never silently misses a line: it is taken out of
//! the job room and caught up from history ([`super::replay`]), then rejoins live.
//! A project subscriber that overflows is disconnected instead (project rooms have
//! no per-socket history); its client reconnects and gets a fresh snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use super::replay::{self, Emit, Start};
use super::{job_room, project_room, session};
use crate::job::{JobId, JobRecord};
use crate::journal::{EventSink, Journal, Recorded};

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
}

/// Delivers recorded events to subscribed sockets.
pub struct Fanout {
    io: SocketIo,
    /// To catch lagging sockets up; weak because the journal owns this fan-out.
    journal: Weak<Journal>,
    stats: Arc<SocketStats>,
}

impl Fanout {
    pub fn new(io: SocketIo, journal: &Arc<Journal>, stats: Arc<SocketStats>) -> Self {
        Self {
            io,
            journal: Arc::downgrade(journal),
            stats,
        }
    }

    /// Switches a socket that missed `event` to catch-up from just before it.
    fn catch_up(&self, socket: SocketRef, job: &JobId, missed: u64) {
        self.stats.lagged.fetch_add(1, Ordering::Relaxed);
        let room = job_room(job);
        socket.leave(room);
        let Some(journal) = self.journal.upgrade() else {
            return;
        };
        let Some(generation) = session(&socket).generation(job) else {
            return;
        };
        tracing::warn!(sid = %socket.id, job_id = %job, seq = missed, "socket buffer full; catching it up from history");
        let job = job.clone();
        tokio::spawn(async move {
            let from = Start::After(missed.saturating_sub(1));
            if let Err(e) = replay::attach(&journal, &socket, &job, from, generation).await {
                tracing::debug!(sid = %socket.id, job_id = %job, error = %e, "catch-up ended");
            }
        });
    }
}

impl EventSink for Fanout {
    fn deliver(&self, job: &JobRecord, event: &Arc<Recorded>) {
        let room = job_room(&job.id);
        for socket in self.io.to(room).sockets() {
            if let Err(Emit::Full) = replay::emit(&socket, event) {
                self.catch_up(socket, &job.id, event.seq());
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
}
