//! Building and running the server: [`Application::build`] wires every part
//! together and binds the listener; [`Application::run_until_stopped`] serves until
//! the shutdown future completes, then stops in order. Tests use the same `build`
//! with `PORT=0`.
//!
//! Shutdown order: stop the builds (they end `failed`, and subscribers are told)
//! and the background tasks, close the Socket.IO connections once every client has
//! taken what was queued for it (see [`crate::socket::close`]), finish the HTTP
//! server, flush history, stop the writer thread. Closing the connections and
//! finishing HTTP take at most `SHUTDOWN_GRACE_SECS` together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower::util::MapRequestLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::{Config, CorsOrigins};
use crate::connections::ConnectionLimiter;
use crate::ingest::Ingestor;
use crate::journal::Journal;
use crate::runner::Runner;
use crate::runner::pipeline::Pipelines;
use crate::socket::fanout::Fanout;
use crate::socket::origin::OriginGuard;
use crate::socket::polls::Polls;
use crate::state::{AppState, SocketStats};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::store::writer::{BatchWriter, WriterThread};
use crate::tasks::Tasks;

/// How long shutdown waits for the last tasks once they are told to stop, when
/// the grace period has already run out.
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    io: Option<SocketIo>,
    /// The Socket.IO fan-out, drained at shutdown before the connections close.
    fanout: Option<Arc<Fanout>>,
    /// The long-polling clients' polls (see [`crate::socket::polls`]).
    polls: Arc<Polls>,
    writer_thread: WriterThread,
}

