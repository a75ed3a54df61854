//! Configuration: every setting buildcast reads from its environment, parsed once
//! at start-up into a typed [`Config`].
//!
//! Values come from the process environment (a `.env` file is loaded into it by
//! `main` through dotenvy). A bad value stops start-up with a [`ConfigError`] that
//! names the variable and the value; nothing else in the crate reads the
//! environment.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderValue, Uri};

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
    /// (`RETENTION_DAYS`, fractions allowed; 0 keeps everything).
    pub retention: Option<Duration>,
    /// How often the retention sweep runs (`RETENTION_INTERVAL_SECS`).
    pub retention_interval: Duration,
    /// Recent events kept in memory per job for replay without the database (`HISTORY_WINDOW`).
    pub history_window: usize,
    /// Bytes of events waiting for the store (a full disk, say) above which further
    /// log lines are delivered live but not kept for history (`MAX_UNSTORED_BYTES`).
    pub max_unstored_bytes: u64,
    /// Largest REST request body in bytes (`REST_BODY_LIMIT`).
    pub rest_body_limit: usize,
    /// How long a stopping server waits for running steps to end after signalling them
    /// (`SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Authentication and per-client limits.
    pub auth: AuthConfig,
    /// `NODE_ID`: this server's name among several sharing Redis; default: a random
    /// id kept in `DATA_DIR/node-id`, so a restarted node keeps its jobs.
    pub node_id: Option<String>,
    /// `REDIS_URL`: when set, nodes share events and history through Redis and
    /// workers may publish to `job:<id>:updates`.
    pub redis_url: Option<String>,
    /// `REDIS_HISTORY_TTL_SECS`: how long a finished job's events stay in Redis
    /// for other nodes to replay.
    pub redis_history_ttl: Duration,
    /// `WORKER_TOKEN`: the bearer token external workers send to
    /// `POST /api/jobs/{id}/events`; unset disables that route.
    pub worker_token: Option<String>,
}

/// Who may connect, and how much each client may do.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_MODE`: `none` (only allowed on loopback unless `AUTH_ALLOW_ANONYMOUS=true`)
    /// or `jwt`.
    pub mode: AuthMode,
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
    /// Exactly these origins (scheme://host[:port]).
    List(Vec<HeaderValue>),
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
        Ok(Self {
            auth: auth_config(&env, host)?,
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
            retention: env.parse_with("RETENTION_DAYS", "30", parse_days)?,
            retention_interval: Duration::from_secs(
                env.positive("RETENTION_INTERVAL_SECS", "3600")?,
            ),
            history_window: env.positive("HISTORY_WINDOW", "2048")?,
            max_unstored_bytes: env.positive("MAX_UNSTORED_BYTES", "67108864")?,
            rest_body_limit: env.positive("REST_BODY_LIMIT", "65536")?,
            shutdown_grace: Duration::from_secs(env.parse(
                "SHUTDOWN_GRACE_SECS",
                "5",
                "a whole number of seconds",
            )?),
        })
    }
}

fn auth_config(env: &Env<'_>, host: IpAddr) -> Result<AuthConfig, ConfigError> {
    let default_mode = if host.is_loopback() { "none" } else { "jwt" };
    let mode_name = env.get("AUTH_MODE").unwrap_or_else(|| default_mode.into());
    let mode = match mode_name.to_ascii_lowercase().as_str() {
        "none" => {
            let anonymous_ok = env.parse_with("AUTH_ALLOW_ANONYMOUS", "false", parse_bool)?;
            if !host.is_loopback() && !anonymous_ok {
                return Err(ConfigError {
                    variable: "AUTH_MODE",
                    value: mode_name,
                    reason: format!(
                        "refusing to run without authentication on HOST={host}, which is reachable from other machines; \
                         set AUTH_MODE=jwt with JWT_SECRET, or AUTH_ALLOW_ANONYMOUS=true to accept that risk"
                    ),
                });
            }
            AuthMode::None
        }
        "jwt" => AuthMode::Jwt(jwt_config(env)?),
        _ => {
            return Err(ConfigError {
                variable: "AUTH_MODE",
                value: mode_name,
                reason: "expected none or jwt".into(),
            });
        }
    };
    Ok(AuthConfig {
        mode,
        max_connections_per_user: env.positive("MAX_CONNECTIONS_PER_USER", "10")?,
        idle_timeout: Duration::from_secs(env.positive("IDLE_TIMEOUT_SECS", "300")?),
        max_subscriptions_per_socket: env.positive("MAX_SUBSCRIPTIONS_PER_SOCKET", "200")?,
        max_events_per_second: env.positive("MAX_EVENTS_PER_SECOND", "50")?,
    })
}

/// Shortest HS256 secret accepted: shorter ones can be brute-forced.
const MIN_SECRET: usize = 32;

