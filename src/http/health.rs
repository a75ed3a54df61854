//! `GET /health`: liveness, version and uptime, whether history is being written,
//! and a count of connected clients, for load balancers and probes; `GET /ready`:
//! whether this node should get traffic ([`crate::readiness`]), 200 or 503 naming
//! the failing part. Neither needs a token or reveals job or user data.
//!
//! `compat` counts the compatibility gateways' open WebSocket connections, in
//! total and per gateway (`websocket.connected_clients` counts Socket.IO only).
//!
//! `status` is `degraded` while the store cannot write (a full disk, say): live
//! delivery goes on from memory, and `store` says why and how much waits.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let checks = state
        .readiness
        .check(&state.journal, &state.runner, state.cluster.as_ref())
        .await;
    let failing: Vec<&str> = checks
        .iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.part)
        .collect();
    let parts: serde_json::Map<String, Value> = checks
        .iter()
        .map(|c| {
            let value = match &c.result {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "ok": false, "error": e }),
            };
            (c.part.to_owned(), value)
        })
        .collect();
    if failing.is_empty() {
        return (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": parts })),
        );
    }
    let error = checks
        .iter()
        .filter_map(|c| c.result.as_ref().err().map(|e| format!("{}: {e}", c.part)))
        .collect::<Vec<_>>()
        .join("; ");
    tracing::warn!(%error, "not ready");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "not ready",
            "failing": failing,
            "error": error,
            "checks": parts,
        })),
    )
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let stats = &state.sockets;
    let writer = state.journal.writer_status();
    let store_ok = writer.error.is_none();
    let mut store = json!({
        "ok": store_ok,
        "backlog": writer.backlog_events,
        "backlog_bytes": writer.backlog_bytes,
    });
    if let Some(error) = writer.error {
        store["error"] = json!(error);
    }
    let mut body = json!({
        "status": if store_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSecs": state.started.elapsed().as_secs(),
        "store": store,
        "websocket": {
            "enabled": state.config.websocket.enabled,
            "connected_clients": stats.connected.load(Ordering::Relaxed),
            "path": state.config.websocket.path,
        },
        "delivery": {
            "lagged_catch_ups": stats.lagged.load(Ordering::Relaxed),
            "project_catch_ups": stats.project_catch_ups.load(Ordering::Relaxed),
            "dropped_project_sockets": stats.dropped_project_sockets.load(Ordering::Relaxed),
            "stream_catch_ups": state.taps.catch_ups(),
        },
    });
    let counts = state.gateways.counts();
    let mut compat = json!({ "connections": counts.iter().map(|(_, n)| n).sum::<usize>() });
    for (name, n) in counts {
        compat[name] = json!(n);
    }
    body["compat"] = compat;
    if let Some(cluster) = &state.cluster {
        let here = stats.connected.load(Ordering::Relaxed) as u64;
        let clients = cluster.cluster_clients(here).await;
        let up = clients.is_some() && cluster.health.up.load(Ordering::Relaxed);
        if !up {
            body["status"] = json!("degraded");
        }
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
