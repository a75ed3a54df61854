//! The live build dashboard: the static files of `web/dist/`, built into the binary
//! so that `cargo run` serves a working page with nothing else to install.
//!
//! `index.html` is answered for `/` and for any path that is not a file (the page
//! routes on the client side). Files whose name carries a content hash (`*-<hash>.*`,
//! as the build script names them) are cached for a year; everything else must be
//! revalidated, so a new build is picked up at once.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};

use crate::state::AppState;

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web/dist");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(serve))
        .route("/assets/{*path}", get(serve))
        .route("/jobs/{*path}", get(serve))
        .route("/favicon.svg", get(serve))
}

async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (file, is_index) = match DIST.get_file(path) {
        Some(file) if !path.is_empty() => (file, false),
        _ if path.starts_with("assets/") => {
            return (StatusCode::NOT_FOUND, "no such asset").into_response();
        }
        _ => match DIST.get_file("index.html") {
            Some(file) => (file, true),
            None => return (StatusCode::NOT_FOUND, "dashboard not built").into_response(),
        },
    };
    let name = if is_index { "index.html" } else { path };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let cache = if !is_index && is_hashed(name) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = Body::from(file.contents()).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether a file name looks like `name-<8+ hex or base32 chars>.ext`.
fn is_hashed(name: &str) -> bool {
    let stem = name.rsplit('/').next().unwrap_or(name);
    let stem = stem.split('.').next().unwrap_or(stem);
    stem.rsplit_once('-')
        .is_some_and(|(_, hash)| hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::is_hashed;

    #[test]
    fn hashed_names_are_recognised() {
        assert!(is_hashed("assets/app-3F9A2C1D.js"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("assets/app.js"));
    }
}
