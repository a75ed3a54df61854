//! HTTP errors: one enum for every way a REST request can fail, mapped in one place
//! to a status code and a `{ "error": "<message>" }` body.
//!
//! Internal failures are logged with their details and answered with a generic
//! message; nothing internal reaches a client. [`ApiJson`] and [`ApiQuery`] are
//! axum's extractors with their rejections turned into this error, so malformed
//! input answers in the same format as everything else.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::ingest::{ApplyError, BatchError};
use crate::journal::RecordError;
use crate::runner::SubmitError;
use crate::store::StoreError;

/// A failed REST request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was malformed or invalid; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// The body was JSON of the wrong shape.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No token, or one that does not verify.
    #[error("authentication required: a valid token is needed")]
    Unauthorized,
    /// A valid token that does not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (e.g. cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large (the limit is set by REST_BODY_LIMIT)")]
    PayloadTooLarge,
    #[error("{0}")]
    Unavailable(String),
    /// The request took longer than `REST_TIMEOUT_SECS`.
    #[error("the request took longer than {}s (REST_TIMEOUT_SECS)", .0.as_secs())]
    Timeout(std::time::Duration),
    /// Something failed inside the server; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::Forbidden(e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::UnknownPipeline(_) => Self::BadRequest(e.to_string()),
            SubmitError::ShuttingDown => Self::Unavailable(e.to_string()),
            SubmitError::Record(e) => Self::Internal(e.into()),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Record(RecordError::Finished(_)) => Self::Conflict(e.to_string()),
            ApplyError::Record(
                RecordError::UnknownJob(_) | RecordError::Exists(_) | RecordError::Mirrored(_),
            ) => Self::Internal(e.into()),
            ApplyError::NeedsProject(_) | ApplyError::WrongProject(..) => {
                Self::BadRequest(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = ?e, "request failed");
        }
        (
            self.status_code(),
            axum::Json(json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::Unprocessable(format!(
                "invalid request body: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            )),
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(format!(
                "malformed JSON: {}",
                e.body_text()
                    .trim_start_matches("Failed to parse the request body as JSON: ")
            )),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::BadRequest(format!(
            "invalid query string: {}",
            r.body_text()
                .trim_start_matches("Failed to deserialize query string: ")
        ))
    }
}

/// A JSON object body, rejecting bad input with an [`ApiError`]. Unlike
/// `axum::Json` alone it refuses a body that is not an object (serde would accept
/// an array for a struct).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        if !value.is_object() {
            return Err(ApiError::Unprocessable(
                "invalid request body: expected a JSON object".into(),
            ));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::Unprocessable(format!("invalid request body: {e}")))
    }
}

/// `axum::extract::Query`, rejecting bad input with an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
