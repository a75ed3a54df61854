//! Configuration: every setting buildcast reads from its environment, parsed once
//! at start-up into a typed [`Config`].
//!
//! Values come from the process environment (a `.env` file is loaded into it by
//! `main` through dotenvy). A bad value stops start-up with a [`ConfigError`] that
//! names the variable and the value; nothing else in the crate reads the
//! environment (logging's `RUST_LOG`, `LOG_FORMAT` and `NO_COLOR` included).
//!
//! [`mod@env`] reads and parses variables; [`auth`] reads `AUTH_MODE` and the JWT
//! settings.

pub mod auth;
pub mod env;
pub mod ops;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use env::parse_origins;
use env::{Env, parse_bool, parse_days, parse_host, parse_path};
pub use ops::{AdminUiConfig, MetricsConfig};

/// Longest `RETENTION_INTERVAL_SECS`: a year.
const MAX_RETENTION_INTERVAL_SECS: u64 = 365 * 86_400;

/// The tracing filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "buildcast=info,tower_http=info";

/// Everything buildcast can be told at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (`HOST`); `localhost` means 127.0.0.1.
    pub host: IpAddr,
    /// TCP port (`PORT`); 0 picks a free one, which tests use.
    pub port: u16,
    /// Size of the kernel's queue of not yet accepted connections (`LISTEN_BACKLOG`).
    /// tokio's default of 128 drops SYNs when a thousand clients connect at once.
    pub listen_backlog: u32,
    /// The Socket.IO endpoint.
    pub websocket: WebsocketConfig,
    /// Origins allowed by CORS, for Socket.IO polling requests and the REST API.
    pub cors: CorsOrigins,
    /// Builds allowed to run at the same time (`MAX_CONCURRENT_JOBS`); the rest queue.
    pub max_concurrent_jobs: usize,
    /// Where pipeline definitions come from (`PIPELINES_FILE`).
    pub pipelines: PipelinesSource,
    /// Directory of the database, workspaces and artifacts (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// Bytes of log kept per job in history (`MAX_LOG_BYTES_PER_JOB`): the head half
    /// and a rolling tail half survive, the middle is dropped.
    pub max_log_bytes_per_job: u64,
    /// Finished jobs older than this are deleted with their logs and artifacts
    /// (`RETENTION_DAYS`, fractions allowed). `None` keeps everything: set by
    /// `RETENTION_DAYS=0` or by `RETENTION_INTERVAL_SECS=0` (no sweep).
    pub retention: Option<Duration>,
    /// How often the retention sweep runs (`RETENTION_INTERVAL_SECS`); only
    /// used when [`Config::retention`] is set.
    pub retention_interval: Duration,
    /// Recent events kept in memory per job for replay without the database (`HISTORY_WINDOW`).
    pub history_window: usize,
    /// Bytes of events waiting for the store (a full disk, say) above which further
    /// log lines are delivered live but not kept for history (`MAX_UNSTORED_BYTES`).
    pub max_unstored_bytes: u64,
    /// Live events one HTTP stream (SSE, followed log, NDJSON) holds for a client
    /// that has not read them yet (`STREAM_QUEUE_EVENTS`); past it the stream goes
    /// back to history and catches up from there.
    pub stream_queue_events: usize,
    /// Largest REST request body in bytes (`REST_BODY_LIMIT`).
    pub rest_body_limit: usize,
    /// `SHUTDOWN_GRACE_SECS`: on stop, once the builds are stopped (each step's
    /// process group gets SIGTERM, then SIGKILL 2 s later, whatever this says),
    /// the longest the server waits for its clients to take their last events
    /// and the close, and for HTTP requests to finish; then it closes what is
    /// left. 0 closes at once.
    pub shutdown_grace: Duration,
    /// Authentication.
    pub auth: AuthConfig,
    /// What the server and each client may hold or do.
    pub limits: ClientLimits,
    /// Logging (`RUST_LOG`, `LOG_FORMAT`, `NO_COLOR`).
    pub log: LogConfig,
    /// `REST_TIMEOUT_SECS`: longest a REST request may take before it is answered
    /// 408 (downloads, the live log and Socket.IO are exempt).
    pub rest_timeout: Duration,
    /// `NODE_ID`: this server's name among several sharing Redis; default: a random
    /// id kept in `DATA_DIR/node-id`, so a restarted node keeps its jobs.
    pub node_id: Option<String>,
    /// `REDIS_URL`: when set, nodes share events and history through Redis and
    /// workers may publish to `job:<id>:updates`.
    pub redis_url: Option<String>,
    /// `REDIS_HISTORY_TTL_SECS`: how long a finished job's events stay in Redis
    /// for other nodes to replay.
    pub redis_history_ttl: Duration,
    /// `REDIS_PUBLISH_QUEUE`: events waiting for Redis kept in memory at most;
    /// past it, a job's events are published from history once Redis is back.
    pub redis_publish_queue: usize,
    /// `WORKER_TOKEN`: the bearer token external workers send to
    /// `POST /api/jobs/{id}/events`; unset disables that route.
    pub worker_token: Option<String>,
    /// The compatibility gateways for the other seed systems' frontends.
    pub compat: CompatConfig,
    /// `/metrics` (`METRICS_ENABLED`, `METRICS_TOKEN`).
    pub metrics: MetricsConfig,
    /// The Socket.IO Admin UI, when `ADMIN_UI_USERNAME` and
    /// `ADMIN_UI_PASSWORD_HASH` are set.
    pub admin_ui: Option<AdminUiConfig>,
}

