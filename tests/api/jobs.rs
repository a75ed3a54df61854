//! The REST API of jobs: starting, validating, inspecting, listing, cancelling,
//! queueing and downloading artifacts.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{TestOptions, assert_error, names, spawn_app};

const FINISH: Duration = Duration::from_secs(30);

// ---- POST /api/jobs --------------------------------------------------------

#[tokio::test]
async fn post_job_answers_201_with_the_queued_job() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.post_job("web-app", "quick").await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("JSON body");
    let id = body["jobId"].as_str().expect("jobId is a string");
    assert!(!id.is_empty());
    assert_eq!(body["projectId"], "web-app", "{body}");
    assert_eq!(body["pipeline"], "quick", "{body}");
    assert_eq!(body["status"], "queued", "{body}");
    // The id it answered is one the server knows.
    let job = app.job(id).await;
    assert_eq!(job["jobId"], id);
}

#[tokio::test]
async fn each_job_gets_its_own_id() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let first = app.start_job("p1", "quick").await;
    let second = app.start_job("p1", "quick").await;

    // Assert
    assert_ne!(first, second);
}

#[tokio::test]
async fn unknown_pipeline_is_400_naming_it() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.post_job("p1", "no-such-pipeline").await;

    // Assert
    let error = assert_error(response, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("no-such-pipeline"), "{error}");
}

#[tokio::test]
async fn invalid_project_ids_are_400() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let too_long = "x".repeat(129);

    for project in ["", "a/b", too_long.as_str()] {
        // Act
        let response = app.post_job(project, "quick").await;

        // Assert
        let error = assert_error(response, StatusCode::BAD_REQUEST).await;
        assert!(error.contains("projectId"), "{project:?}: {error}");
    }
}

