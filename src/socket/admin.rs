//! The server side of the official Socket.IO Admin UI (`@socket.io/admin-ui`) on
//! the `/admin` namespace, on when `ADMIN_UI_USERNAME` and
//! `ADMIN_UI_PASSWORD_HASH` are set.
//!
//! The protocol is the one the package's `instrument()` speaks:
//!
//! - Login: `auth: { username, password }` checked against the bcrypt hash (or
//!   `auth: { sessionId }` from an earlier `session` event, or `auth: { token }`,
//!   a JWT with the `admin` role). A refusal is the connect error
//!   `invalid credentials`, which the UI recognises. No JWT is asked of the UI.
//! - On connect: `session` (after a password login), `config` with the
//!   supported features (no operation in `ADMIN_UI_READONLY` mode), then
//!   `all_sockets`.
//! - Every 2 s: `server_stats` (`serverId, hostname, pid, uptime, clientsCount,
//!   pollingClientsCount, aggregatedEvents, namespaces`).
//! - As they happen: `socket_connected`, `socket_disconnected`, `room_joined`,
//!   `room_left`, `event_received` (client events on `/`), `event_sent` (what
//!   the fan-out sends, at most [`MAX_SENT_REPORTS`] a second). Nothing is
//!   serialized while no admin is connected ([`crate::state::SocketStats::admins`]).
//! - Operations from the UI: `_disconnect(nsp, close, filter)`,
//!   `join(nsp, room, filter)`, `leave(nsp, room, filter)`,
//!   `emit(nsp, filter, event, ...args)`, `filter` being a socket id or a room;
//!   ignored in read-only mode.
//!
//! Handshake headers are shown without `Authorization` and `Cookie`, and the
//! query without `token`: the UI never sees a client's credentials.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::auth::Role;
use crate::config::AdminUiConfig;
use crate::state::{AppState, SocketStats};

/// The namespace the UI connects to.
pub const NAMESPACE: &str = "/admin";
/// How often `server_stats` goes out.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How long a login session id stays valid.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most login sessions kept; the oldest go first.
const MAX_SESSIONS: usize = 1024;
/// Most `event_sent` reports per second (one per socket an event went to): a
/// busy build would otherwise flood the UI's own connection.
const MAX_SENT_REPORTS: u64 = 50;

/// Why an admin connection was refused: the UI matches this exact text.
#[derive(Debug, thiserror::Error)]
#[error("invalid credentials")]
pub struct InvalidCredentials;

/// When a socket connected, in ms since the epoch (the handshake's `issued`).
#[derive(Debug, Clone, Copy)]
pub struct Issued(pub i64);

