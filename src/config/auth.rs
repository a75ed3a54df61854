//! `AUTH_MODE` and the JWT settings.

use std::net::IpAddr;
use std::path::PathBuf;

use super::env::{Env, parse_bool};
use super::{AuthConfig, AuthMode, ConfigError, JwtConfig, JwtKey};

pub(super) fn auth_config(env: &Env<'_>, host: IpAddr) -> Result<AuthConfig, ConfigError> {
    let default_mode = if host.is_loopback() { "none" } else { "jwt" };
    let chosen = env.get("AUTH_MODE");
    let defaulted = chosen.is_none();
    let mode_name = chosen.unwrap_or_else(|| default_mode.into());
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
        "jwt" => AuthMode::Jwt(jwt_config(env).map_err(|e| {
            // The user set HOST, not AUTH_MODE: say why jwt, and what to set.
            if defaulted && e.variable == "AUTH_MODE" {
                ConfigError {
                    variable: "HOST",
                    value: host.to_string(),
                    reason: format!(
                        "off loopback AUTH_MODE defaults to jwt, which needs JWT_SECRET \
                         (HS256, at least {MIN_SECRET} bytes) or JWT_PUBLIC_KEY_FILE (RS256/ES256), \
                         and neither is set; or set AUTH_MODE=none with AUTH_ALLOW_ANONYMOUS=true \
                         to run without authentication"
                    ),
                }
            } else {
                e
            }
        })?),
        _ => {
            return Err(ConfigError {
                variable: "AUTH_MODE",
                value: mode_name,
                reason: "expected none or jwt".into(),
            });
        }
    };
    Ok(AuthConfig { mode })
}

/// Shortest HS256 secret accepted: shorter ones can be brute-forced.
const MIN_SECRET: usize = 32;

/// Checks a `JWT_SECRET` value as the server does at start-up, and returns the
/// secret it signs and verifies with (surrounding spaces removed, as for every
/// variable). `buildcast token` signs through it too, so it never mints a token
/// with a secret the server would refuse, or with a different one.
pub fn hs256_secret(value: &str) -> Result<String, ConfigError> {
    let secret = value.trim();
    if secret.len() < MIN_SECRET {
        return Err(ConfigError {
            variable: "JWT_SECRET",
            value: "(hidden)".into(),
            reason: format!("must be at least {MIN_SECRET} bytes"),
        });
    }
    Ok(secret.to_owned())
}

fn jwt_config(env: &Env<'_>) -> Result<JwtConfig, ConfigError> {
    let key = match (env.get("JWT_SECRET"), env.get("JWT_PUBLIC_KEY_FILE")) {
        (Some(_), Some(path)) => {
            return Err(ConfigError {
                variable: "JWT_PUBLIC_KEY_FILE",
                value: path,
                reason: "set either JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both".into(),
            });
        }
        (Some(secret), None) => JwtKey::Secret(hs256_secret(&secret)?),
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
                reason: format!(
                    "needs JWT_SECRET (HS256, at least {MIN_SECRET} bytes) or \
                     JWT_PUBLIC_KEY_FILE (RS256/ES256), and neither is set"
                ),
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
