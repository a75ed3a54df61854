//! The Socket.IO endpoint: every client event handler is registered here, in one
//! place.
//!
//! Handlers are registered in the connect *middleware*, which runs before
//! socketioxide sends the namespace CONNECT acknowledgement. Registering them in
//! the connect handler instead (which runs after) loses the first event of clients
//! that emit `subscribe:job` the moment they see `connect`.
//!
//! - [`mod@session`]: per-socket state (who, what it follows, limits).
//! - [`rooms`]: room names, and joining and leaving them.
//! - [`subscriptions`]: `subscribe:*` / `unsubscribe:*` and their validation.
//! - [`ack`]: [`ack::AckError`] and sending acknowledgements.
//! - [`replay`]: attaching a socket to a job's history, then to its live events.
//! - [`fanout`]: the journal's sink: which socket gets which event, catch-ups.
//! - [`emit`]: every emit of a job or project event, and its outcome.
//! - [`feed`]: `subscribe:jobs`, the announcement of every new job (`jobs:created`).
//! - [`watchers`]: `watchers:job`, how many clients follow a job.
//! - [`batch`]: the opt-in `job:logs` event (runs of log lines as one array).
//! - [`idle`]: disconnecting idle clients.
//! - [`request_head`]: copies a Socket.IO request's head out of hyper's read
//!   buffer, which the session would otherwise keep alive.
//! - [`origin`]: refuses Socket.IO requests from origins outside
//!   `WEBSOCKET_CORS_ORIGIN` (cross-site WebSocket hijacking).
//! - [`polls`]: which long-polling clients are polling; releases those that left.
//! - [`close`]: closing every connection at shutdown, after the last events.

pub mod ack;
pub mod batch;
pub mod close;
pub mod emit;
pub mod fanout;
pub mod feed;
pub mod idle;
pub mod origin;
pub mod polls;
pub mod replay;
pub mod request_head;
pub mod rooms;
pub mod session;
pub mod subscriptions;
pub mod watchers;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use crate::state::AppState;
use crate::wire::client_events;
pub use rooms::{job_batch_room, job_room, join, leave, project_room, room_of};
pub use session::{Refusal, Session, Subscription, session};

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
    let per_user = state.auth.enabled().then_some(principal.user.as_str());
    let slot = state.connections.acquire(per_user).map_err(|limit| {
        tracing::info!(sid = %socket.id, user = %principal.user, %limit, "connection refused: too many connections");
        ConnectRefusal::TooManyConnections
    })?;
    socket.extensions.insert(Arc::new(Session::new(
        principal,
        slot,
        &state.config.limits,
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
async fn on_connect(socket: SocketRef, io: socketioxide::SocketIo, State(state): State<AppState>) {
    state.sockets.connected.fetch_add(1, Ordering::Relaxed);
    socket.on_disconnect(on_disconnect);
    let user = session(&socket).principal.user.clone();
    tracing::info!(sid = %socket.id, %user, transport = ?socket.transport_type(), protocol = ?socket.protocol(), "client connected");
    // A client that left before the handler above was registered is never
    // reported to it: count its disconnect here. (One that left right after the
    // CONNECT packet went out is already out of the namespace, though socketioxide
    // then marks it connected all the same.)
    if !socket.connected() || io.get_socket(socket.id).is_none() {
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
