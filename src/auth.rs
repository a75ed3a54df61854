//! Who may watch what: token verification, the [`Principal`] it yields, and the
//! checks every entry point makes with it.
//!
//! `AUTH_MODE=none` gives every caller the anonymous principal (all projects,
//! admin). `AUTH_MODE=jwt` verifies a JWT (HS256 with `JWT_SECRET`, or RS256/ES256
//! with `JWT_PUBLIC_KEY_FILE`): `exp` is required, `nbf` is checked when present
//! (both with `JWT_LEEWAY_SECS` of leeway), `iss`/`aud` are checked when
//! configured, and only the configured algorithm is accepted (so `alg: none` and
//! algorithm swaps are refused). Claims: `sub` (user id), optional `projects` (the
//! project ids the user may see; absent = all) and optional `role`
//! (`viewer` < `builder` < `admin`; absent = viewer).
//!
//! Sockets are authenticated in [`crate::socket`]'s connect middleware and HTTP
//! requests through the `http::caller::Caller` extractor; both take the token from the same
//! places. Reasons for a refusal are logged, never the token.

use std::collections::HashSet;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{AuthMode, ConfigError, JwtConfig, JwtKey};
use crate::job::ProjectId;

/// What a caller may do, in increasing order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Watch jobs and read their history.
    Viewer,
    /// Also start and cancel jobs.
    Builder,
    /// Everything.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`, or `anonymous`.
    pub user: String,
    /// Projects the caller may see; `None`: all of them.
    pub projects: Option<HashSet<ProjectId>>,
    pub role: Role,
}

impl Principal {
    /// The caller when authentication is off: sees everything, may do everything.
    pub fn anonymous() -> Self {
        Self {
            user: "anonymous".into(),
            projects: None,
            role: Role::Admin,
        }
    }

    /// Whether the caller may see `project`.
    pub fn can_see(&self, project: &ProjectId) -> bool {
        self.projects.as_ref().is_none_or(|p| p.contains(project))
    }

    /// Whether the caller's project list is restricted.
    pub fn is_restricted(&self) -> bool {
        self.projects.is_some()
    }

    /// Checks that the caller has `role` and may see `project`.
    pub fn require(&self, role: Role, project: &ProjectId) -> Result<(), AuthError> {
        if self.role < role {
            return Err(AuthError::MissingRole(role));
        }
        if !self.can_see(project) {
            return Err(AuthError::NoAccess(project.clone()));
        }
        Ok(())
    }
}

/// Why an authenticated caller may not do something (HTTP answers 403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this needs the {} role", <&'static str>::from(*.0))]
    MissingRole(Role),
    #[error("no access to project {0}")]
    NoAccess(ProjectId),
}

/// The claims buildcast reads from a token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    projects: Option<Vec<String>>,
    #[serde(default)]
    role: Option<Role>,
}

/// Why a token was refused. Logged server-side; clients only learn that it was.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("no token was given")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token claims are invalid: {0}")]
    Claims(String),
}

impl AuthFailure {
    /// A short name of the reason, for metrics labels.
    pub fn label(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind;
        match self {
            Self::Missing => "missing",
            Self::Invalid(e) => match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::InvalidSignature => "bad_signature",
                _ => "invalid",
            },
            Self::Claims(_) => "claims",
        }
    }
}

/// Verifies tokens according to the configured mode.
pub struct Authenticator {
    /// `None` when authentication is off.
    jwt: Option<(DecodingKey, Validation)>,
}

impl Authenticator {
    /// Prepares verification; a key that cannot be used is a configuration error.
    pub fn new(mode: &AuthMode) -> Result<Self, ConfigError> {
        let jwt = match mode {
            AuthMode::None => None,
            AuthMode::Jwt(config) => Some(jwt_verifier(config)?),
        };
        Ok(Self { jwt })
    }

