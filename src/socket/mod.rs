//! The Socket.IO endpoint: every client event handler is registered here, in one
//! place.
//!
//! Handlers are registered in the connect *middleware*, which runs before
//! socketioxide sends the namespace CONNECT acknowledgement. Registering them in
//! the connect handler instead (which runs after) loses the first event of clients
//! that emit `subscribe:job` the moment they see `connect`.
//!
//! - [`subscriptions`]: `subscribe:*` / `unsubscribe:*` and their validation.
//! - [`replay`]: attaching a socket to a job's history, then to its live events.
//! - [`fanout`]: the one place recorded events become Socket.IO emits.

pub mod fanout;
pub mod replay;
pub mod subscriptions;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use socketioxide::extract::{SocketRef, State};
use socketioxide::handler::ConnectHandler;

use crate::job::{JobId, ProjectId};
use crate::state::AppState;

/// Client events, as named on the wire.
pub mod client_events {
    pub const SUBSCRIBE_JOB: &str = "subscribe:job";
    pub const UNSUBSCRIBE_JOB: &str = "unsubscribe:job";
    pub const SUBSCRIBE_PROJECT: &str = "subscribe:project";
    pub const UNSUBSCRIBE_PROJECT: &str = "unsubscribe:project";
}

/// The room of a job's subscribers.
pub fn job_room(id: &JobId) -> String {
    format!("job:{id}")
}

/// The room of a project's subscribers.
pub fn project_room(id: &ProjectId) -> String {
    format!("project:{id}")
}

/// Per-socket state, kept in the socket's extensions.
#[derive(Debug, Default)]
pub struct Session {
    /// For each job this socket follows, the generation of its latest
    /// subscription: a replay that is no longer the latest stops.
    following: Mutex<HashMap<JobId, u64>>,
    /// Source of generations.
    next_generation: Mutex<u64>,
}

impl Session {
    /// Starts a new subscription of `job`, superseding any earlier one.
    pub fn follow(&self, job: &JobId) -> u64 {
        let mut next = self.next_generation.lock().expect("session");
        *next += 1;
        self.following
            .lock()
            .expect("session")
            .insert(job.clone(), *next);
        *next
    }

    /// Whether `generation` is still the current subscription of `job`.
    pub fn is_current(&self, job: &JobId, generation: u64) -> bool {
        self.following.lock().expect("session").get(job) == Some(&generation)
    }

    /// Ends the subscription of `job`.
    pub fn unfollow(&self, job: &JobId) {
        self.following.lock().expect("session").remove(job);
    }

    /// The current subscription of `job`, if any.
    pub fn generation(&self, job: &JobId) -> Option<u64> {
        self.following.lock().expect("session").get(job).copied()
    }
}

/// The session of a socket (created on connect).
pub fn session(socket: &SocketRef) -> Arc<Session> {
    socket.extensions.get::<Arc<Session>>().unwrap_or_else(|| {
        let session = Arc::new(Session::default());
        socket.extensions.insert(session.clone());
        session
    })
}

/// Registers the default namespace.
pub fn register(io: &socketioxide::SocketIo) {
    io.ns("/", on_connect.with(prepare_socket));
}

/// Connect middleware: sets the socket up before the client is told it is connected.
async fn prepare_socket(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    use client_events::*;
    socket.extensions.insert(Arc::new(Session::default()));
    socket.on(SUBSCRIBE_JOB, subscriptions::subscribe_job);
    socket.on(UNSUBSCRIBE_JOB, subscriptions::unsubscribe_job);
    socket.on(SUBSCRIBE_PROJECT, subscriptions::subscribe_project);
    socket.on(UNSUBSCRIBE_PROJECT, subscriptions::unsubscribe_project);
    socket.on_fallback(subscriptions::unknown_event);
    Ok(())
}

/// Runs once the client is connected. The disconnect handler is registered here,
/// not in the middleware, so that every counted connect has exactly one disconnect.
async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    state.sockets.connected.fetch_add(1, Ordering::Relaxed);
    socket.on_disconnect(on_disconnect);
    tracing::info!(sid = %socket.id, transport = ?socket.transport_type(), protocol = ?socket.protocol(), "client connected");
}

async fn on_disconnect(
    socket: SocketRef,
    reason: socketioxide::socket::DisconnectReason,
    State(state): State<AppState>,
) {
    state.sockets.connected.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(sid = %socket.id, %reason, "client disconnected");
}