impl Application {
    /// Builds every part from `config` and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pipelines = Pipelines::load(&config.pipelines)?;
        if let Some(name) = &config.compat.generate_pipeline
            && pipelines.get(name).is_none()
        {
            let known: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
            return Err(crate::config::ConfigError {
                variable: "COMPAT_GENERATE_PIPELINE",
                value: name.clone(),
                reason: format!("no such pipeline (known: {})", known.join(", ")),
            }
            .into());
        }
        let auth = Arc::new(Authenticator::new(&config.auth.mode)?);
        let connections = ConnectionLimiter::new(
            config.limits.max_connections,
            config.limits.max_connections_per_user,
        );
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&config.data_dir).with_context(|| {
                format!(
                    "cannot open the database in DATA_DIR={}",
                    config.data_dir.display()
                )
            })?);
        let (writer, writer_thread) = BatchWriter::start(store.clone());
        let tasks = Tasks::new();
        let node = match &config.node_id {
            Some(node) => node.clone(),
            None => node_id(&config.data_dir)?,
        };
        let journal = Journal::new(
            store,
            writer,
            node,
            crate::journal::Limits {
                window: config.history_window,
                log_cap: config.max_log_bytes_per_job,
                max_unstored: config.max_unstored_bytes,
                delivery_lag: crate::socket::fanout::delivery_lag_limit(
                    config.websocket.max_buffer_size,
                ),
            },
            tasks.clone(),
        );
        kill_leftover_steps(&config.data_dir);
        let interrupted = journal
            .recover_interrupted()
            .await
            .context("cannot recover interrupted jobs")?;
        if interrupted > 0 {
            tracing::warn!(
                jobs = interrupted,
                "marked jobs interrupted by the last stop as failed"
            );
        }
        let runner = Runner::new(
            journal.clone(),
            Arc::new(pipelines),
            config.max_concurrent_jobs,
            &config.data_dir,
            tasks.clone(),
        );
        let metrics = if config.metrics.enabled {
            crate::metrics::Exporter::install()
        } else {
            None
        };
        let ingestor = Arc::new(Ingestor::new(journal.clone()));
        let cluster = match &config.redis_url {
            Some(url) => Some(
                Cluster::new(
                    url,
                    journal.clone(),
                    ingestor.clone(),
                    runner.clone(),
                    config.redis_history_ttl,
                    config.redis_publish_queue,
                )
                .with_context(|| format!("invalid REDIS_URL={url:?}"))?,
            ),
            None => None,
        };
        let taps = crate::tap::Taps::new(config.stream_queue_events);
        let readiness = crate::readiness::Readiness::new(config.data_dir.clone());
        let state = AppState {
            config: Arc::new(config),
            journal: journal.clone(),
            runner,
            ingestor,
            cluster,
            auth,
            connections,
            gateways: Arc::default(),
            watchers: Arc::default(),
            sockets: Arc::new(SocketStats::default()),
            tasks,
            taps,
            started: std::time::Instant::now(),
            metrics,
            readiness,
            log_scans: Arc::new(tokio::sync::Semaphore::new(crate::state::LOG_SCANS)),
        };
        let config = &state.config;

        let mut router = crate::http::router(&state).with_state(state.clone());
        let polls = Polls::new(&config.websocket.path);
        let mut fanout = None;
        let io = if config.websocket.enabled {
            let (layer, io) = socket_io(&state);
            crate::socket::register(&io, &state);
            if state.sockets.io.set(io.clone()).is_err() {
                tracing::error!("the Socket.IO server was set twice");
            }
            let sockets = Arc::new(Fanout::new(
                io.clone(),
                &journal,
                state.sockets.clone(),
                config.websocket.log_batch_interval,
                state.tasks.clone(),
            ));
            fanout = Some(sockets.clone());
            journal.set_sink(Arc::new(crate::tap::Tee(sockets, state.taps.clone())));
            let path: Arc<str> = config.websocket.path.as_str().into();
            router = router
                .layer(layer)
                .layer(axum::middleware::from_fn_with_state(
                    polls.clone(),
                    crate::socket::polls::track,
                ))
                .layer(MapRequestLayer::new(move |req: Request<Body>| {
                    if crate::socket::request_head::is_socket_io_path(req.uri().path(), &path) {
                        crate::socket::request_head::detach(req)
                    } else {
                        req
                    }
                }));
            if let CorsOrigins::List(allowed) = &config.cors {
                let guard = OriginGuard::new(&config.websocket.path, &header_values(allowed));
                router = router.layer(axum::middleware::from_fn_with_state(
                    guard,
                    crate::socket::origin::check,
                ));
            }
            Some(io)
        } else {
            journal.set_sink(state.taps.clone());
            None
        };
        // The compatibility gateways' routes come first: the Socket.IO layer
        // answers every path under WEBSOCKET_PATH, where seeds 000 and 003 live.
        let origins = match &config.cors {
            CorsOrigins::List(allowed) => header_values(allowed),
            CorsOrigins::Any => Vec::new(),
        };
        let router = crate::compat::router(&state, origins, io.clone())
            .layer(axum::extract::DefaultBodyLimit::max(config.rest_body_limit))
            .with_state(state.clone())
            .fallback_service(router);
        let socket_path: Option<Arc<str>> = config
            .websocket
            .enabled
            .then(|| config.websocket.path.as_str().into());
        let router = router.layer(cors(&config.cors)).layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request<Body>| access_span(req, socket_path.as_deref()))
                .on_request(())
                .on_response(access_log),
        );

        let addr = SocketAddr::new(config.host, config.port);
        let listener = bind(addr, config.listen_backlog).with_context(|| {
            format!("cannot listen on HOST={} PORT={}", config.host, config.port)
        })?;
        Ok(Self {
            listener,
            router,
            state,
            io,
            fanout,
            polls,
            writer_thread,
        })
    }

    /// Every task the server spawns: empty once [`Application::run_until_stopped`]
    /// has returned.
    pub fn tasks(&self) -> crate::tasks::Tasks {
        self.state.tasks.clone()
    }

    /// The port the server listens on (the chosen one when `PORT=0`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves until `shutdown` completes, then stops everything in order.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            io,
            fanout,
            polls,
            writer_thread,
        } = self;
        let addr = listener.local_addr()?;
        let config = &state.config;
        tracing::info!(
            version = %env!("CARGO_PKG_VERSION"),
            url = %format!("http://{addr}"),
            auth = %auth_summary(&config.auth.mode),
            data_dir = %config.data_dir.display(),
            pipelines = %pipelines_summary(&config.pipelines),
            node = %state.journal.node(),
            "buildcast listening on http://{addr}"
        );
        let tasks = state.tasks.clone();
        // The sweeps stop first; the tasks that deliver (catch-ups, batch timers)
        // only once the sockets are closed.
        let background = tasks.stop_token().child_token();
        // The cluster's loops stop before the rest: the builds' last events must
        // be published before the sockets close.
        let cluster_stop = CancellationToken::new();
        let cluster_tasks = tokio_util::task::TaskTracker::new();
        if let Some(cluster) = &state.cluster {
            cluster.start(
                state.sockets.connected.clone(),
                cluster_stop.clone(),
                &tasks,
                &cluster_tasks,
            );
        }
        cluster_tasks.close();
        if let Some(metrics) = state.metrics.clone() {
            tasks.spawn(crate::http::metrics::upkeep(metrics, background.clone()));
        }
        if let Some(keep) = state.config.retention {
            tasks.spawn(crate::retention::run(
                state.journal.clone(),
                state.runner.clone(),
                keep,
                state.config.retention_interval,
                background.clone(),
            ));
        }

        if let Some(io) = &io {
            tasks.spawn(crate::socket::idle::sweep_idle(
                io.clone(),
                state.config.limits.idle_timeout,
                background.clone(),
            ));
            tasks.spawn(crate::socket::polls::sweep_abandoned(
                io.clone(),
                polls.clone(),
                state.config.websocket.polling_timeout,
                background.clone(),
            ));
        }
        let stop_http = CancellationToken::new();
        // The peer address goes into each request (the Admin UI shows it).
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_http.clone().cancelled_owned());
        let mut server = tasks.spawn(server.into_future());
        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                cluster_stop.cancel();
                state.gateways.closing.cancel();
                if !tasks.shutdown(state.config.shutdown_grace).await {
                    tracing::warn!(tasks = tasks.len(), "tasks still running after the grace period");
                }
                return result.context("server task failed")?.context("server failed");
            }
        }
        tracing::info!("shutting down");
        background.cancel();
        state.runner.shutdown().await;
        // The builds' last events are queued: let the cluster publish them.
        cluster_stop.cancel();
        cluster_tasks.wait().await;
        // HTTP keeps serving until the connections are closed: long-polling
        // clients take their last events and the close with their next poll.
        let deadline = tokio::time::Instant::now() + state.config.shutdown_grace;
        if let Some(fanout) = &fanout
            && tokio::time::timeout_at(deadline, fanout.drained())
                .await
                .is_err()
        {
            tracing::warn!("events still queued for emitting when the grace period ended");
        }
        // Gateway connections are closed with 1001 (their last events are sent).
        state.gateways.closing.cancel();
        if let Some(io) = io {
            crate::socket::close::close_all(&io, &polls, deadline).await;
        }
        stop_http.cancel();
        if tokio::time::timeout_at(deadline, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
            server.abort();
        }
        // Nothing is left to deliver: stop what still runs (timers, catch-ups of
        // closed sockets) and wait for every task to be gone.
        if !tasks
            .shutdown(
                TASKS_GRACE.max(deadline.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await
        {
            tracing::warn!(
                tasks = tasks.len(),
                "tasks still running after the grace period"
            );
        }
        if let Some(fanout) = &fanout {
            fanout.stop();
        }
        state.journal.stop_writer();
        tokio::task::spawn_blocking(move || writer_thread.join())
            .await
            .context("history writer did not stop")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Kills the steps a previous run of this data folder left running (it was killed
/// or crashed); see [`crate::runner::groups`].
fn kill_leftover_steps(data_dir: &std::path::Path) {
    match crate::runner::groups::GroupRecords::new(data_dir).kill_leftovers() {
        Ok(killed) => {
            for group in killed {
                tracing::warn!(
                    job_id = %group.job,
                    pgid = group.pgid,
                    processes = group.processes,
                    "killed processes left by the last run"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot check for steps left by the last run"),
    }
}

/// How callers are authenticated, for the start-up line (no secret in it).
fn auth_summary(mode: &crate::config::AuthMode) -> String {
    use crate::config::{AuthMode, JwtKey};
    match mode {
        AuthMode::None => "none".into(),
        AuthMode::Jwt(jwt) => match &jwt.key {
            JwtKey::Secret(_) => "jwt (HS256, JWT_SECRET)".into(),
            JwtKey::PublicKey { path, .. } => format!("jwt (public key {})", path.display()),
        },
    }
}

/// Where the pipelines come from, for the start-up line.
fn pipelines_summary(source: &crate::config::PipelinesSource) -> String {
    use crate::config::PipelinesSource;
    match source {
        PipelinesSource::File(path) => path.display().to_string(),
        PipelinesSource::Default(path) if path.is_file() => path.display().to_string(),
        PipelinesSource::Default(_) => "built-in".into(),
    }
}

/// The span of one HTTP request, carrying its method and path (never the query,
/// which may hold a `token`). At INFO, so that [`access_log`] writes one line per
/// request; at DEBUG for the Socket.IO endpoint, whose long-polling requests
/// come and go every few seconds per client (connections are logged instead).
fn access_span(req: &Request<Body>, socket_path: Option<&str>) -> tracing::Span {
    let path = req.uri().path();
    let method = req.method();
    if socket_path.is_some_and(|p| crate::socket::request_head::is_socket_io_path(path, p))
        && !crate::compat::is_gateway_path(path)
    {
        tracing::debug_span!("request", %method, %path)
    } else {
        tracing::info_span!("request", %method, %path)
    }
}

/// The access log: one line per request, when its response head is ready (a
/// stream's latency is the time to its first byte), at the level of its span.
fn access_log<B>(response: &http::Response<B>, latency: std::time::Duration, span: &tracing::Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let latency_ms = (latency_ms * 10.0).round() / 10.0;
    if span
        .metadata()
        .is_some_and(|m| *m.level() == tracing::Level::INFO)
    {
        tracing::info!(status, latency_ms, "request");
    } else {
        tracing::debug!(status, latency_ms, "request");
    }
}

/// This node's id: kept in `DATA_DIR/node-id`, made on first start.
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if crate::job::validate_id(id).is_ok() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn socket_io(state: &AppState) -> (SocketIoLayer, SocketIo) {
    let ws = &state.config.websocket;
    SocketIo::builder()
        .req_path(ws.path.clone())
        .ping_interval(ws.ping_interval)
        .ping_timeout(ws.ping_timeout)
        .max_payload(ws.max_payload)
        .max_buffer_size(ws.max_buffer_size)
        .ws_read_buffer_size(ws.ws_read_buffer_size)
        .with_state(state.clone())
        .build_layer()
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-requested-with"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-buildcast-epoch"),
            HeaderName::from_static("x-buildcast-last-seq"),
            HeaderName::from_static("x-buildcast-since"),
        ]);
    match origins {
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => layer
            .allow_origin(AllowOrigin::list(header_values(list)))
            .allow_credentials(true),
    }
}

/// The configured origins as header values (the config checked each one).
fn header_values(origins: &[String]) -> Vec<HeaderValue> {
    origins
        .iter()
        .filter_map(|origin| match HeaderValue::from_str(origin) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::error!(%origin, error = %e, "ignoring an origin that is not a header value");
                None
            }
        })
        .collect()
}

/// Binds with a listen backlog large enough for connection bursts.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
