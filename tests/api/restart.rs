//! Stopping the server gracefully and starting a new one on the same data.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{PollingSocket, Received, TestOptions, log_lines, spawn_app};

const FINISH: Duration = Duration::from_secs(30);

#[tokio::test]
async fn restart_keeps_finished_jobs_and_fails_interrupted_ones() {
    // Arrange: one finished job, one still building, then a graceful stop.
    let app = spawn_app(TestOptions::default()).await;
    let done = app.start_job("p1", "quick").await;
    let done_before = app.wait_finished(&done, FINISH).await;
    let events_before = app.all_events(&done).await;
    let log_before = app.log(&done).await;
    let running = app.start_job("p1", "slow").await;
    app.wait_job(&running, FINISH, "the build prints", |j| {
        j["status"] == "building" && j["lastSeq"].as_u64().unwrap_or(0) > 10
    })
    .await;
    let root = app.stop().await;

    // Act
    let app = spawn_app(TestOptions::default().root(root)).await;

    // Assert: the finished job and its whole history are intact.
    let done_after = app.job(&done).await;
    for field in [
        "status",
        "progress",
        "artifacts",
        "lastSeq",
        "epoch",
        "createdAt",
        "startedAt",
        "finishedAt",
    ] {
        assert_eq!(done_after[field], done_before[field], "{field}");
    }
    let duration = |job: &Value| job["durationMs"].as_u64().expect("durationMs");
    assert!(duration(&done_after).abs_diff(duration(&done_before)) <= 1);
    assert_eq!(app.all_events(&done).await, events_before);
    assert_eq!(app.log(&done).await, log_before);
    let artifact = app
        .get(&format!("/api/jobs/{done}/artifacts/result.txt"))
        .await;
    assert_eq!(artifact.status(), reqwest::StatusCode::OK);
    assert_eq!(
        artifact.text().await.expect("a body"),
        format!("result of {done}\n")
    );

    // The interrupted job ended failed, saying why, and ended once.
    let interrupted = app.job(&running).await;
    assert_eq!(interrupted["status"], "failed", "{interrupted:#}");
    assert!(!interrupted["finishedAt"].is_null(), "{interrupted:#}");
    let events = app.all_events(&running).await;
    let system = log_lines(&events, "system");
    assert!(
        system.iter().any(|l| l.contains("server stopped")),
        "{system:?}"
    );
    assert!(app.log(&running).await.contains("server stopped"));
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "job:completed")
        .collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(events.last(), Some(completed[0]));
    assert_eq!(completed[0]["data"]["success"], false);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=interrupted["lastSeq"].as_u64().expect("lastSeq")).collect::<Vec<_>>()
    );

    // A new job gets a new id and runs.
    let new = app.start_job("p1", "quick").await;
    assert_ne!(new, done);
    assert_ne!(new, running);
    let new_job = app.wait_finished(&new, FINISH).await;
    assert_eq!(new_job["status"], "completed", "{new_job:#}");
    app.stop().await;
}

#[tokio::test]
async fn queries_and_subscriptions_work_after_a_restart() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let done = app.start_job("p-restart", "quick").await;
    let before = app.wait_finished(&done, FINISH).await;
    let root = app.stop().await;
    let app = spawn_app(TestOptions::default().root(root)).await;

    // Act
    let list: Value = app
        .get("/api/jobs?status=finished&projectId=p-restart")
        .await
        .json()
        .await
        .expect("JSON body");
    let mut socket = PollingSocket::connect(&app).await;
    let ack = socket
        .emit_with_ack("subscribe:job", &json!({ "jobId": done, "since": 0 }))
        .await;
    let received = socket
        .receive_until(Duration::from_secs(20), |r| {
            r.iter()
                .any(|m| matches!(m, Received::Ack(id, _) if *id == ack))
        })
        .await;

    // Assert
    let listed = list["jobs"].as_array().expect("jobs");
    assert_eq!(listed.len(), 1, "{list:#}");
    assert_eq!(listed[0]["jobId"], done.as_str());
    assert_eq!(listed[0]["status"], "completed");

    let answer = received
        .iter()
        .find_map(|m| match m {
            Received::Ack(id, data) if *id == ack => Some(data),
            _ => None,
        })
        .expect("the subscription is acknowledged");
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(answer["recovered"], true, "{answer:#}");
    assert_eq!(answer["lastSeq"], before["lastSeq"], "{answer:#}");
    assert_eq!(answer["epoch"], before["epoch"], "{answer:#}");
    assert_eq!(answer["job"]["status"], "completed", "{answer:#}");
    let replayed: Vec<(&str, u64)> = received
        .iter()
        .filter_map(|m| match m {
            Received::Event(name, data) => Some((name.as_str(), data["seq"].as_u64()?)),
            Received::Ack(..) => None,
        })
        .collect();
    let seqs: Vec<u64> = replayed.iter().map(|(_, s)| *s).collect();
    let last_seq = before["lastSeq"].as_u64().expect("lastSeq");
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "{replayed:?}");
    assert_eq!(replayed.last().map(|(n, _)| *n), Some("job:completed"));

    let health: Value = app.get("/health").await.json().await.expect("JSON body");
    assert_eq!(health["websocket"]["connected_clients"], 1, "{health}");
}

#[tokio::test]
async fn a_stopped_server_leaves_no_task_running() {
    // Arrange: a build running, a polling client following it, retention and
    // the sweeps running.
    let app = spawn_app(TestOptions::default()).await;
    let running = app.start_job("p1", "slow").await;
    let mut socket = PollingSocket::connect(&app).await;
    socket
        .emit_with_ack("subscribe:job", &json!({ "jobId": running, "since": 0 }))
        .await;
    app.wait_job(&running, FINISH, "the build prints", |j| {
        j["lastSeq"].as_u64().unwrap_or(0) > 10
    })
    .await;
    let tasks = app.tasks.clone();
    assert!(!tasks.is_empty(), "the server runs tasks");

    // Act
    drop(app.stop().await);

    // Assert
    assert!(
        tasks.is_empty(),
        "{} tasks still running after shutdown",
        tasks.len()
    );
}
