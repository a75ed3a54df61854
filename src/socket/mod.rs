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
//! - [`feed`]: `subscribe:jobs`, the announcement of every new job (`jobs:created`).
//! - [`watchers`]: `watchers:job`, how many clients follow a job.
//! - [`batch`]: the opt-in `job:logs` event (runs of log lines as one array).
//! - [`head`]: copies a Socket.IO request's head out of hyper's read buffer, which
//!   the session would otherwise keep alive.
//! - [`origin`]: refuses Socket.IO requests from origins outside
//!   `WEBSOCKET_CORS_ORIGIN` (cross-site WebSocket hijacking).
//! - [`polls`]: which long-polling clients are polling; releases those that left.
//! - [`close`]: closing every connection at shutdown, after the last events.

pub mod batch;
pub mod close;
pub mod fanout;
pub mod feed;
pub mod head;
pub mod origin;
pub mod polls;
pub mod replay;
pub mod subscriptions;
pub mod watchers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use crate::auth::{ConnectionSlot, Principal};
use crate::config::AuthConfig;
use crate::job::{JobId, ProjectId};
use crate::state::AppState;
use fanout::SocketStats;

/// Client events, as named on the wire.
pub mod client_events {
    pub const SUBSCRIBE_JOB: &str = "subscribe:job";
    pub const UNSUBSCRIBE_JOB: &str = "unsubscribe:job";
    pub const SUBSCRIBE_PROJECT: &str = "subscribe:project";
    pub const UNSUBSCRIBE_PROJECT: &str = "unsubscribe:project";
    pub const SUBSCRIBE_JOBS: &str = "subscribe:jobs";
    pub const UNSUBSCRIBE_JOBS: &str = "unsubscribe:jobs";
    pub const WATCHERS_JOB: &str = "watchers:job";
}

/// The room of a job's subscribers that take one `job:log` per line.
pub fn job_room(id: &JobId) -> String {
    format!("job:{id}")
}

/// The room of a job's subscribers that take log lines in `job:logs` runs (ids may
/// contain `:`, so this prefix must differ from [`job_room`]'s).
pub fn job_batch_room(id: &JobId) -> String {
    format!("logs:{id}")
}

/// Puts `socket` in `room`, telling the fan-out that membership changed. (Every
/// join and leave goes through here or [`leave`].)
pub fn join(socket: &SocketRef, room: String) {
    socket.join(room);
    session(socket).membership_changed();
}

/// Takes `socket` out of `room`, telling the fan-out that membership changed.
pub fn leave(socket: &SocketRef, room: String) {
    socket.leave(room);
    session(socket).membership_changed();
}

/// The room that delivers a subscription's live events.
pub fn room_of(id: &JobId, subscription: Subscription) -> String {
    if subscription.batch {
        job_batch_room(id)
    } else {
        job_room(id)
    }
}

/// One `subscribe:job` of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Distinguishes it from the socket's earlier subscriptions of the same job: a
    /// replay that is no longer the latest stops.
    pub generation: u64,
    /// Log lines as `job:logs` runs instead of one `job:log` each.
    pub batch: bool,
}

/// The room of a project's subscribers.
pub fn project_room(id: &ProjectId) -> String {
    format!("project:{id}")
}

/// Per-socket state, kept in the socket's extensions.
#[derive(Debug)]
pub struct Session {
    /// Who the socket authenticated as.
    pub principal: Principal,
    /// The socket's place in its user's connection count; released on disconnect.
    slot: Mutex<Option<ConnectionSlot>>,
    /// For each job this socket follows, its latest subscription.
    following: Mutex<HashMap<JobId, Subscription>>,
    /// Projects this socket follows.
    projects: Mutex<HashSet<ProjectId>>,
    /// Whether it takes `jobs:created` ([`feed`]).
    feed: AtomicBool,
    /// Source of generations.
    next_generation: AtomicU64,
    /// When the client last sent an event (or connected).
    last_event: Mutex<Instant>,
    /// Start of the current one-second rate window, and events counted in it.
    rate: Mutex<(Instant, u32)>,
    /// Set when the socket disconnects. (socketioxide's own `connected()` is also
    /// false for a moment right after the CONNECT packet goes out, when a client may
    /// already be subscribing.)
    closed: AtomicBool,
    /// `MAX_SUBSCRIPTIONS_PER_SOCKET`.
    max_subscriptions: usize,
    /// `MAX_EVENTS_PER_SECOND`.
    max_events_per_second: u32,
    /// Where room membership changes are counted.
    stats: Arc<SocketStats>,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

/// Why a client event was refused before its handler ran.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("rate limited")]
    RateLimited,
    #[error("too many subscriptions (at most {0} per connection)")]
    TooManySubscriptions(usize),
}