/// `COMPAT_GATEWAYS` and `COMPAT_GENERATE_PIPELINE`: which compatibility
/// gateways are served (the others' paths answer 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatConfig {
    /// `build`: seed 000's `/ws/build/{id}`, `/build/start`, `/build/download`,
    /// `/ws/active-builds`.
    pub build: bool,
    /// `jobs`: seed 001's `/api/v1/ws/jobs/{id}/updates`.
    pub jobs: bool,
    /// `builds`: seed 003's `/ws/builds/{id}/`.
    pub builds: bool,
    /// `projects`: seed 004's `/api/ws/projects/{id}` and
    /// `POST /api/projects/{id}/generate`.
    pub projects: bool,
    /// `COMPAT_GENERATE_PIPELINE`: the pipeline `POST /api/projects/{id}/generate`
    /// runs when the request names none (checked against the pipelines at start-up).
    pub generate_pipeline: Option<String>,
}

/// Reads `COMPAT_GATEWAYS`: `all`, `none`, or a comma-separated subset of
/// `build,jobs,builds,projects`.
fn parse_gateways(v: &str) -> Result<[bool; 4], String> {
    const NAMES: [&str; 4] = ["build", "jobs", "builds", "projects"];
    match v.trim().to_ascii_lowercase().as_str() {
        "all" => return Ok([true; 4]),
        "none" => return Ok([false; 4]),
        _ => {}
    }
    let mut on = [false; 4];
    for name in v.split(',').map(str::trim) {
        match NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            Some(i) => on[i] = true,
            None => {
                return Err(format!(
                    "expected all, none, or a comma-separated subset of build,jobs,builds,projects (unknown {name:?})"
                ));
            }
        }
    }
    Ok(on)
}

fn compat_config(env: &Env<'_>) -> Result<CompatConfig, ConfigError> {
    let [build, jobs, builds, projects] =
        env.parse_with("COMPAT_GATEWAYS", "all", parse_gateways)?;
    let generate_pipeline = env
        .get("COMPAT_GENERATE_PIPELINE")
        .filter(|v| !v.trim().is_empty());
    Ok(CompatConfig {
        build,
        jobs,
        builds,
        projects,
        generate_pipeline,
    })
}