#[tokio::test]
async fn project_id_of_128_characters_is_accepted() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let longest = "x".repeat(128);

    // Act
    let response = app.post_job(&longest, "quick").await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app
        .client
        .post(app.url("/api/jobs"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"projectId": "p1", "pipeline": "#)
        .send()
        .await
        .expect("POST is answered");

    // Assert
    assert_error(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn wrong_types_unknown_or_missing_fields_are_422() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let bodies = [
        json!({ "projectId": 5, "pipeline": "quick" }),
        json!({ "projectId": "p1", "pipeline": ["quick"] }),
        json!({ "projectId": "p1", "pipeline": "quick", "branch": "main" }),
        json!({ "projectId": "p1" }),
        json!({ "projectId": null, "pipeline": "quick" }),
    ];

    for body in bodies {
        // Act
        let response = app.post_json("/api/jobs", &body).await;

        // Assert
        let error = assert_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(!error.is_empty(), "{body}");
    }
}

#[tokio::test]
async fn body_that_is_not_an_object_is_422() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    for body in [json!(["p1", "quick"]), json!("p1"), json!(42)] {
        // Act
        let response = app.post_json("/api/jobs", &body).await;

        // Assert: no job is started from an array or a scalar.
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {text}");
    }
    let jobs: Value = app.get("/api/jobs").await.json().await.expect("JSON body");
    assert_eq!(jobs["jobs"], json!([]), "{jobs:#}");
}

#[tokio::test]
async fn body_without_content_type_is_415() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app
        .client
        .post(app.url("/api/jobs"))
        .body(r#"{"projectId": "p1", "pipeline": "quick"}"#)
        .send()
        .await
        .expect("POST is answered");

    // Assert
    assert_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn body_over_rest_body_limit_is_413_with_a_json_error() {
    // Arrange
    let app = spawn_app(TestOptions::default().env("REST_BODY_LIMIT", "1024")).await;
    let padding = "x".repeat(2000);
    let small = app.post_job("p1", "quick").await;
    assert_eq!(small.status(), StatusCode::CREATED, "a small body is fine");

    // Act
    let response = app
        .post_json(
            "/api/jobs",
            &json!({ "projectId": "p1", "pipeline": padding }),
        )
        .await;

    // Assert
    let error = assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(error.contains("REST_BODY_LIMIT"), "{error}");
}

// ---- GET /api/jobs/{id} ----------------------------------------------------

#[tokio::test]
async fn unknown_job_is_404() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.get_job("no-such-job").await;

    // Assert
    let error = assert_error(response, StatusCode::NOT_FOUND).await;
    assert!(error.contains("no-such-job"), "{error}");
}

#[tokio::test]
async fn invalid_job_id_is_400() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.get_job("a%20b").await;

    // Assert
    assert_error(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn finished_quick_job_shows_its_final_state() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("web-app", "quick").await;

    // Act
    app.wait_finished(&id, FINISH).await;
    let job = app.job(&id).await;

    // Assert
    assert_eq!(job["jobId"], id.as_str(), "{job:#}");
    assert_eq!(job["projectId"], "web-app", "{job:#}");
    assert_eq!(job["pipeline"], "quick", "{job:#}");
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["phase"], "completed", "{job:#}");
    assert_eq!(job["progress"], 100, "{job:#}");
    assert_eq!(job["artifacts"], json!(["result.txt"]), "{job:#}");
    assert!(job["lastSeq"].as_u64().is_some_and(|s| s > 0), "{job:#}");
    assert!(
        job["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{job:#}"
    );
    for time in ["createdAt", "startedAt", "finishedAt"] {
        assert!(job[time].is_string(), "{time}: {job:#}");
    }
    assert!(
        job["startedAt"].as_str() <= job["finishedAt"].as_str(),
        "{job:#}"
    );
}

// ---- GET /api/jobs ---------------------------------------------------------

fn ids_of(list: &Value) -> Vec<&str> {
    list["jobs"]
        .as_array()
        .expect("jobs is an array")
        .iter()
        .map(|j| j["jobId"].as_str().expect("jobId"))
        .collect()
}

#[tokio::test]
async fn job_list_filters_by_status_and_project() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let finished_a = app.start_job("proj-a", "quick").await;
    let finished_b = app.start_job("proj-b", "quick").await;
    app.wait_finished(&finished_a, FINISH).await;
    app.wait_finished(&finished_b, FINISH).await;
    let running_a = app.start_job("proj-a", "slow").await;

    // Act
    let active_a: Value = app
        .get("/api/jobs?status=active&projectId=proj-a")
        .await
        .json()
        .await
        .expect("JSON body");
    let finished: Value = app
        .get("/api/jobs?status=finished&projectId=proj-a")
        .await
        .json()
        .await
        .expect("JSON body");
    let project_b: Value = app
        .get("/api/jobs?projectId=proj-b")
        .await
        .json()
        .await
        .expect("JSON body");
    let everything: Value = app.get("/api/jobs").await.json().await.expect("JSON body");

    // Assert
    assert_eq!(ids_of(&active_a), [running_a.as_str()], "{active_a:#}");
    assert_eq!(ids_of(&finished), [finished_a.as_str()], "{finished:#}");
    assert_eq!(ids_of(&project_b), [finished_b.as_str()], "{project_b:#}");
    let mut all = ids_of(&everything);
    all.sort_unstable();
    let mut expected = vec![finished_a.as_str(), finished_b.as_str(), running_a.as_str()];
    expected.sort_unstable();
    assert_eq!(all, expected, "{everything:#}");
    app.stop().await;
}

