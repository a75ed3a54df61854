//! `GET /health`: liveness and a count of connected clients, for load balancers and
//! probes. Needs no token and reveals no job or user data.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let stats = &state.sockets;
    let mut body = json!({
        "status": "ok",
        "websocket": {
            "enabled": state.config.websocket.enabled,
            "connected_clients": stats.connected.load(Ordering::Relaxed),
            "path": state.config.websocket.path,
        },
        "delivery": {
            "lagged_catch_ups": stats.lagged.load(Ordering::Relaxed),
            "project_catch_ups": stats.project_catch_ups.load(Ordering::Relaxed),
            "dropped_project_sockets": stats.dropped_project_sockets.load(Ordering::Relaxed),
        },
    });
    if let Some(cluster) = &state.cluster {
        let here = stats.connected.load(Ordering::Relaxed) as u64;
        let clients = cluster.cluster_clients(here).await;
        let up = clients.is_some() && cluster.health.up.load(Ordering::Relaxed);
        body["status"] = json!(if up { "ok" } else { "degraded" });
        body["redis"] = json!(if up { "ok" } else { "down" });
        body["cluster"] = json!({
            "node": state.journal.node(),
            "connected_clients": clients,
            "unpublished_events": cluster.health.backlog.load(Ordering::Relaxed),
            "rejected_worker_messages": cluster.health.rejected_worker_messages.load(Ordering::Relaxed),
        });
    }
    Json(body)
}