/// How the server logs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `RUST_LOG`: the tracing filter (default [`DEFAULT_LOG_FILTER`]), checked here.
    pub filter: String,
    /// `LOG_FORMAT=json`: JSON lines instead of human-readable text.
    pub json: bool,
    /// `NO_COLOR` unset: colours allowed on the human-readable output (used only
    /// when the log goes to a terminal).
    pub ansi: bool,
}

fn log_config(env: &Env<'_>) -> Result<LogConfig, ConfigError> {
    let filter = env.parse_with("RUST_LOG", DEFAULT_LOG_FILTER, |v| {
        tracing_subscriber::EnvFilter::try_new(v)
            .map(|_| v.to_owned())
            .map_err(|e| format!("not a tracing filter such as buildcast=debug: {e}"))
    })?;
    let json = env.parse_with("LOG_FORMAT", "text", |v| {
        match v.to_ascii_lowercase().as_str() {
            "json" => Ok(true),
            "text" | "pretty" | "full" => Ok(false),
            _ => Err("expected json or text".into()),
        }
    })?;
    Ok(LogConfig {
        filter,
        json,
        // NO_COLOR disables colour when set at all, even empty (no-color.org).
        ansi: !env.is_set("NO_COLOR"),
    })
}

/// Who may connect.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_MODE`: `none` (only allowed on loopback unless `AUTH_ALLOW_ANONYMOUS=true`)
    /// or `jwt`.
    pub mode: AuthMode,
}

/// How much the server and each client may hold or do.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// `MAX_CONNECTIONS`: Socket.IO connections the server holds at once; the
    /// next is refused with "Too many connections".
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_USER`: concurrent Socket.IO connections of one token `sub`.
    pub max_connections_per_user: usize,
    /// `IDLE_TIMEOUT_SECS`: a socket with no subscription and no client event for
    /// this long is disconnected.
    pub idle_timeout: Duration,
    /// `MAX_SUBSCRIPTIONS_PER_SOCKET`: jobs and projects one socket may follow.
    pub max_subscriptions_per_socket: usize,
    /// `MAX_EVENTS_PER_SECOND`: client events one socket may send per second.
    pub max_events_per_second: u32,
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Everyone is the anonymous admin.
    None,
    /// A JWT is required.
    Jwt(JwtConfig),
}

/// How JWTs are verified.
#[derive(Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    /// `JWT_ISSUER`: required `iss`, when set.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: required `aud`, when set.
    pub audience: Option<String>,
    /// `JWT_LEEWAY_SECS`: clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// The key tokens are checked with.
#[derive(Clone)]
pub enum JwtKey {
    /// `JWT_SECRET`, for HS256.
    Secret(String),
    /// `JWT_PUBLIC_KEY_FILE`: an RSA (RS256) or P-256 (ES256) public key in PEM.
    PublicKey { path: PathBuf, pem: Vec<u8> },
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            JwtKey::Secret(_) => "HS256 secret (hidden)".to_string(),
            JwtKey::PublicKey { path, .. } => format!("public key {}", path.display()),
        };
        f.debug_struct("JwtConfig")
            .field("key", &key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Settings of the Socket.IO endpoint.
#[derive(Debug, Clone)]
pub struct WebsocketConfig {
    /// `WEBSOCKET_ENABLED`: `false` mounts no Socket.IO endpoint at all.
    pub enabled: bool,
    /// `WEBSOCKET_PATH`: the HTTP path clients give as `path` (default `/ws`).
    pub path: String,
    /// `WEBSOCKET_PING_INTERVAL_MS`.
    pub ping_interval: Duration,
    /// `WEBSOCKET_PING_TIMEOUT_MS`.
    pub ping_timeout: Duration,
    /// `WEBSOCKET_MAX_PAYLOAD`: largest HTTP long-polling body, in bytes.
    pub max_payload: u64,
    /// `WEBSOCKET_MAX_BUFFER_SIZE`: packets queued per socket before it counts as lagging.
    /// A lagging socket is never silently skipped: it is caught up from history.
    pub max_buffer_size: usize,
    /// `WEBSOCKET_READ_BUFFER_SIZE`: bytes of read buffer per WebSocket connection
    /// (default 256). Clients send little (subscriptions, pongs), so a small buffer
    /// saves memory on every idle connection; a larger message still arrives whole,
    /// the buffer grows for it, read this many bytes at a time.
    pub ws_read_buffer_size: usize,
    /// `LOG_BATCH_INTERVAL_MS`: longest a log line is held for subscribers that
    /// chose `job:logs` runs (`subscribe:job` with `batch: true`).
    pub log_batch_interval: Duration,
    /// `WEBSOCKET_POLLING_TIMEOUT_MS`: a long-polling client that has not polled
    /// for this long (it went away without closing) is disconnected, which gives
    /// its connection slot back. (A stalled WebSocket is left to the heartbeat.)
    pub polling_timeout: Duration,
}

/// The origins CORS lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin.
    Any,
    /// Exactly these origins (`scheme://host[:port]`).
    List(Vec<String>),
}