#[tokio::test]
async fn job_list_refuses_an_unknown_status() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.get("/api/jobs?status=bogus").await;

    // Assert
    assert_error(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored_known_ones_still_checked() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("web-app", "quick").await;
    app.wait_finished(&id, FINISH).await;

    // Act / Assert: a cache buster changes nothing.
    for path in [
        "/api/jobs?_=1700000000".to_owned(),
        "/api/jobs?foo=1&status=finished".to_owned(),
        format!("/api/jobs/{id}/events?foo=1"),
        format!("/api/jobs/{id}/log?foo=1"),
        "/api/pipelines?foo=1".to_owned(),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    for path in [
        "/api/jobs?foo=1&limit=abc".to_owned(),
        "/api/jobs?foo=1&status=bogus".to_owned(),
        format!("/api/jobs/{id}/events?foo=1&since=-1"),
    ] {
        let response = app.get(&path).await;
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn limit_zero_is_400_and_a_large_limit_is_lowered() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("web-app", "quick").await;
    app.wait_finished(&id, FINISH).await;

    // Act / Assert
    for path in [
        "/api/jobs?limit=0".to_owned(),
        format!("/api/jobs/{id}/events?limit=0"),
    ] {
        let message = assert_error(app.get(&path).await, StatusCode::BAD_REQUEST).await;
        assert!(
            message.contains("limit must be at least 1"),
            "{path}: {message}"
        );
    }
    let list: Value = app
        .get("/api/jobs?limit=1000000")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(ids_of(&list), [id.as_str()], "{list:#}");
    let page: Value = app
        .get(&format!("/api/jobs/{id}/events?limit=1000000"))
        .await
        .json()
        .await
        .expect("JSON");
    assert!(
        !page["events"].as_array().expect("events").is_empty(),
        "{page:#}"
    );
    app.stop().await;
}

// ---- cancel ------------------------------------------------------------------

#[tokio::test]
async fn cancelled_slow_job_ends_cancelled() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "slow").await;
    app.wait_job(&id, FINISH, "the build is running", |j| {
        j["status"] == "building"
    })
    .await;

    // Act
    let response = app.cancel(&id).await;

    // Assert
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["jobId"], id.as_str(), "{body}");
    let job = app.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    let events = app.all_events(&id).await;
    let last = events.last().expect("some events");
    assert_eq!(last["event"], "job:completed", "{last}");
    assert_eq!(last["data"]["status"], "cancelled", "{last}");
    assert_eq!(last["data"]["success"], false, "{last}");
    // It stopped early: far from all of its 200 lines were printed.
    let lines = crate::helpers::log_lines(&events, "stdout");
    assert!(lines.len() < 200, "{} lines", lines.len());
}

#[tokio::test]
async fn cancelling_a_finished_job_is_409() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;

    // Act
    let response = app.cancel(&id).await;

    // Assert
    assert_error(response, StatusCode::CONFLICT).await;
    assert_eq!(app.job(&id).await["status"], "completed");
}

#[tokio::test]
async fn cancelling_a_cancelled_job_again_is_409() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "slow").await;
    let first = app.cancel(&id).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    app.wait_finished(&id, Duration::from_secs(10)).await;

    // Act
    let again = app.cancel(&id).await;

    // Assert
    assert_error(again, StatusCode::CONFLICT).await;
    assert_eq!(app.job(&id).await["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_an_unknown_job_is_404() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.cancel("no-such-job").await;

    // Assert
    assert_error(response, StatusCode::NOT_FOUND).await;
}

// ---- failures ----------------------------------------------------------------

#[tokio::test]
async fn failing_build_ends_failed_with_an_error_then_completed() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "fail").await;

    // Act
    let job = app.wait_finished(&id, FINISH).await;
    let events = app.all_events(&id).await;

    // Assert
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["artifacts"], json!([]), "{job:#}");
    let kinds = names(&events);
    let error_at = kinds
        .iter()
        .position(|k| *k == "job:error")
        .expect("a job:error event");
    let error = &events[error_at];
    assert_eq!(error["data"]["phase"], "building", "{error}");
    assert!(
        error["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains('3')),
        "the exit code is named: {error}"
    );
    assert_eq!(kinds.last(), Some(&"job:completed"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "job:completed").count(), 1);
    assert!(error_at < kinds.len() - 1);
    let completed = events.last().expect("events");
    assert_eq!(completed["data"]["success"], false, "{completed}");
    assert_eq!(completed["data"]["status"], "failed", "{completed}");
    // The step after the failing one never ran.
    assert!(
        !crate::helpers::log_lines(&events, "stdout").contains(&"never reached"),
        "the test step ran after a failed build"
    );
    assert!(crate::helpers::log_lines(&events, "stderr").contains(&"error: boom"));
}