impl Issued {
    pub fn now() -> Self {
        Self((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// A session id made at a password login, to send once connected.
#[derive(Debug, Clone)]
struct NewSession(String);

/// The Admin UI's logins and settings.
struct Admin {
    config: AdminUiConfig,
    /// Session ids given at login, and when.
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Admin {
    fn features(&self) -> Vec<&'static str> {
        let mut features = if self.config.readonly {
            vec![]
        } else {
            vec![
                "EMIT",
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
            ]
        };
        features.extend(["AGGREGATED_EVENTS", "ALL_EVENTS"]);
        features
    }

    fn known_session(&self, id: &str) -> bool {
        let mut sessions = self.sessions.lock().expect("admin sessions");
        sessions.retain(|_, at| at.elapsed() < SESSION_TTL);
        sessions.contains_key(id)
    }

    fn new_session(&self) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let mut sessions = self.sessions.lock().expect("admin sessions");
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Instant::now());
        id
    }
}

/// Registers `/admin` and starts `server_stats`.
pub fn register(io: &SocketIo, config: &AdminUiConfig, state: &AppState) {
    let admin = Arc::new(Admin {
        config: config.clone(),
        sessions: Mutex::default(),
    });
    let auth = admin.clone();
    let connected = admin.clone();
    io.ns(
        NAMESPACE,
        (move |socket: SocketRef, io: SocketIo, State(state): State<AppState>| {
            on_connect(socket, io, state, connected.clone())
        })
        .with(
            move |socket: SocketRef,
                  TryData(data): TryData<Value>,
                  State(state): State<AppState>| {
                authenticate(socket, data.ok(), state, auth.clone())
            },
        ),
    );
    state.tasks.spawn(server_stats(
        io.clone(),
        state.clone(),
        state.tasks.stop_token().child_token(),
    ));
    tracing::info!(
        readonly = config.readonly,
        "Socket.IO Admin UI enabled on the /admin namespace"
    );
}

async fn authenticate(
    socket: SocketRef,
    auth: Option<Value>,
    state: AppState,
    admin: Arc<Admin>,
) -> Result<(), InvalidCredentials> {
    let field = |name: &str| {
        auth.as_ref()
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(id) = field("sessionId")
        && admin.known_session(&id)
    {
        return Ok(());
    }
    if let Some(token) = field("token")
        && state.auth.enabled()
        && state
            .auth
            .verify(Some(&token))
            .is_ok_and(|p| p.role == Role::Admin)
    {
        return Ok(());
    }
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        let hash = admin.config.password_hash.clone();
        let user_ok: bool = username
            .as_bytes()
            .ct_eq(admin.config.username.as_bytes())
            .into();
        let password_ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if user_ok && password_ok {
            socket.extensions.insert(NewSession(admin.new_session()));
            return Ok(());
        }
    }
    tracing::info!(sid = %socket.id, "admin UI login refused");
    crate::metrics::auth_refused(crate::metrics::Endpoint::AdminUi, "admin_credentials");
    Err(InvalidCredentials)
}

async fn on_connect(socket: SocketRef, io: SocketIo, state: AppState, admin: Arc<Admin>) {
    socket.extensions.insert(Issued::now());
    state.sockets.admins.fetch_add(1, Ordering::Relaxed);
    socket.on_disconnect(async |State(state): State<AppState>| {
        state.sockets.admins.fetch_sub(1, Ordering::Relaxed);
    });
    tracing::info!(sid = %socket.id, "admin UI connected");
    if let Some(NewSession(id)) = socket.extensions.get::<NewSession>() {
        send(&socket, "session", &id);
    }
    send(
        &socket,
        "config",
        &json!({ "supportedFeatures": admin.features() }),
    );
    send(&socket, "all_sockets", &all_sockets(&io));
    if admin.config.readonly {
        return;
    }
    socket.on(
        "_disconnect",
        // The UI's `close` flag (also close the underlying connection) is not
        // honoured: socketioxide's public API cannot close a connection; the
        // socket is disconnected from its namespace.
        |Data((nsp, _close, filter)): Data<(String, Value, Option<String>)>, io: SocketIo| async move {
            for target in targets(&io, &nsp, filter.as_deref()) {
                tracing::info!(sid = %target.id, "disconnected from the admin UI");
                // Retried while the socket's buffer is too full to take it, so a
                // socket the UI disconnected never stays connected.
                super::fanout::workers::disconnect(target).await;
            }
        },
    );
    socket.on(
        "join",
        |Data((nsp, room, filter)): Data<(String, String, Option<String>)>, io: SocketIo| async move {
            for target in targets(&io, &nsp, filter.as_deref()) {
                join(&target, room.clone());
            }
        },
    );
    socket.on(
        "leave",
        |Data((nsp, room, filter)): Data<(String, String, Option<String>)>, io: SocketIo| async move {
            for target in targets(&io, &nsp, filter.as_deref()) {
                leave(&target, room.clone());
            }
        },
    );
    socket.on(
        "emit",
        |Data(args): Data<Vec<Value>>, io: SocketIo| async move {
            let [Value::String(nsp), filter, Value::String(event), rest @ ..] = args.as_slice()
            else {
                return;
            };
            let payload = match rest {
                [one] => one.clone(),
                _ => Value::Array(rest.to_vec()),
            };
            for target in targets(&io, nsp, filter.as_str()) {
                if let Err(e) = target.emit(event.clone(), &payload) {
                    tracing::warn!(error = %e, "admin UI emit failed");
                }
            }
        },
    );
}

/// The sockets an operation names: the one with id `filter`, else those in room
/// `filter`, else (no filter) every socket of the namespace.
fn targets(io: &SocketIo, nsp: &str, filter: Option<&str>) -> Vec<SocketRef> {
    let Some(ns) = io.of(nsp) else {
        return Vec::new();
    };
    let sockets = ns.clone().sockets();
    match filter {
        None | Some("") => sockets,
        Some(filter) => {
            let by_id: Vec<_> = sockets
                .iter()
                .filter(|s| s.id.as_str() == filter)
                .cloned()
                .collect();
            if by_id.is_empty() {
                ns.to(filter.to_owned()).sockets()
            } else {
                by_id
            }
        }
    }
}

/// Joins a room, through [`super::join`] for the default namespace (which counts
/// membership changes for the fan-out).
fn join(socket: &SocketRef, room: String) {
    if socket.ns() == "/" {
        super::join(socket, room);
    } else {
        socket.join(room.clone());
        room_joined(socket, &room);
    }
}

fn leave(socket: &SocketRef, room: String) {
    if socket.ns() == "/" {
        super::leave(socket, room);
    } else {
        socket.leave(room.clone());
        room_left(socket, &room);
    }
}

fn send(socket: &SocketRef, event: &'static str, data: &impl serde::Serialize) {
    if let Err(e) = socket.emit(event, data) {
        tracing::warn!(sid = %socket.id, event, error = %e, "could not send to the admin UI");
    }
}

/// Every socket of every namespace, as the UI shows them.
fn all_sockets(io: &SocketIo) -> Vec<Value> {
    io.nsps()
        .into_iter()
        .flat_map(|ns| ns.sockets())
        .map(|s| serialize(&s))
        .collect()
}

/// A socket as the UI reads it.
fn serialize(socket: &SocketRef) -> Value {
    let parts = socket.req_parts();
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        if name == http::header::AUTHORIZATION || name == http::header::COOKIE {
            continue;
        }
        if let Ok(value) = value.to_str() {
            headers.insert(name.as_str().to_owned(), json!(value));
        }
    }
    let query: serde_json::Map<String, Value> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .filter(|(k, _)| k != "token")
            .map(|(k, v)| (k.into_owned(), json!(v)))
            .collect();
    let issued = socket
        .extensions
        .get::<Issued>()
        .unwrap_or_else(Issued::now)
        .0;
    let address = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        })
        .unwrap_or_default();
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(issued) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let mut rooms = vec![socket.id.to_string()];
    rooms.extend(socket.rooms().into_iter().map(|r| r.to_string()));
    let id = socket.id.to_string();
    json!({
        "id": id,
        "clientId": id.chars().take(12).collect::<String>(),
        "transport": super::transport_label(socket),
        "nsp": socket.ns(),
        "data": {},
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": parts.uri.scheme_str() == Some("https"),
            "time": time,
            "url": parts.uri.to_string().split('?').next().unwrap_or_default(),
            "xdomain": parts.headers.contains_key(http::header::ORIGIN),
        },
        "rooms": rooms,
    })
}