fn jwt_config(env: &Env<'_>) -> Result<JwtConfig, ConfigError> {
    let key = match (env.get("JWT_SECRET"), env.get("JWT_PUBLIC_KEY_FILE")) {
        (Some(_), Some(path)) => {
            return Err(ConfigError {
                variable: "JWT_PUBLIC_KEY_FILE",
                value: path,
                reason: "set either JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both".into(),
            });
        }
        (Some(secret), None) if secret.len() < MIN_SECRET => {
            return Err(ConfigError {
                variable: "JWT_SECRET",
                value: "(hidden)".into(),
                reason: format!("must be at least {MIN_SECRET} bytes"),
            });
        }
        (Some(secret), None) => JwtKey::Secret(secret),
        (None, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|e| ConfigError {
                variable: "JWT_PUBLIC_KEY_FILE",
                value: path.clone(),
                reason: format!("cannot read it: {e}"),
            })?;
            JwtKey::PublicKey {
                path: PathBuf::from(path),
                pem,
            }
        }
        (None, None) => {
            return Err(ConfigError {
                variable: "AUTH_MODE",
                value: "jwt".into(),
                reason: "needs JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE (RS256/ES256)".into(),
            });
        }
    };
    Ok(JwtConfig {
        key,
        issuer: env.get("JWT_ISSUER"),
        audience: env.get("JWT_AUDIENCE"),
        leeway_secs: env.parse("JWT_LEEWAY_SECS", "30", "a whole number of seconds")?,
    })
}

/// Looks variables up and turns their values into typed settings.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The variable's value, with an empty value counting as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse_with<T>(
        &self,
        variable: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.get(variable).unwrap_or_else(|| default.to_owned());
        parse(&value).map_err(|reason| ConfigError {
            variable,
            value,
            reason,
        })
    }

    fn parse<T: std::str::FromStr>(
        &self,
        variable: &'static str,
        default: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.parse_with(variable, default, |v| {
            v.parse().map_err(|_| format!("expected {expected}"))
        })
    }

    fn positive<T: std::str::FromStr + Default + PartialEq>(
        &self,
        variable: &'static str,
        default: &str,
    ) -> Result<T, ConfigError> {
        self.parse_with(variable, default, |v| match v.parse::<T>() {
            Ok(n) if n != T::default() => Ok(n),
            _ => Err("expected a whole number above 0".into()),
        })
    }

    fn millis(&self, variable: &'static str, default: &str) -> Result<Duration, ConfigError> {
        self.positive::<u64>(variable, default)
            .map(Duration::from_millis)
    }
}

fn parse_host(value: &str) -> Result<IpAddr, String> {
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    value
        .parse()
        .map_err(|_| "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::1".into())
}

fn parse_days(value: &str) -> Result<Option<Duration>, String> {
    let days: f64 = value
        .parse()
        .map_err(|_| "expected a number of days, such as 30 or 0.5".to_string())?;
    if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
        return Err("expected a number of days from 0 to 36500".into());
    }
    Ok((days > 0.0).then(|| Duration::from_secs_f64(days * 86_400.0)))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_path(value: &str) -> Result<String, String> {
    let valid = value.starts_with('/')
        && value.len() > 1
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
    if valid {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err("expected a URL path such as /ws".into())
    }
}

/// Parses `*`, one origin, or a comma-separated list of origins.
pub fn parse_origins(value: &str) -> Result<CorsOrigins, String> {
    if value == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        origins.push(parse_origin(origin)?);
    }
    if origins.is_empty() {
        return Err("expected *, an origin, or a comma-separated list of origins".into());
    }
    Ok(CorsOrigins::List(origins))
}

fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let bad = || format!("{origin:?} is not an origin like https://app.example.com");
    let uri: Uri = origin.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !origin.ends_with('/');
    if !scheme_ok || uri.host().is_none() || !bare {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        let e = config(&[("PIPELINES_FILE", "/definitely/not/here.toml")]).unwrap_err();
        assert_eq!(e.variable, "PIPELINES_FILE");
    }

    #[test]
    fn anonymous_access_is_refused_off_loopback() {
        let e = config(&[("HOST", "0.0.0.0"), ("AUTH_MODE", "none")]).unwrap_err();
        assert_eq!(e.variable, "AUTH_MODE");
        assert!(e.reason.contains("AUTH_ALLOW_ANONYMOUS"), "{e}");
        let e = config(&[("HOST", "0.0.0.0")]).unwrap_err();
        assert!(e.reason.contains("JWT_SECRET"), "{e}");
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

    #[test]
    fn origins_accept_lists_and_refuse_garbage() {
        let list =
            parse_origins("https://app.example.com, https://admin.example.com:8443").unwrap();
        assert_eq!(
            list,
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.example.com"),
                HeaderValue::from_static("https://admin.example.com:8443"),
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