// ---- queueing ----------------------------------------------------------------

#[tokio::test]
async fn with_one_slot_the_second_job_waits_for_the_first() {
    // Arrange
    let app = spawn_app(TestOptions::default().env("MAX_CONCURRENT_JOBS", "1")).await;
    let first = app.start_job("p1", "medium").await;
    let second = app.start_job("p1", "medium").await;

    // Act: watch both while the first runs.
    app.wait_job(&first, FINISH, "the first job runs", |j| {
        j["status"] == "building"
    })
    .await;
    let mut checks = 0;
    loop {
        let a = app.job(&first).await;
        let b = app.job(&second).await;
        if !a["finishedAt"].is_null() {
            break;
        }
        // Assert (while the first is unfinished)
        assert_eq!(b["status"], "queued", "second while the first runs: {b:#}");
        assert!(b["startedAt"].is_null(), "{b:#}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        checks >= 3,
        "the first job was watched running ({checks} checks)"
    );
    let a = app.wait_finished(&first, FINISH).await;
    let b = app.wait_finished(&second, FINISH).await;

    // Assert
    assert_eq!(a["status"], "completed", "{a:#}");
    assert_eq!(b["status"], "completed", "{b:#}");
    let first_end = a["finishedAt"].as_str().expect("finishedAt");
    let second_start = b["startedAt"].as_str().expect("startedAt");
    assert!(
        first_end <= second_start,
        "the second started ({second_start}) before the first ended ({first_end})"
    );
}

// ---- artifacts -----------------------------------------------------------------

#[tokio::test]
async fn artifact_download_returns_the_file() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;

    // Act
    let response = app
        .get(&format!("/api/jobs/{id}/artifacts/result.txt"))
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE].to_str().expect("ascii");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.text().await.expect("a body");
    assert_eq!(body, format!("result of {id}\n"));
}

#[tokio::test]
async fn artifact_paths_outside_the_list_are_404() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;

    for name in [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2Fworkspace%2Fout%2Fresult.txt",
        "other.txt",
        "result.txt.bak",
    ] {
        // Act
        let response = app.get(&format!("/api/jobs/{id}/artifacts/{name}")).await;

        // Assert
        let status = response.status();
        let body = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
        assert!(!body.contains("root:"), "{name} leaked a file: {body}");
    }
}

#[tokio::test]
async fn artifact_of_an_unknown_job_is_404() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let response = app.get("/api/jobs/no-such-job/artifacts/result.txt").await;

    // Assert
    assert_error(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn pipelines_are_listed() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    // Act
    let body: Value = app
        .get("/api/pipelines")
        .await
        .json()
        .await
        .expect("JSON body");

    // Assert
    let mut listed: Vec<&str> = body["pipelines"]
        .as_array()
        .expect("pipelines is an array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["chatty", "fail", "medium", "quick", "slow"]);
}

// ---- methods -------------------------------------------------------------------

#[tokio::test]
async fn a_method_a_route_does_not_take_is_405_with_a_json_error() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let client = reqwest::Client::new();

    for (method, path) in [
        (reqwest::Method::DELETE, "/api/jobs"),
        (reqwest::Method::PUT, "/api/pipelines"),
        (reqwest::Method::POST, "/health"),
    ] {
        // Act
        let response = client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("answered");

        // Assert
        let allow = response
            .headers()
            .get(reqwest::header::ALLOW)
            .map(|v| v.to_str().expect("ASCII").to_owned());
        assert!(allow.is_some(), "{method} {path}: an Allow header");
        let message = assert_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(
            message.contains("method not allowed"),
            "{method} {path}: {message}"
        );
    }
}
