//! `GET /api/pipelines`: the pipelines this server can run, for forms and scripts.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::caller::Caller;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/pipelines", get(list))
}

#[derive(Serialize)]
struct PipelineView {
    name: String,
    description: String,
    steps: Vec<&'static str>,
    artifacts: Vec<String>,
}

async fn list(State(state): State<AppState>, Caller(_): Caller) -> Json<serde_json::Value> {
    let pipelines: Vec<_> = state
        .runner
        .pipelines()
        .iter()
        .map(|p| PipelineView {
            name: p.name.clone(),
            description: p.description.clone(),
            steps: p
                .steps
                .iter()
                .filter(|s| s.script.is_some())
                .map(|s| s.name)
                .collect(),
            artifacts: p.artifacts.clone(),
        })
        .collect();
    Json(serde_json::json!({ "pipelines": pipelines }))
}
