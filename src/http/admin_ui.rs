//! `/admin-ui/`: a local copy of the Socket.IO Admin UI, for networks without
//! internet, served from `ADMIN_UI_DIR` (the `ui/dist` folder of the npm package
//! `@socket.io/admin-ui`; no file of it is in this repository). `/admin-ui`
//! redirects to `/admin-ui/`: the page loads its assets by relative paths.
//!
//! The page connects to the `/admin` namespace like the hosted UI; operators
//! enter this server's URL and, under Advanced options, the path `/ws`.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::error::ApiError;
use crate::state::AppState;

/// The routes of the local copy, when `ADMIN_UI_DIR` is set.
pub fn router(dir: Option<PathBuf>) -> Router<AppState> {
    let Some(dir) = dir else {
        return Router::new();
    };
    let index = dir.clone();
    Router::new()
        .route(
            "/admin-ui",
            get(|| async { Redirect::permanent("/admin-ui/") }),
        )
        .route(
            "/admin-ui/",
            get(move || serve(index.clone(), String::new())),
        )
        .route(
            "/admin-ui/{*path}",
            get(move |Path(path): Path<String>| serve(dir.clone(), path)),
        )
}

/// Serves `path` below `dir` (ServeDir refuses `..` and answers 404 for what is
/// not there; a folder gets its index.html).
async fn serve(dir: PathBuf, path: String) -> Response {
    let Ok(request) = Request::builder()
        .uri(format!("/{path}"))
        .body(Body::empty())
    else {
        return ApiError::NotFound("no such file".into()).into_response();
    };
    match ServeDir::new(dir).oneshot(request).await {
        Ok(response) if response.status() == http::StatusCode::NOT_FOUND => {
            ApiError::NotFound("no such file of the Admin UI".into()).into_response()
        }
        Ok(response) => response.into_response(),
        Err(e) => ApiError::Internal(anyhow::anyhow!(e)).into_response(),
    }
}
