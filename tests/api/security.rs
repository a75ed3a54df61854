//! The defects of an adversarial probe, each pinned: artifact names that lead out of
//! a job's folder, ids that are path components, tokens not valid yet, and a
//! restricted user telling foreign jobs from missing ones.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, TestOptions, assert_error, spawn_app};

const FINISH: Duration = Duration::from_secs(30);
const WORKER_TOKEN: &str = "worker-token-for-the-tests";
const SECRET: &str = "api-test-secret-that-is-long-enough!";

fn worker_app() -> TestOptions {
    TestOptions::default().env("WORKER_TOKEN", WORKER_TOKEN)
}

/// `POST /api/jobs/{id}/events` as a worker.
async fn ingest(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/jobs/{id}/events")))
        .bearer_auth(WORKER_TOKEN)
        .json(body)
        .send()
        .await
        .expect("POST is answered")
}

/// A request sent as is, path included (HTTP clients remove `.` and `..` segments);
/// the status and body of the answer.
async fn raw(app: &TestApp, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connects");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {WORKER_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("reads");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

fn token(claims: Value) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = claims;
    claims["exp"] = json!(now + 600);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token")
}

fn jwt_app() -> TestOptions {
    TestOptions::default()
        .env("AUTH_MODE", "jwt")
        .env("JWT_SECRET", SECRET)
}

// ---- artifact names ---------------------------------------------------------------

#[tokio::test]
async fn worker_artifact_names_leaving_the_folder_are_400_and_record_nothing() {
    // Arrange
    let app = spawn_app(worker_app()).await;

    for (i, bad) in [
        "/etc/passwd",
        "../../x",
        "a/../../b",
        "C:\\x",
        "\\\\server\\share",
        "a\0b",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bad-artifact-{i}");

        // Act
        let response = ingest(
            &app,
            &id,
            &json!([
                {"type": "status", "data": {"status": "running"}, "projectId": "p1"},
                {"type": "complete", "data": {"status": "completed", "artifacts": ["ok.txt", bad]}},
            ]),
        )
        .await;

        // Assert
        let message = assert_error(response, StatusCode::BAD_REQUEST).await;
        assert!(
            message.starts_with("event 1: data.artifacts[1] "),
            "{bad:?}: {message}"
        );
        assert_error(app.get_job(&id).await, StatusCode::NOT_FOUND).await;
    }
}

