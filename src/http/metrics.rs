//! `GET /metrics`: every metric in the Prometheus text format ([`crate::metrics`]).
//!
//! Like `/health` it reveals no job or user data (labels are event names,
//! transports, reasons, statuses and node ids). When `METRICS_TOKEN` is set the
//! scraper sends `Authorization: Bearer <token>`. Gauges of current state are set
//! here, just before rendering, so nothing on the delivery path keeps them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::{Exporter, set_counter, set_gauge};
use crate::state::AppState;

/// How often histogram samples are folded into buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(exporter) = state.metrics.clone() else {
        return ApiError::NotFound("metrics are off (METRICS_ENABLED=false)".into())
            .into_response();
    };
    if let Some(token) = &state.config.metrics.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "metrics need Authorization: Bearer <METRICS_TOKEN>" })),
            )
                .into_response();
        }
    }
    set_state_gauges(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exporter.render(),
    )
        .into_response()
}

/// Folds histogram samples into their buckets every few seconds until `stop`.
pub async fn upkeep(exporter: Exporter, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(UPKEEP_EVERY) => exporter.upkeep(),
        }
    }
}

/// Sets the gauges (and the counters kept elsewhere) from the state now.
async fn set_state_gauges(state: &AppState) {
    let stats = &state.sockets;
    set_gauge(
        "buildcast_uptime_seconds",
        &[],
        state.started.elapsed().as_secs_f64(),
    );
    if let Some(io) = stats.io.get() {
        let mut connections = [[0u64; 2]; 2];
        let mut subscriptions = crate::socket::session::Counts::default();
        for socket in io.sockets() {
            let transport = usize::from(crate::socket::transport_label(&socket) == "websocket");
            let eio = usize::from(crate::socket::eio_label(&socket) == "4");
            connections[transport][eio] += 1;
            if let Some(session) = socket
                .extensions
                .get::<std::sync::Arc<crate::socket::Session>>()
            {
                subscriptions.add(&session.counts());
            }
        }
        for (t, transport) in ["polling", "websocket"].into_iter().enumerate() {
            for (e, eio) in ["3", "4"].into_iter().enumerate() {
                set_gauge(
                    "buildcast_socketio_connections",
                    &[("transport", transport.into()), ("eio", eio.into())],
                    connections[t][e] as f64,
                );
            }
        }
        for (kind, n) in [
            ("job", subscriptions.jobs),
            ("batch", subscriptions.batch),
            ("project", subscriptions.projects),
            ("jobs", subscriptions.feed),
        ] {
            set_gauge(
                "buildcast_subscriptions",
                &[("kind", kind.into())],
                n as f64,
            );
        }
    }
    set_counter(
        "buildcast_catch_ups_total",
        &[("kind", "job")],
        stats.lagged.load(Ordering::Relaxed),
    );
    set_counter(
        "buildcast_catch_ups_total",
        &[("kind", "project")],
        stats.project_catch_ups.load(Ordering::Relaxed),
    );
    set_counter(
        "buildcast_catch_ups_total",
        &[("kind", "stream")],
        state.taps.catch_ups(),
    );
    set_counter(
        "buildcast_sockets_dropped_total",
        &[],
        stats.dropped_project_sockets.load(Ordering::Relaxed),
    );
    set_gauge("buildcast_http_streams", &[], state.taps.open() as f64);
    for (gateway, n) in state.gateways.counts() {
        set_gauge(
            "buildcast_gateway_connections",
            &[("gateway", gateway.to_string())],
            n as f64,
        );
    }
    let writer = state.journal.writer_status();
    set_gauge(
        "buildcast_store_queue_events",
        &[],
        writer.backlog_events as f64,
    );
    set_gauge(
        "buildcast_store_queue_bytes",
        &[],
        writer.backlog_bytes as f64,
    );
    let (queued, running) = state.runner.load();
    set_gauge(
        "buildcast_jobs",
        &[("state", "queued".into())],
        queued as f64,
    );
    set_gauge(
        "buildcast_jobs",
        &[("state", "running".into())],
        running as f64,
    );
    if let Some(cluster) = &state.cluster {
        let up = cluster.health.up.load(Ordering::Relaxed);
        set_gauge("buildcast_redis_up", &[], if up { 1.0 } else { 0.0 });
        set_gauge(
            "buildcast_cluster_publish_queue",
            &[],
            cluster.health.backlog.load(Ordering::Relaxed) as f64,
        );
        if let Some(ages) = cluster.heartbeat_ages().await {
            for (node, age) in ages {
                set_gauge(
                    "buildcast_cluster_heartbeat_age_seconds",
                    &[("node", node)],
                    age.as_secs_f64(),
                );
            }
        }
    }
}
