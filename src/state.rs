//! The application state shared by HTTP handlers and Socket.IO handlers.
//!
//! Built once in [`crate::startup`] and handed to axum with `.with_state` and to
//! socketioxide with `with_state`; every field is cheap to clone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connections::{ConnectionLimiter, GatewayConnections, JobWatchers};
use crate::ingest::Ingestor;
use crate::journal::Journal;
use crate::runner::Runner;
use crate::tasks::Tasks;

#[derive(Clone)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Job state and history: where every event is recorded and read back.
    pub journal: Arc<Journal>,
    /// Starts and cancels builds.
    pub runner: Arc<Runner>,
    /// Records events of builds run by external workers.
    pub ingestor: Arc<Ingestor>,
    /// The link to other nodes through Redis, when `REDIS_URL` is set.
    pub cluster: Option<Arc<Cluster>>,
    /// Verifies tokens (or lets everyone in when `AUTH_MODE=none`).
    pub auth: Arc<Authenticator>,
    /// Open Socket.IO connections, for `MAX_CONNECTIONS` and `MAX_CONNECTIONS_PER_USER`.
    pub connections: Arc<ConnectionLimiter>,
    /// The compatibility gateways' open connections, reported by `/health`.
    pub gateways: Arc<GatewayConnections>,
    /// Gateway connections and HTTP streams watching a job, for `watchers:job`
    /// and `/ws/active-builds`.
    pub watchers: Arc<JobWatchers>,
    /// Socket.IO counters (connected clients, lagging sockets), reported by `/health`.
    pub sockets: Arc<SocketStats>,
    /// The HTTP streams' live events ([`crate::tap`]).
    pub taps: Arc<crate::tap::Taps>,
    /// Searches of a whole log running at once ([`LOG_SCANS`]); more wait their
    /// turn, so that many searches of huge logs cannot take every core.
    pub log_scans: Arc<tokio::sync::Semaphore>,
    /// Every task the server spawns; shutdown waits for them.
    pub tasks: Tasks,
    /// When the server was built, for `uptimeSecs` and `buildcast_uptime_seconds`.
    pub started: std::time::Instant,
    /// Renders `/metrics`; `None` when `METRICS_ENABLED=false`.
    pub metrics: Option<crate::metrics::Exporter>,
    /// What `/ready` checks.
    pub readiness: Arc<crate::readiness::Readiness>,
}

/// How many log searches may scan at once.
pub const LOG_SCANS: usize = 4;

/// Counters of the Socket.IO side, reported by `/health`.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Clients connected right now, over either transport (shared with the cluster
    /// heartbeat).
    pub connected: Arc<AtomicUsize>,
    /// Times a socket's buffer was full and it was switched to catch-up.
    pub lagged: AtomicU64,
    /// Times a project subscriber's buffer was full and its project events were
    /// kept in a backlog for it.
    pub project_catch_ups: AtomicU64,
    /// Project subscribers disconnected because their backlog passed
    /// `socket::fanout::MAX_PROJECT_BACKLOG`.
    pub dropped_project_sockets: AtomicU64,
    /// Bumped whenever a socket joins or leaves a room, or disconnects: the fan-out
    /// keeps each job room's socket list until this changes.
    pub membership: AtomicU64,
    /// The Socket.IO server, once built (for `/metrics` and the Admin UI's feed).
    pub io: std::sync::OnceLock<socketioxide::SocketIo>,
    /// Clients of `/` admitted, and gone, since start (the Admin UI's charts).
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    /// The second (since the epoch) of the Admin UI's `event_sent` reports
    /// counted in `admin_reports`, which caps them per second.
    pub admin_window: AtomicU64,
    pub admin_reports: AtomicU64,
    /// Admin UI sockets connected now: while 0, nothing is reported to `/admin`.
    pub admins: AtomicUsize,
}