    /// Whether tokens are checked at all.
    pub fn enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// The principal of `token` (anonymous when authentication is off).
    pub fn verify(&self, token: Option<&str>) -> Result<Principal, AuthFailure> {
        let Some((key, validation)) = &self.jwt else {
            return Ok(Principal::anonymous());
        };
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err(AuthFailure::Claims(
                "sub must be 1 to 256 characters".into(),
            ));
        }
        let projects = claims
            .projects
            .map(|list| {
                list.iter()
                    .map(|p| {
                        ProjectId::parse(p)
                            .map_err(|e| AuthFailure::Claims(format!("project {p:?}: {e}")))
                    })
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()?;
        Ok(Principal {
            user: claims.sub,
            projects,
            role: claims.role.unwrap_or(Role::Viewer),
        })
    }
}

fn jwt_verifier(config: &JwtConfig) -> Result<(DecodingKey, Validation), ConfigError> {
    let (key, algorithm) = match &config.key {
        JwtKey::Secret(secret) => (
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ),
        JwtKey::PublicKey { path, pem } => {
            let bad = |reason: String| ConfigError {
                variable: "JWT_PUBLIC_KEY_FILE",
                value: path.display().to_string(),
                reason,
            };
            let text = String::from_utf8_lossy(pem);
            if text.contains("BEGIN RSA PUBLIC KEY")
                || text.contains("BEGIN PUBLIC KEY") && !is_ec(pem)
            {
                (
                    DecodingKey::from_rsa_pem(pem)
                        .map_err(|e| bad(format!("not an RSA public key: {e}")))?,
                    Algorithm::RS256,
                )
            } else {
                (
                    DecodingKey::from_ec_pem(pem).map_err(|e| {
                        bad(format!("not an RSA or P-256 EC public key in PEM: {e}"))
                    })?,
                    Algorithm::ES256,
                )
            }
        }
    };
    let mut validation = Validation::new(algorithm);
    validation.leeway = config.leeway_secs;
    let mut required = vec!["exp", "sub"];
    required.extend(config.issuer.as_ref().map(|_| "iss"));
    required.extend(config.audience.as_ref().map(|_| "aud"));
    validation.set_required_spec_claims(&required);
    validation.validate_exp = true;
    // A token not valid yet (`nbf` in the future, past the leeway) is refused.
    validation.validate_nbf = true;
    match &config.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &config.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    Ok((key, validation))
}

/// Whether a `BEGIN PUBLIC KEY` PEM holds an EC key (its algorithm identifier).
fn is_ec(pem: &[u8]) -> bool {
    DecodingKey::from_ec_pem(pem).is_ok()
}

/// What [`mint`] puts in a token.
#[derive(Debug, serde::Serialize)]
pub struct NewToken {
    pub sub: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Signs `claims` with an HS256 `secret`: for tests and trying the server out.
pub fn mint(claims: &NewToken, secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// The token of a request: the `token` query parameter, else `Authorization: Bearer`.
pub fn token_from_request(uri_query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    query_token(uri_query).or_else(|| bearer(headers))
}

fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_decoded() {
        assert_eq!(query_token(Some("a=1&token=x%2By+z")), Some("x+y z".into()));
        assert_eq!(query_token(Some("EIO=4&transport=polling")), None);
    }

    #[test]
    fn tokens_not_valid_yet_are_refused_past_the_leeway() {
        const SECRET: &str = "a-secret-that-is-long-enough-for-hs256";
        let auth = Authenticator::new(&AuthMode::Jwt(JwtConfig {
            key: JwtKey::Secret(SECRET.into()),
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }))
        .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let token = |nbf: u64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &serde_json::json!({ "sub": "a", "exp": now + 600, "nbf": nbf }),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        assert!(auth.verify(Some(&token(now + 3600))).is_err());
        assert!(
            auth.verify(Some(&token(now + 10))).is_ok(),
            "within the leeway"
        );
        assert!(auth.verify(Some(&token(now - 10))).is_ok());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Builder && Role::Builder < Role::Admin);
    }
}
