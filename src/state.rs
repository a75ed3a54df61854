//! The application state shared by HTTP handlers and Socket.IO handlers.
//!
//! Built once in [`crate::startup`] and handed to axum with `.with_state` and to
//! socketioxide with `with_state`; every field is cheap to clone.

use std::sync::Arc;

use crate::auth::{Authenticator, ConnectionLimiter};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::journal::Journal;
use crate::runner::Runner;
use crate::socket::fanout::SocketStats;

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
    /// Open Socket.IO connections per user, for `MAX_CONNECTIONS_PER_USER`.
    pub connections: Arc<ConnectionLimiter>,
    /// Socket.IO counters (connected clients, lagging sockets), reported by `/health`.
    pub sockets: Arc<SocketStats>,
    /// The HTTP streams' live events ([`crate::tap`]).
    pub taps: Arc<crate::tap::Taps>,
}
