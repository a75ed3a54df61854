//! `GET /health` and whether the Socket.IO endpoint is mounted.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestOptions, assert_error, spawn_app};

#[tokio::test]
async fn health_reports_ok_and_no_connected_clients() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.get("/health").await;

    // Assert
    assert_ne!(app.port, 0, "PORT=0 picks a free port");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["websocket"]["enabled"], true, "{body}");
    assert_eq!(body["websocket"]["connected_clients"], 0, "{body}");
    assert_eq!(body["websocket"]["path"], "/ws", "{body}");
}

#[tokio::test]
async fn socket_io_endpoint_answers_the_engine_io_handshake_when_enabled() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.get("/ws/?EIO=4&transport=polling").await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("a body");
    let open: Value = serde_json::from_str(text.strip_prefix('0').expect("an open packet"))
        .expect("handshake JSON");
    assert!(
        open["sid"].as_str().is_some_and(|s| !s.is_empty()),
        "{open}"
    );
}

#[tokio::test]
async fn disabled_websocket_is_reported_and_not_mounted() {
    // Arrange
    let app = spawn_app(TestOptions::default().env("WEBSOCKET_ENABLED", "false")).await;

    // Act
    let health: Value = app.get("/health").await.json().await.expect("JSON body");
    let handshake = app.get("/ws/?EIO=4&transport=polling").await;

    // Assert
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["websocket"]["enabled"], false, "{health}");
    assert_eq!(health["websocket"]["connected_clients"], 0, "{health}");
    assert_error(handshake, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn jobs_still_run_with_websocket_disabled() {
    // Arrange
    let app = spawn_app(TestOptions::default().env("WEBSOCKET_ENABLED", "false")).await;

    // Act
    let id = app.start_job("p1", "quick").await;
    let job = app
        .wait_finished(&id, std::time::Duration::from_secs(30))
        .await;

    // Assert
    assert_eq!(job["status"], "completed", "{job}");
}
