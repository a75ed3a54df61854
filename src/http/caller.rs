//! The [`Caller`] extractor: the authenticated principal of an HTTP request.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::Method;
use axum::http::request::Parts;

use crate::auth::{Principal, token_from_request};
use crate::error::ApiError;
use crate::state::AppState;

/// The caller of an HTTP request, authenticated. Rejects with 401.
///
/// The `token` query parameter is only read on GET, for download links a browser
/// cannot add a header to.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let query = (parts.method == Method::GET)
            .then(|| parts.uri.query())
            .flatten();
        let token = token_from_request(query, &parts.headers);
        state
            .auth
            .verify(token.as_deref())
            .map(Caller)
            .map_err(|reason| {
                // The full path: inside `/api` the router has stripped the prefix.
                let path = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or_else(|| parts.uri.path(), |uri| uri.path());
                tracing::info!(%reason, path = %path, "request refused");
                crate::metrics::auth_refused(crate::metrics::Endpoint::Http, reason.label());
                ApiError::Unauthorized
            })
    }
}
