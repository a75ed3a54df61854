//! Operations settings: Prometheus metrics (`METRICS_ENABLED`, `METRICS_TOKEN`)
//! and the Socket.IO Admin UI (`ADMIN_UI_USERNAME`, `ADMIN_UI_PASSWORD_HASH`,
//! `ADMIN_UI_READONLY`, `ADMIN_UI_DIR`).

use std::path::PathBuf;
use std::str::FromStr;

use super::ConfigError;
use super::env::{Env, parse_bool};

/// `GET /metrics`.
#[derive(Clone)]
pub struct MetricsConfig {
    /// `METRICS_ENABLED` (default true): record metrics and answer `/metrics`.
    pub enabled: bool,
    /// `METRICS_TOKEN`: when set, `/metrics` wants `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// The Socket.IO Admin UI's `/admin` namespace, on when a username and a
/// password hash are configured.
#[derive(Debug, Clone)]
pub struct AdminUiConfig {
    /// `ADMIN_UI_USERNAME`.
    pub username: String,
    /// `ADMIN_UI_PASSWORD_HASH`: a bcrypt hash (`$2b$12$…`).
    pub password_hash: String,
    /// `ADMIN_UI_READONLY`: offer no operation (join, leave, disconnect, emit).
    pub readonly: bool,
    /// `ADMIN_UI_DIR`: a local copy of the UI (the `ui/dist` folder of the npm
    /// package `@socket.io/admin-ui`), served at `/admin-ui/`.
    pub dir: Option<PathBuf>,
}

pub(super) fn metrics_config(env: &Env<'_>) -> Result<MetricsConfig, ConfigError> {
    Ok(MetricsConfig {
        enabled: env.parse_with("METRICS_ENABLED", "true", parse_bool)?,
        token: match env.get("METRICS_TOKEN") {
            Some(token) if token.len() < 16 => {
                return Err(ConfigError {
                    variable: "METRICS_TOKEN",
                    value: "(hidden)".into(),
                    reason: "must be at least 16 characters".into(),
                });
            }
            token => token,
        },
    })
}

pub(super) fn admin_ui_config(env: &Env<'_>) -> Result<Option<AdminUiConfig>, ConfigError> {
    let readonly = env.parse_with("ADMIN_UI_READONLY", "false", parse_bool)?;
    let dir = env.parse_with("ADMIN_UI_DIR", "", |v| {
        if v.is_empty() {
            return Ok(None);
        }
        let dir = PathBuf::from(v);
        if dir.join("index.html").is_file() {
            Ok(Some(dir))
        } else {
            Err("expected a folder holding the Admin UI's index.html (the ui/dist folder of the npm package @socket.io/admin-ui)".into())
        }
    })?;
    let username = env.get("ADMIN_UI_USERNAME");
    let hash = env.get("ADMIN_UI_PASSWORD_HASH");
    let (username, password_hash) = match (username, hash) {
        (Some(username), Some(hash)) => {
            if bcrypt::HashParts::from_str(&hash).is_err() {
                return Err(ConfigError {
                    variable: "ADMIN_UI_PASSWORD_HASH",
                    value: "(hidden)".into(),
                    reason: "expected a bcrypt hash such as $2b$12$… (htpasswd -bnBC 12 \"\" PASSWORD | tr -d ':\\n')".into(),
                });
            }
            (username, hash)
        }
        (Some(username), None) => {
            return Err(ConfigError {
                variable: "ADMIN_UI_USERNAME",
                value: username,
                reason: "the Admin UI also needs ADMIN_UI_PASSWORD_HASH".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError {
                variable: "ADMIN_UI_PASSWORD_HASH",
                value: "(hidden)".into(),
                reason: "the Admin UI also needs ADMIN_UI_USERNAME".into(),
            });
        }
        (None, None) => {
            if let Some(dir) = dir {
                return Err(ConfigError {
                    variable: "ADMIN_UI_DIR",
                    value: dir.display().to_string(),
                    reason: "the Admin UI is off: set ADMIN_UI_USERNAME and ADMIN_UI_PASSWORD_HASH"
                        .into(),
                });
            }
            return Ok(None);
        }
    };
    Ok(Some(AdminUiConfig {
        username,
        password_hash,
        readonly,
        dir,
    }))
}
