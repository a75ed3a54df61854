//! `GET /api/me`: who the caller is and what it may do, so that a client can offer
//! only what the server would accept (the server still checks every request).

use axum::routing::get;
use axum::{Json, Router};

use crate::auth::Role;
use crate::http::caller::Caller;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/me", get(me))
}

async fn me(Caller(caller): Caller) -> Json<serde_json::Value> {
    let role = match caller.role {
        Role::Viewer => "viewer",
        Role::Builder => "builder",
        Role::Admin => "admin",
    };
    let mut projects: Option<Vec<&str>> = caller
        .projects
        .as_ref()
        .map(|p| p.iter().map(|p| p.as_str()).collect());
    if let Some(p) = &mut projects {
        p.sort_unstable();
    }
    Json(serde_json::json!({
        "user": caller.user,
        "role": role,
        "projects": projects,
        "canBuild": caller.role >= Role::Builder,
    }))
}
