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
//! - [`admin`]: the Socket.IO Admin UI's `/admin` namespace.
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
pub mod admin;
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

/// Registers the default namespace, and the Admin UI's when it is configured.
pub fn register(io: &socketioxide::SocketIo, state: &AppState) {
    io.ns("/", on_connect.with(prepare_socket));
    if let Some(admin) = &state.config.admin_ui {
        admin::register(io, admin, state);
    }
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
        crate::metrics::auth_refused(crate::metrics::Endpoint::SocketIo, reason.label());
        tracing::info!(sid = %socket.id, %reason, "connection refused: authentication");
        ConnectRefusal::Authentication
    })?;
    let per_user = state.auth.enabled().then_some(principal.user.as_str());
    let slot = state.connections.acquire(per_user).map_err(|limit| {
        crate::metrics::limit_refused(crate::metrics::Endpoint::SocketIo, limit.label());
        tracing::info!(sid = %socket.id, user = %principal.user, %limit, "connection refused: too many connections");
        ConnectRefusal::TooManyConnections
    })?;
    socket.extensions.insert(admin::Issued::now());
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
    crate::metrics::connected(transport_label(&socket), eio_label(&socket));
    state.sockets.connects.fetch_add(1, Ordering::Relaxed);
    admin::socket_connected(&socket, &state.sockets);
    socket.on_disconnect(on_disconnect);
    let user = session(&socket).principal.user.clone();
    tracing::info!(sid = %socket.id, %user, transport = ?socket.transport_type(), protocol = ?socket.protocol(), "client connected");
    // A client that left before the handler above was registered is never
    // reported to it: count its disconnect here. (One that left right after the
    // CONNECT packet went out is already out of the namespace, though socketioxide
    // then marks it connected all the same.)
    if !socket.connected() || io.get_socket(socket.id).is_none() {
        closed(
            &socket,
            &state,
            "closed while connecting",
            "closed_while_connecting",
        );
    }
}

async fn on_disconnect(
    socket: SocketRef,
    reason: socketioxide::socket::DisconnectReason,
    State(state): State<AppState>,
) {
    closed(
        &socket,
        &state,
        &reason.to_string(),
        disconnect_label(reason),
    );
}

/// The transport a socket uses now, as a metrics label.
pub fn transport_label(socket: &SocketRef) -> &'static str {
    match socket.transport_type() {
        socketioxide::TransportType::Polling => "polling",
        socketioxide::TransportType::Websocket => "websocket",
    }
}

/// The Engine.IO version of a socket's client, as a metrics label.
pub fn eio_label(socket: &SocketRef) -> &'static str {
    match socket.protocol() {
        socketioxide::ProtocolVersion::V4 => "3",
        socketioxide::ProtocolVersion::V5 => "4",
    }
}

/// Why a socket went away, as a metrics label.
fn disconnect_label(reason: socketioxide::socket::DisconnectReason) -> &'static str {
    use socketioxide::socket::DisconnectReason::*;
    match reason {
        TransportClose => "transport_close",
        MultipleHttpPollingError => "multiple_polling",
        PacketParsingError => "parse_error",
        TransportError => "transport_error",
        HeartbeatTimeout => "heartbeat_timeout",
        ClientNSDisconnect => "client_disconnect",
        ServerNSDisconnect => "server_disconnect",
        ClosingServer => "server_closing",
    }
}

/// The bookkeeping of a socket that closed, done once however often it is seen.
fn closed(socket: &SocketRef, state: &AppState, reason: &str, label: &'static str) {
    let session = session(socket);
    if !session.release() {
        return;
    }
    crate::metrics::disconnected(label);
    state.sockets.disconnects.fetch_add(1, Ordering::Relaxed);
    admin::socket_disconnected(socket, &state.sockets, reason);
    state.sockets.connected.fetch_sub(1, Ordering::Relaxed);
    // socketioxide takes a closed socket out of its rooms.
    session.membership_changed();
    tracing::info!(sid = %socket.id, %reason, "client disconnected");
}