impl Session {
    fn new(
        principal: Principal,
        slot: Option<ConnectionSlot>,
        limits: &AuthConfig,
        stats: Arc<SocketStats>,
    ) -> Self {
        let now = Instant::now();
        Self {
            principal,
            slot: Mutex::new(slot),
            following: Mutex::default(),
            projects: Mutex::default(),
            feed: AtomicBool::new(false),
            next_generation: AtomicU64::new(0),
            last_event: Mutex::new(now),
            rate: Mutex::new((now, 0)),
            closed: AtomicBool::new(false),
            max_subscriptions: limits.max_subscriptions_per_socket,
            max_events_per_second: limits.max_events_per_second,
            stats,
        }
    }

    /// Counts a change of this socket's rooms (see [`SocketStats::membership`]).
    fn membership_changed(&self) {
        self.stats.membership.fetch_add(1, Ordering::Release);
    }

    /// Counts a client event against the rate limit and marks the socket active.
    pub fn admit_event(&self) -> Result<(), Refusal> {
        let now = Instant::now();
        *self.last_event.lock().expect("session") = now;
        let mut rate = self.rate.lock().expect("session");
        if now.duration_since(rate.0) >= Duration::from_secs(1) {
            *rate = (now, 0);
        }
        rate.1 += 1;
        if rate.1 > self.max_events_per_second {
            return Err(Refusal::RateLimited);
        }
        Ok(())
    }

    fn subscriptions(&self) -> usize {
        self.following.lock().expect("session").len()
            + self.projects.lock().expect("session").len()
            + usize::from(self.feed.load(Ordering::Relaxed))
    }

    /// How long the socket has had no subscription and sent nothing, if it has none.
    pub fn idle_for(&self) -> Option<Duration> {
        (self.subscriptions() == 0).then(|| self.last_event.lock().expect("session").elapsed())
    }

    /// Starts a new subscription of `job`, superseding any earlier one.
    pub fn follow(&self, job: &JobId, batch: bool) -> Result<Subscription, Refusal> {
        let subscription = Subscription {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed) + 1,
            batch,
        };
        let mut following = self.following.lock().expect("session");
        if !following.contains_key(job)
            && self.subscriptions_with(&following) >= self.max_subscriptions
        {
            return Err(Refusal::TooManySubscriptions(self.max_subscriptions));
        }
        following.insert(job.clone(), subscription);
        Ok(subscription)
    }

    fn subscriptions_with(&self, following: &HashMap<JobId, Subscription>) -> usize {
        following.len() + self.projects.lock().expect("session").len()
    }

    /// Starts following `project`.
    pub fn follow_project(&self, project: &ProjectId) -> Result<(), Refusal> {
        let following = self.following.lock().expect("session").len();
        let mut projects = self.projects.lock().expect("session");
        if !projects.contains(project) && following + projects.len() >= self.max_subscriptions {
            return Err(Refusal::TooManySubscriptions(self.max_subscriptions));
        }
        projects.insert(project.clone());
        Ok(())
    }

    pub fn unfollow_project(&self, project: &ProjectId) {
        self.projects.lock().expect("session").remove(project);
    }

    /// Starts taking `jobs:created`; counts as one subscription.
    pub fn follow_feed(&self) -> Result<(), Refusal> {
        if !self.feed.load(Ordering::Relaxed) && self.subscriptions() >= self.max_subscriptions {
            return Err(Refusal::TooManySubscriptions(self.max_subscriptions));
        }
        self.feed.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub fn unfollow_feed(&self) {
        self.feed.store(false, Ordering::Relaxed);
    }

    /// Whether `generation` is still the current subscription of `job`.
    pub fn is_current(&self, job: &JobId, generation: u64) -> bool {
        self.following
            .lock()
            .expect("session")
            .get(job)
            .is_some_and(|s| s.generation == generation)
    }

    /// Ends the subscription of `job`.
    pub fn unfollow(&self, job: &JobId) {
        self.following.lock().expect("session").remove(job);
    }

    /// The current subscription of `job`, if any.
    pub fn subscription(&self, job: &JobId) -> Option<Subscription> {
        self.following.lock().expect("session").get(job).copied()
    }

    /// Whether the socket has disconnected.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the socket closed and gives its connection slot back; `true` only
    /// the first time, so that a close seen twice is counted once.
    fn release(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(slot) = self.slot.lock().expect("session").take() {
            slot.release();
        }
        true
    }
}