/// Where the pipeline definitions are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelinesSource {
    /// `PIPELINES_FILE` was not set: `pipelines.toml` in the working directory if it
    /// exists, else the definitions built into the binary.
    Default(PathBuf),
    /// `PIPELINES_FILE` names this file; it must exist.
    File(PathBuf),
}

/// A setting that could not be used, with the variable and value that caused it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What it was set to.
    pub value: String,
    /// Why it was refused, in words a user can act on.
    pub reason: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which answers a variable's value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let pipelines = match env.get("PIPELINES_FILE") {
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(ConfigError {
                        variable: "PIPELINES_FILE",
                        value: path.display().to_string(),
                        reason: "no such file".into(),
                    });
                }
                PipelinesSource::File(path)
            }
            None => PipelinesSource::Default(PathBuf::from("pipelines.toml")),
        };
        let host = env.parse_with("HOST", "127.0.0.1", parse_host)?;
        // 0: no sweep, so every job is kept (as with RETENTION_DAYS=0).
        let retention_interval = env.parse_with("RETENTION_INTERVAL_SECS", "3600", |v| match v
            .parse::<u64>()
        {
            Ok(secs @ 0..=MAX_RETENTION_INTERVAL_SECS) => Ok(Duration::from_secs(secs)),
            _ => Err(format!(
                "expected a whole number of seconds from 0 (no sweep: every job is kept) \
                     to {MAX_RETENTION_INTERVAL_SECS}"
            )),
        })?;
        Ok(Self {
            compat: compat_config(&env)?,
            auth: auth::auth_config(&env, host)?,
            limits: ClientLimits {
                max_connections: env.positive("MAX_CONNECTIONS", "100000")?,
                max_connections_per_user: env.positive("MAX_CONNECTIONS_PER_USER", "10")?,
                idle_timeout: Duration::from_secs(env.positive("IDLE_TIMEOUT_SECS", "300")?),
                max_subscriptions_per_socket: env
                    .positive("MAX_SUBSCRIPTIONS_PER_SOCKET", "200")?,
                max_events_per_second: env.positive("MAX_EVENTS_PER_SECOND", "50")?,
            },
            log: log_config(&env)?,
            rest_timeout: Duration::from_secs(env.positive("REST_TIMEOUT_SECS", "30")?),
            node_id: env.parse_with("NODE_ID", "", |v| {
                if v.is_empty() {
                    Ok(None)
                } else {
                    crate::job::validate_id(v)
                        .map(|()| Some(v.to_owned()))
                        .map_err(|e| e.to_string())
                }
            })?,
            redis_url: env.parse_with("REDIS_URL", "", |v| {
                if v.is_empty() {
                    Ok(None)
                } else if v.starts_with("redis://")
                    || v.starts_with("rediss://")
                    || v.starts_with("unix://")
                {
                    Ok(Some(v.to_owned()))
                } else {
                    Err("expected a URL such as redis://127.0.0.1:6379".into())
                }
            })?,
            redis_history_ttl: Duration::from_secs(
                env.positive("REDIS_HISTORY_TTL_SECS", "86400")?,
            ),
            redis_publish_queue: env.positive("REDIS_PUBLISH_QUEUE", "16384")?,
            worker_token: match env.get("WORKER_TOKEN") {
                Some(token) if token.len() < 16 => {
                    return Err(ConfigError {
                        variable: "WORKER_TOKEN",
                        value: "(hidden)".into(),
                        reason: "must be at least 16 characters".into(),
                    });
                }
                token => token,
            },
            metrics: ops::metrics_config(&env)?,
            admin_ui: ops::admin_ui_config(&env)?,
            host,
            port: env.parse("PORT", "3001", "a port number from 0 to 65535")?,
            listen_backlog: env.parse("LISTEN_BACKLOG", "1024", "a whole number")?,
            websocket: WebsocketConfig {
                enabled: env.parse_with("WEBSOCKET_ENABLED", "true", parse_bool)?,
                path: env.parse_with("WEBSOCKET_PATH", "/ws", parse_path)?,
                ping_interval: env.millis("WEBSOCKET_PING_INTERVAL_MS", "25000")?,
                ping_timeout: env.millis("WEBSOCKET_PING_TIMEOUT_MS", "20000")?,
                max_payload: env.positive("WEBSOCKET_MAX_PAYLOAD", "1000000")?,
                max_buffer_size: env.positive("WEBSOCKET_MAX_BUFFER_SIZE", "1024")?,
                ws_read_buffer_size: env.positive("WEBSOCKET_READ_BUFFER_SIZE", "256")?,
                log_batch_interval: env.parse_with("LOG_BATCH_INTERVAL_MS", "20", |v| {
                    match v.parse::<u64>() {
                        Ok(ms @ 1..=1000) => Ok(Duration::from_millis(ms)),
                        _ => Err("expected a whole number of milliseconds from 1 to 1000".into()),
                    }
                })?,
                polling_timeout: env.parse_with("WEBSOCKET_POLLING_TIMEOUT_MS", "10000", |v| {
                    match v.parse::<u64>() {
                        Ok(ms @ 100..=600_000) => Ok(Duration::from_millis(ms)),
                        _ => {
                            Err("expected a whole number of milliseconds from 100 to 600000".into())
                        }
                    }
                })?,
            },
            cors: env.parse_with("WEBSOCKET_CORS_ORIGIN", "*", parse_origins)?,
            max_concurrent_jobs: env.positive("MAX_CONCURRENT_JOBS", "2")?,
            pipelines,
            data_dir: PathBuf::from(env.get("DATA_DIR").unwrap_or_else(|| "./data".into())),
            max_log_bytes_per_job: env.positive("MAX_LOG_BYTES_PER_JOB", "67108864")?,
            retention: env
                .parse_with("RETENTION_DAYS", "30", parse_days)?
                .filter(|_| !retention_interval.is_zero()),
            retention_interval,
            history_window: env.positive("HISTORY_WINDOW", "2048")?,
            max_unstored_bytes: env.positive("MAX_UNSTORED_BYTES", "67108864")?,
            stream_queue_events: env.parse_with("STREAM_QUEUE_EVENTS", "1024", |v| match v
                .parse::<usize>()
            {
                Ok(n @ 1..=1_048_576) => Ok(n),
                _ => Err("expected a whole number of events from 1 to 1048576".into()),
            })?,
            rest_body_limit: env.positive("REST_BODY_LIMIT", "65536")?,
            shutdown_grace: Duration::from_secs(env.parse(
                "SHUTDOWN_GRACE_SECS",
                "5",
                "a whole number of seconds",
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 3001);
        assert_eq!(c.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.websocket.path, "/ws");
        assert!(c.websocket.enabled);
        assert_eq!(c.cors, CorsOrigins::Any);
        assert_eq!(c.max_concurrent_jobs, 2);
        assert_eq!(c.websocket.max_buffer_size, 1024);
        assert_eq!(c.websocket.ws_read_buffer_size, 256);
        assert_eq!(c.stream_queue_events, crate::tap::QUEUE);
    }

    #[test]
    fn compat_gateways_are_all_none_or_a_subset() {
        let c = config(&[]).unwrap().compat;
        assert!(c.build && c.jobs && c.builds && c.projects);
        assert_eq!(c.generate_pipeline, None);
        let c = config(&[("COMPAT_GATEWAYS", "none")]).unwrap().compat;
        assert!(!c.build && !c.jobs && !c.builds && !c.projects);
        let c = config(&[
            ("COMPAT_GATEWAYS", "jobs, projects"),
            ("COMPAT_GENERATE_PIPELINE", "demo"),
        ])
        .unwrap()
        .compat;
        assert!(!c.build && c.jobs && !c.builds && c.projects);
        assert_eq!(c.generate_pipeline.as_deref(), Some("demo"));
        let e = config(&[("COMPAT_GATEWAYS", "build,sockets")]).unwrap_err();
        assert_eq!(e.variable, "COMPAT_GATEWAYS");
        assert!(e.to_string().contains("\"sockets\""), "{e}");
    }

    #[test]
    fn errors_name_the_variable_and_value() {
        let e = config(&[("PORT", "abc")]).unwrap_err();
        assert_eq!(e.variable, "PORT");
        assert!(e.to_string().starts_with("invalid PORT=\"abc\""), "{e}");
        let e = config(&[("MAX_CONCURRENT_JOBS", "0")]).unwrap_err();
        assert_eq!(e.variable, "MAX_CONCURRENT_JOBS");
        let e = config(&[("LOG_BATCH_INTERVAL_MS", "5000")]).unwrap_err();
        assert_eq!(e.variable, "LOG_BATCH_INTERVAL_MS");
        assert!(e.reason.contains("1 to 1000"), "{e}");
        let e = config(&[("WEBSOCKET_POLLING_TIMEOUT_MS", "50")]).unwrap_err();
        assert_eq!(e.variable, "WEBSOCKET_POLLING_TIMEOUT_MS");
        assert!(e.reason.contains("100 to 600000"), "{e}");
        for bad in ["0", "-1", "many", "2000000"] {
            let e = config(&[("STREAM_QUEUE_EVENTS", bad)]).unwrap_err();
            assert_eq!(e.variable, "STREAM_QUEUE_EVENTS");
        }
        assert_eq!(
            config(&[("STREAM_QUEUE_EVENTS", "8")])
                .unwrap()
                .stream_queue_events,
            8
        );
        let e = config(&[("PIPELINES_FILE", "/definitely/not/here.toml")]).unwrap_err();
        assert_eq!(e.variable, "PIPELINES_FILE");
    }

    #[test]
    fn retention_zero_keeps_every_job_whichever_variable_says_it() {
        let day = Duration::from_secs(86_400);
        let c = config(&[]).unwrap();
        assert_eq!(c.retention, Some(30 * day));
        assert_eq!(c.retention_interval, Duration::from_secs(3600));
        assert_eq!(config(&[("RETENTION_DAYS", "0")]).unwrap().retention, None);
        // No sweep: nothing is ever deleted, whatever RETENTION_DAYS says.
        let c = config(&[("RETENTION_INTERVAL_SECS", "0"), ("RETENTION_DAYS", "1")]).unwrap();
        assert_eq!(c.retention, None);
        for bad in ["-1", "soon", "1.5", "99999999999"] {
            let e = config(&[("RETENTION_INTERVAL_SECS", bad)]).unwrap_err();
            assert_eq!(e.variable, "RETENTION_INTERVAL_SECS", "{bad}: {e}");
            assert!(e.reason.contains("0 (no sweep"), "{e}");
        }
        // A bad RETENTION_DAYS is reported even when no sweep runs.
        let e = config(&[("RETENTION_INTERVAL_SECS", "0"), ("RETENTION_DAYS", "x")]).unwrap_err();
        assert_eq!(e.variable, "RETENTION_DAYS");
    }

    #[test]
    fn anonymous_access_is_refused_off_loopback() {
        let e = config(&[("HOST", "0.0.0.0"), ("AUTH_MODE", "none")]).unwrap_err();
        assert_eq!(e.variable, "AUTH_MODE");
        assert!(e.reason.contains("AUTH_ALLOW_ANONYMOUS"), "{e}");
        // HOST alone: the error says jwt is the default there, and what it lacks.
        let e = config(&[("HOST", "0.0.0.0")]).unwrap_err();
        assert_eq!(e.variable, "HOST", "{e}");
        assert!(e.to_string().starts_with("invalid HOST=\"0.0.0.0\""), "{e}");
        assert!(e.reason.contains("defaults to jwt"), "{e}");
        assert!(e.reason.contains("JWT_SECRET"), "{e}");
        assert!(e.reason.contains("JWT_PUBLIC_KEY_FILE"), "{e}");
        assert!(e.reason.contains("neither is set"), "{e}");
        // AUTH_MODE=jwt chosen without a key: named as the user wrote it.
        let e = config(&[("AUTH_MODE", "jwt")]).unwrap_err();
        assert_eq!(e.variable, "AUTH_MODE", "{e}");
        assert!(e.reason.contains("JWT_SECRET"), "{e}");
        assert!(!e.reason.contains("defaults"), "{e}");
        // A short secret off loopback is still about the secret.
        let e = config(&[("HOST", "0.0.0.0"), ("JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(e.variable, "JWT_SECRET", "{e}");
        let c = config(&[
            ("HOST", "0.0.0.0"),
            ("AUTH_MODE", "none"),
            ("AUTH_ALLOW_ANONYMOUS", "true"),
        ])
        .unwrap();
        assert!(matches!(c.auth.mode, AuthMode::None));
        let e = config(&[("AUTH_MODE", "jwt"), ("JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(e.variable, "JWT_SECRET");
        assert!(!e.to_string().contains("short"), "secret leaked: {e}");
    }

    /// Every variable the configuration reads, in whichever auth mode.
    fn variables_read() -> std::collections::BTreeSet<String> {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let secret = "a-secret-long-enough-for-hs256-signing";
        for vars in [
            &[][..],
            &[("AUTH_MODE", "jwt"), ("JWT_SECRET", secret)][..],
            &[("AUTH_MODE", "none"), ("HOST", "0.0.0.0")][..],
        ] {
            let vars: HashMap<&str, &str> = vars.iter().copied().collect();
            let _ = Config::from_lookup(|k| {
                read.borrow_mut().insert(k.to_owned());
                vars.get(k).map(|v| (*v).to_owned())
            });
        }
        read.into_inner()
    }

    #[test]
    fn env_example_lists_every_variable_read() {
        // Read at run time, not embedded: the file is no input of the build.
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
            .expect(".env.example beside Cargo.toml");
        let listed: std::collections::BTreeSet<&str> = example
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(name, _)| name))
            .filter(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
            .collect();
        let read = variables_read();
        assert!(
            read.len() > 30,
            "the lookup saw too few variables: {read:?}"
        );
        let missing: Vec<_> = read
            .iter()
            .filter(|v| !listed.contains(v.as_str()))
            .collect();
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    }

    #[test]
    fn origins_accept_lists_and_refuse_garbage() {
        let list =
            parse_origins("https://app.example.com, https://admin.example.com:8443").unwrap();
        assert_eq!(
            list,
            CorsOrigins::List(vec![
                String::from("https://app.example.com"),
                String::from("https://admin.example.com:8443"),
            ])
        );
        for bad in [
            "not a url",
            "app.example.com",
            "ftp://x.org",
            "https://a.com/path",
            ",",
        ] {
            assert!(parse_origins(bad).is_err(), "{bad} should be refused");
        }
    }
}