/// Now, as the UI's event timestamps want it.
fn now_iso() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The `/admin` namespace, if an admin UI is connected.
fn watching(stats: &SocketStats) -> Option<socketioxide::operators::BroadcastOperators> {
    if stats.admins.load(Ordering::Relaxed) == 0 {
        return None;
    }
    stats.io.get()?.of(NAMESPACE)
}

/// Sends `event` to every admin socket; a tuple `args` goes as that many
/// arguments.
fn broadcast(
    ns: socketioxide::operators::BroadcastOperators,
    event: &'static str,
    args: &impl serde::Serialize,
) {
    for socket in ns.sockets() {
        if let Err(e) = socket.emit(event, args) {
            tracing::debug!(sid = %socket.id, event, error = %e, "could not report to the admin UI");
        }
    }
}

fn stats_of(socket: &SocketRef) -> Option<Arc<SocketStats>> {
    socket
        .extensions
        .get::<Arc<super::Session>>()
        .map(|s| s.stats().clone())
}

/// Reports a connected client of `/`.
pub fn socket_connected(socket: &SocketRef, stats: &SocketStats) {
    if let Some(ns) = watching(stats) {
        broadcast(ns, "socket_connected", &(serialize(socket), now_iso()));
    }
}

/// Reports a client of `/` gone.
pub fn socket_disconnected(socket: &SocketRef, stats: &SocketStats, reason: &str) {
    if let Some(ns) = watching(stats) {
        broadcast(
            ns,
            "socket_disconnected",
            &("/", socket.id.to_string(), reason, now_iso()),
        );
    }
}

