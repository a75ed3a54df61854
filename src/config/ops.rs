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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{Config, ConfigError};

    const HASH: &str = "$2a$04$2iU5kG7uofKuHoD9gpWV4OJutkXy5qf1urtIsMcklZRalUj.C/Aoe";

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn metrics_are_on_by_default_and_the_token_is_checked() {
        let c = config(&[]).unwrap();
        assert!(c.metrics.enabled);
        assert!(c.metrics.token.is_none());
        assert!(
            c.admin_ui.is_none(),
            "the Admin UI is off unless configured"
        );
        let e = config(&[("METRICS_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "METRICS_ENABLED");
        assert!(
            !config(&[("METRICS_ENABLED", "false")])
                .unwrap()
                .metrics
                .enabled
        );
        let e = config(&[("METRICS_TOKEN", "short-token")]).unwrap_err();
        assert_eq!(e.variable, "METRICS_TOKEN");
        assert!(!e.to_string().contains("short-token"), "token leaked: {e}");
        let token = "a-metrics-token-long-enough";
        let c = config(&[("METRICS_TOKEN", token)]).unwrap();
        assert_eq!(c.metrics.token.as_deref(), Some(token));
        assert!(!format!("{c:?}").contains(token), "token in Debug output");
    }

    #[test]
    fn the_admin_ui_needs_a_user_and_a_bcrypt_hash() {
        let e = config(&[("ADMIN_UI_USERNAME", "ops")]).unwrap_err();
        assert_eq!(e.variable, "ADMIN_UI_USERNAME");
        assert!(e.reason.contains("ADMIN_UI_PASSWORD_HASH"), "{e}");
        let e = config(&[("ADMIN_UI_PASSWORD_HASH", HASH)]).unwrap_err();
        assert_eq!(e.variable, "ADMIN_UI_PASSWORD_HASH");
        let e = config(&[
            ("ADMIN_UI_USERNAME", "ops"),
            ("ADMIN_UI_PASSWORD_HASH", "plain-password"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "ADMIN_UI_PASSWORD_HASH");
        assert!(!e.to_string().contains("plain-password"), "{e}");
        let e = config(&[("ADMIN_UI_READONLY", "perhaps")]).unwrap_err();
        assert_eq!(e.variable, "ADMIN_UI_READONLY");
        let admin = config(&[
            ("ADMIN_UI_USERNAME", "ops"),
            ("ADMIN_UI_PASSWORD_HASH", HASH),
            ("ADMIN_UI_READONLY", "true"),
        ])
        .unwrap()
        .admin_ui
        .expect("on");
        assert_eq!(admin.username, "ops");
        assert!(admin.readonly);
        assert!(admin.dir.is_none());
    }

    #[test]
    fn the_admin_ui_folder_must_hold_the_page() {
        let empty = tempfile::tempdir().unwrap();
        let dir = empty.path().to_str().unwrap();
        let on = [
            ("ADMIN_UI_USERNAME", "ops"),
            ("ADMIN_UI_PASSWORD_HASH", HASH),
            ("ADMIN_UI_DIR", dir),
        ];
        let e = config(&on).unwrap_err();
        assert_eq!(e.variable, "ADMIN_UI_DIR");
        assert!(e.reason.contains("index.html"), "{e}");
        std::fs::write(empty.path().join("index.html"), "<html>").unwrap();
        let admin = config(&on).unwrap().admin_ui.expect("on");
        assert_eq!(admin.dir.as_deref(), Some(empty.path()));
        let e = config(&[("ADMIN_UI_DIR", dir)]).unwrap_err();
        assert_eq!(e.variable, "ADMIN_UI_DIR");
        assert!(e.reason.contains("ADMIN_UI_USERNAME"), "{e}");
    }
}
