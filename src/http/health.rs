//! `GET /health`: liveness, whether history is being written, and a count of
//! connected clients, for load balancers and probes. Needs no token and reveals no
//! job or user data.
//!
//! `compat` counts the compatibility gateways' open WebSocket connections, in
//! total and per gateway (`websocket.connected_clients` counts Socket.IO only).
//!
//! `status` is `degraded` while the store cannot write (a full disk, say): live
//! delivery goes on from memory, and `store` says why and how much waits.

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