/// The session of a socket (set up by the connect middleware).
pub fn session(socket: &SocketRef) -> Arc<Session> {
    socket
        .extensions
        .get::<Arc<Session>>()
        .expect("every connected socket has a session")
}

/// Why a connection was refused; the text is what the client's `connect_error` says.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefusal {
    /// Missing, malformed, expired or badly signed token. Existing frontends match
    /// this exact text.
    #[error("Authentication error")]
    Authentication,
    #[error("Too many connections")]
    TooManyConnections,
}

/// Registers the default namespace.
pub fn register(io: &socketioxide::SocketIo) {
    io.ns("/", on_connect.with(prepare_socket));
}

/// Connect middleware: authenticates the client and sets the socket up before the
/// client is told it is connected.
async fn prepare_socket(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<AppState>,
) -> Result<(), ConnectRefusal> {
    use client_events::*;
    let parts = socket.req_parts();
    let token = auth
        .ok()
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| crate::auth::token_from_request(parts.uri.query(), &parts.headers));
    let principal = state.auth.verify(token.as_deref()).map_err(|reason| {
        tracing::info!(sid = %socket.id, %reason, "connection refused: authentication");
        ConnectRefusal::Authentication
    })?;
    let slot = if state.auth.enabled() {
        let slot = state.connections.acquire(&principal.user).ok_or_else(|| {
            tracing::info!(sid = %socket.id, user = %principal.user, "connection refused: too many connections");
            ConnectRefusal::TooManyConnections
        })?;
        Some(slot)
    } else {
        None
    };
    socket.extensions.insert(Arc::new(Session::new(
        principal,
        slot,
        &state.config.auth,
        state.sockets.clone(),
    )));
    socket.on(SUBSCRIBE_JOB, subscriptions::subscribe_job);
    socket.on(UNSUBSCRIBE_JOB, subscriptions::unsubscribe_job);
    socket.on(SUBSCRIBE_PROJECT, subscriptions::subscribe_project);
    socket.on(UNSUBSCRIBE_PROJECT, subscriptions::unsubscribe_project);
    socket.on(SUBSCRIBE_JOBS, feed::subscribe_jobs);
    socket.on(UNSUBSCRIBE_JOBS, feed::unsubscribe_jobs);
    socket.on(WATCHERS_JOB, watchers::watchers);
    socket.on_fallback(subscriptions::unknown_event);
    Ok(())
}

/// Runs once the client is connected. The disconnect handler is registered here,
/// not in the middleware, so that every counted connect has exactly one disconnect.
async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    state.sockets.connected.fetch_add(1, Ordering::Relaxed);
    socket.on_disconnect(on_disconnect);
    let user = session(&socket).principal.user.clone();
    tracing::info!(sid = %socket.id, %user, transport = ?socket.transport_type(), protocol = ?socket.protocol(), "client connected");
    // A client that left before the handler above was registered is never
    // reported to it: count its disconnect here.
    if !socket.connected() {
        closed(&socket, &state, "closed while connecting");
    }
}

async fn on_disconnect(
    socket: SocketRef,
    reason: socketioxide::socket::DisconnectReason,
    State(state): State<AppState>,
) {
    closed(&socket, &state, &reason.to_string());
}

/// The bookkeeping of a socket that closed, done once however often it is seen.
fn closed(socket: &SocketRef, state: &AppState, reason: &str) {
    let session = session(socket);
    if !session.release() {
        return;
    }
    state.sockets.connected.fetch_sub(1, Ordering::Relaxed);
    // socketioxide takes a closed socket out of its rooms.
    session.membership_changed();
    tracing::info!(sid = %socket.id, %reason, "client disconnected");
}

/// Disconnects sockets that have had no subscription and sent no event for
/// `timeout`, checking a few times per timeout, until `stop` is cancelled.
pub async fn sweep_idle(
    io: SocketIo,
    timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for socket in io.sockets() {
            let idle = socket
                .extensions
                .get::<Arc<Session>>()
                .and_then(|s| s.idle_for());
            if idle.is_some_and(|idle| idle >= timeout) {
                tracing::info!(sid = %socket.id, "disconnecting idle client");
                if let Err(e) = socket.clone().disconnect()
                    && !matches!(e, socketioxide::SocketError::Closed)
                {
                    // Its buffer is full: the next round tries again (and a client
                    // that reads nothing is dropped by the heartbeat meanwhile).
                    tracing::warn!(sid = %socket.id, error = %e, "could not disconnect an idle client yet");
                }
            }
        }
    }
}