/// Reports a room joined.
pub fn room_joined(socket: &SocketRef, room: &str) {
    if let Some(ns) = stats_of(socket).as_deref().and_then(watching) {
        broadcast(
            ns,
            "room_joined",
            &(socket.ns(), room, socket.id.to_string(), now_iso()),
        );
    }
}

/// Reports a room left.
pub fn room_left(socket: &SocketRef, room: &str) {
    if let Some(ns) = stats_of(socket).as_deref().and_then(watching) {
        broadcast(
            ns,
            "room_left",
            &(socket.ns(), room, socket.id.to_string(), now_iso()),
        );
    }
}

/// Reports an event the fan-out sent to `sockets`, while an admin watches (at
/// most [`MAX_SENT_REPORTS`] a second; the rest are not reported).
pub fn events_sent<'a, T: serde::Serialize + ?Sized>(
    stats: &SocketStats,
    sockets: impl IntoIterator<Item = &'a SocketRef>,
    event: &'static str,
    payload: &T,
) {
    let Some(ns) = watching(stats) else {
        return;
    };
    let second = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    if stats.admin_window.swap(second, Ordering::Relaxed) != second {
        stats.admin_reports.store(0, Ordering::Relaxed);
    }
    let now = now_iso();
    let admins = ns.sockets();
    for socket in sockets {
        if stats.admin_reports.fetch_add(1, Ordering::Relaxed) >= MAX_SENT_REPORTS {
            return;
        }
        let report = ("/", socket.id.to_string(), (event, payload), &now);
        for admin in &admins {
            if let Err(e) = admin.emit("event_sent", &report) {
                tracing::debug!(sid = %admin.id, error = %e, "could not report to the admin UI");
            }
        }
    }
}

/// Reports a client event received on `/`.
pub fn event_received<E>(socket: &SocketRef, event: &str, data: &Result<Value, E>) {
    if let Some(ns) = stats_of(socket).as_deref().and_then(watching) {
        let mut args = vec![json!(event)];
        if let Ok(data) = data {
            args.push(data.clone());
        }
        broadcast(
            ns,
            "event_received",
            &("/", socket.id.to_string(), args, now_iso()),
        );
    }
}

/// Sends `server_stats` to the admin sockets every [`STATS_EVERY`] until `stop`.
async fn server_stats(io: SocketIo, state: AppState, stop: CancellationToken) {
    let hostname = hostname();
    let mut last = (0u64, 0u64);
    loop {
        let connects = state.sockets.connects.load(Ordering::Relaxed);
        let disconnects = state.sockets.disconnects.load(Ordering::Relaxed);
        if let Some(ns) = watching(&state.sockets) {
            let second = (time::OffsetDateTime::now_utc().unix_timestamp() * 1000) as f64;
            let mut aggregated = Vec::new();
            if connects > last.0 {
                aggregated.push(json!({ "timestamp": second, "type": "rawConnection", "count": connects - last.0 }));
            }
            if disconnects > last.1 {
                aggregated.push(json!({ "timestamp": second, "type": "rawDisconnection", "count": disconnects - last.1 }));
            }
            let namespaces: Vec<Value> = io
                .nsps()
                .into_iter()
                .map(|ns| json!({ "name": ns.ns_path().to_owned(), "socketsCount": ns.sockets().len() }))
                .collect();
            let all: Vec<SocketRef> = io.nsps().into_iter().flat_map(|ns| ns.sockets()).collect();
            let polling = all
                .iter()
                .filter(|s| s.transport_type() == socketioxide::TransportType::Polling)
                .count();
            broadcast(
                ns,
                "server_stats",
                &json!({
                    "serverId": format!("{hostname}#{}", state.journal.node()),
                    "hostname": hostname,
                    "pid": std::process::id(),
                    "uptime": state.started.elapsed().as_secs_f64(),
                    "clientsCount": all.len(),
                    "pollingClientsCount": polling,
                    "aggregatedEvents": aggregated,
                    "namespaces": namespaces,
                }),
            );
        }
        last = (connects, disconnects);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(STATS_EVERY) => {}
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "buildcast".into())
}