/// A worker job `id` in project `p1`, completed with `artifacts`.
async fn completed_worker_job(app: &TestApp, id: &str, artifacts: &[&str]) {
    let response = ingest(
        app,
        id,
        &json!([
            {"type": "status", "data": {"status": "running"}, "projectId": "p1"},
            {"type": "complete", "data": {"status": "completed", "artifacts": artifacts}},
        ]),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
}

#[tokio::test]
async fn worker_artifacts_inside_the_folder_are_served_and_symlinks_out_are_not() {
    // Arrange: a secret next to the data folder, and a job whose folder holds a
    // legitimate artifact, one in a subfolder, and symlinks to the secret.
    let app = spawn_app(worker_app()).await;
    let secret = app.data_dir.parent().unwrap().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    completed_worker_job(
        &app,
        "w1",
        &["app.txt", "dist/app.tar", "link.txt", "rel.txt"],
    )
    .await;
    let folder = app.data_dir.join("jobs/w1/artifacts");
    std::fs::create_dir_all(folder.join("dist")).unwrap();
    std::fs::write(folder.join("app.txt"), "the app").unwrap();
    std::fs::write(folder.join("dist/app.tar"), "tarball").unwrap();
    std::os::unix::fs::symlink(&secret, folder.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("../../../../secret.txt", folder.join("rel.txt")).unwrap();

    // Act + Assert
    let ok = app.get("/api/jobs/w1/artifacts/app.txt").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "the app");
    let sub = app.get("/api/jobs/w1/artifacts/dist%2Fapp.tar").await;
    assert_eq!(sub.status(), StatusCode::OK);
    assert_eq!(sub.text().await.unwrap(), "tarball");
    for name in ["link.txt", "rel.txt"] {
        let response = app.get(&format!("/api/jobs/w1/artifacts/{name}")).await;
        let message = assert_error(response, StatusCode::NOT_FOUND).await;
        assert!(!message.contains("top secret"), "{name}: {message}");
    }
}

#[tokio::test]
async fn stored_names_recorded_before_the_rule_are_not_served() {
    // Arrange: a job recorded with a valid name, then its stored names rewritten the
    // way an older server would have kept them.
    let app = spawn_app(worker_app()).await;
    completed_worker_job(&app, "old", &["fine.txt"]).await;
    app.get_job("old").await;
    let root = app.stop().await;
    let db = rusqlite::Connection::open(root.path().join("data/buildcast.db")).unwrap();
    let secret = root.path().join("data/buildcast.db").display().to_string();
    let names = json!(["/etc/passwd", "../../../../pipelines.toml", secret]).to_string();
    let changed = db
        .execute(
            "UPDATE jobs SET artifacts = ?1 WHERE id = 'old'",
            rusqlite::params![names],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let app = spawn_app(worker_app().root(root)).await;

    for name in [
        "%2Fetc%2Fpasswd".to_owned(),
        "..%2F..%2F..%2F..%2Fpipelines.toml".to_owned(),
        secret.replace('/', "%2F"),
    ] {
        // Act
        let response = app.get(&format!("/api/jobs/old/artifacts/{name}")).await;

        // Assert
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
        assert!(
            !body.contains("root:") && !body.contains("SQLite") && !body.contains("[pipelines"),
            "{name}: {body}"
        );
    }
}

// ---- ids ---------------------------------------------------------------------------

#[tokio::test]
async fn dot_ids_are_refused_on_create_ingest_and_rest() {
    // Arrange
    let app = spawn_app(worker_app()).await;
    let event = json!({"type": "status", "data": {"status": "running"}, "projectId": "p1"});

    for id in [".", "..", ".hidden"] {
        // Act + Assert: as a project id,
        let message = assert_error(app.post_job(id, "quick").await, StatusCode::BAD_REQUEST).await;
        assert!(message.contains("invalid projectId"), "{id}: {message}");
        let message = assert_error(
            ingest(
                &app,
                "w",
                &json!({"type": "status", "data": {"status": "running"}, "projectId": id}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains("projectId"), "{id}: {message}");
        // and as a job id, sent without a client's path clean-up.
        let (status, body) = raw(
            &app,
            "POST",
            &format!("/api/jobs/{id}/events"),
            &event.to_string(),
        )
        .await;
        assert_eq!(status, 400, "ingest {id}: {body}");
        assert!(body.contains("invalid job id"), "ingest {id}: {body}");
        for (method, route) in [
            ("GET", format!("/api/jobs/{id}")),
            ("GET", format!("/api/jobs/{id}/events")),
            ("GET", format!("/api/jobs/{id}/log")),
            ("GET", format!("/api/jobs/{id}/artifacts/x.txt")),
            ("POST", format!("/api/jobs/{id}/cancel")),
        ] {
            let (status, body) = raw(&app, method, &route, "").await;
            assert_eq!(status, 400, "{method} {route}: {body}");
            assert!(body.contains("invalid job id"), "{method} {route}: {body}");
        }
    }
}

#[tokio::test]
async fn retention_of_a_dot_job_cannot_remove_other_jobs_files() {
    // Arrange: finished jobs expire after about 1.7 s, swept every second; a long
    // job keeps running meanwhile.
    let app = spawn_app(
        worker_app()
            .env("RETENTION_DAYS", "0.00002")
            .env("RETENTION_INTERVAL_SECS", "1"),
    )
    .await;
    let running = app.start_job("p1", "slow").await;
    let running_dir = app.data_dir.join("jobs").join(&running);
    app.wait_job(&running, FINISH, "it runs", |job| {
        job["status"] == "building"
    })
    .await;
    assert!(running_dir.is_dir());

    // Act: a worker job named "." that finishes at once.
    let batch = json!([
        {"type": "status", "data": {"status": "running"}, "projectId": "p1"},
        {"type": "complete", "data": {"status": "completed"}},
    ]);
    let (status, body) = raw(&app, "POST", "/api/jobs/./events", &batch.to_string()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Assert
    assert_eq!(status, 400, "{body}");
    assert!(
        running_dir.is_dir(),
        "the running job's folder was removed by the sweep"
    );
    app.cancel(&running).await;
}

// ---- tokens ------------------------------------------------------------------------

#[tokio::test]
async fn tokens_not_valid_yet_are_401() {
    // Arrange
    let app = spawn_app(jwt_app()).await;
    let now = jsonwebtoken::get_current_timestamp();
    let later = token(json!({"sub": "a", "nbf": now + 3600}));
    let valid = token(json!({"sub": "a", "nbf": now - 5}));

    // Act
    let refused = app
        .client
        .get(app.url("/api/jobs"))
        .bearer_auth(&later)
        .send()
        .await
        .unwrap();
    let accepted = app
        .client
        .get(app.url("/api/jobs"))
        .bearer_auth(&valid)
        .send()
        .await
        .unwrap();

    // Assert
    let message = assert_error(refused, StatusCode::UNAUTHORIZED).await;
    assert!(message.contains("authentication"), "{message}");
    assert_eq!(accepted.status(), StatusCode::OK);
}

// ---- restricted users --------------------------------------------------------------

#[tokio::test]
async fn restricted_users_get_the_same_answer_for_foreign_and_unknown_jobs() {
    // Arrange: a finished job in another project, and one in the user's own.
    let app = spawn_app(jwt_app()).await;
    let admin = token(json!({"sub": "root", "role": "admin"}));
    let user = token(json!({"sub": "u", "role": "builder", "projects": ["mine"]}));
    let start = |project: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let response = app
                .client
                .post(app.url("/api/jobs"))
                .bearer_auth(admin)
                .json(&json!({"projectId": project, "pipeline": "quick"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let body: Value = response.json().await.unwrap();
            body["jobId"].as_str().unwrap().to_owned()
        }
    };
    let foreign = start("theirs").await;
    let own = start("mine").await;
    let unknown = "no-such-job-0000";
    let send = |method: &'static str, route: String, token: String| {
        let app = &app;
        async move {
            let request = match method {
                "GET" => app.client.get(app.url(&route)),
                _ => app.client.post(app.url(&route)),
            };
            let response = request.bearer_auth(token).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    for id in [&foreign, &own] {
        loop {
            let (_, body) = send("GET", format!("/api/jobs/{id}"), admin.clone()).await;
            if !serde_json::from_str::<Value>(&body).unwrap()["finishedAt"].is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    for route in [
        "GET /api/jobs/{id}",
        "GET /api/jobs/{id}/events",
        "GET /api/jobs/{id}/log",
        "GET /api/jobs/{id}/lines?around=3",
        "GET /api/jobs/{id}/search?q=build",
        "GET /api/jobs/{id}/artifacts/result.txt",
        "POST /api/jobs/{id}/cancel",
    ] {
        let (method, path) = route.split_once(' ').unwrap();

        // Act
        let (foreign_status, foreign_body) =
            send(method, path.replace("{id}", &foreign), user.clone()).await;
        let (unknown_status, unknown_body) =
            send(method, path.replace("{id}", unknown), user.clone()).await;
        let (own_status, _) = send(method, path.replace("{id}", &own), user.clone()).await;
        let (admin_status, _) = send(method, path.replace("{id}", &foreign), admin.clone()).await;

        // Assert: only the id differs; the user's own job and an admin get the truth.
        assert_eq!(
            foreign_status,
            StatusCode::NOT_FOUND,
            "{route}: {foreign_body}"
        );
        assert_eq!(unknown_status, foreign_status, "{route}");
        assert_eq!(
            foreign_body.replace(&foreign, "<id>"),
            unknown_body.replace(unknown, "<id>"),
            "{route}"
        );
        assert_ne!(own_status, StatusCode::NOT_FOUND, "{route}");
        assert_ne!(admin_status, StatusCode::NOT_FOUND, "{route}");
    }
}
