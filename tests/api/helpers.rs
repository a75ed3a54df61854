//! Shared set-up for the API tests: the real server binary, started through the
//! shared launcher (`tests/support/server.rs`) on a free port it reports itself,
//! with its own data directory and pipelines file, and a few client calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server;

/// Pipelines every test server knows unless a test brings its own.
///
/// - `quick`: a few lines in every step, writes the artifact `out/result.txt`.
/// - `fail`: its build step exits 3.
/// - `slow`: 200 lines over about ten seconds.
/// - `medium`: 15 lines over about a second and a half.
/// - `chatty`: 2,000 lines as fast as the shell prints them, build step only.
pub const DEFAULT_PIPELINES: &str = r#"
[pipelines.quick]
description = "fast pipeline with an artifact"
timeout = "60s"
artifacts = ["out/*.txt"]
[pipelines.quick.steps]
prepare = "echo preparing"
install = "echo installing"
build = """
mkdir -p out
echo 'build line 1'
echo 'build line 2'
echo 'build line 3'
echo "result of $BUILDCAST_JOB_ID" > out/result.txt
"""
test = "echo 'tests passed'"

[pipelines.fail]
description = "fails in its build step"
timeout = "60s"
[pipelines.fail.steps]
prepare = "echo preparing"
build = """
echo 'compiling'
echo 'error: boom' >&2
exit 3
"""
test = "echo 'never reached'"

[pipelines.slow]
description = "200 lines over about ten seconds"
timeout = "120s"
[pipelines.slow.steps]
build = "for i in $(seq 1 200); do echo \"slow line $i\"; sleep 0.05; done"

[pipelines.medium]
description = "15 lines over about a second and a half"
timeout = "60s"
[pipelines.medium.steps]
build = "for i in $(seq 1 15); do echo \"medium line $i\"; sleep 0.1; done"

[pipelines.chatty]
description = "2000 lines at once"
timeout = "120s"
[pipelines.chatty.steps]
build = "for i in $(seq 1 2000); do echo \"chatty line $i\"; done"
"#;

/// The stdout lines of the `quick` pipeline's build step, in order.
pub const QUICK_BUILD_LINES: [&str; 3] = ["build line 1", "build line 2", "build line 3"];

/// Number of lines the `chatty` pipeline prints.
pub const CHATTY_LINES: usize = 2000;

/// How a test server is set up.
#[derive(Default)]
pub struct TestOptions {
    env: HashMap<String, String>,
    pipelines: Option<String>,
    root: Option<TempDir>,
}

impl TestOptions {
    /// Sets an environment variable of the server's configuration.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    /// Replaces the default pipelines file's contents.
    pub fn pipelines(mut self, toml: &str) -> Self {
        self.pipelines = Some(toml.to_owned());
        self
    }

    /// Reuses the folder (data directory and pipelines file) of a stopped server.
    pub fn root(mut self, root: TempDir) -> Self {
        self.root = Some(root);
        self
    }
}

/// A running server and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub port: u16,
    /// The server's `DATA_DIR`.
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    /// The server process, killed when dropped (before `root` is removed).
    server: Option<server::Server>,
    /// Holds `data/` and `pipelines.toml`; removed when dropped.
    root: Option<TempDir>,
}

/// Starts the server with `opts`, panicking if it cannot be built.
pub async fn spawn_app(opts: TestOptions) -> TestApp {
    try_spawn_app(opts).await.expect("the test server starts")
}

/// Starts the server with `opts`, or says why it could not be built.
pub async fn try_spawn_app(opts: TestOptions) -> anyhow::Result<TestApp> {
    let root = match opts.root {
        Some(root) => root,
        None => tempfile::tempdir().expect("a temporary folder"),
    };
    let data_dir = root.path().join("data");
    let pipelines_file = root.path().join("pipelines.toml");
    if let Some(toml) = &opts.pipelines {
        std::fs::write(&pipelines_file, toml).expect("writing the pipelines file");
    } else if !pipelines_file.exists() {
        std::fs::write(&pipelines_file, DEFAULT_PIPELINES).expect("writing the pipelines file");
    }

    let mut vars: HashMap<String, String> = HashMap::from([
        ("HOST".into(), "127.0.0.1".into()),
        ("PORT".into(), "0".into()),
        ("DATA_DIR".into(), data_dir.display().to_string()),
        (
            "PIPELINES_FILE".into(),
            pipelines_file.display().to_string(),
        ),
        ("SHUTDOWN_GRACE_SECS".into(), "2".into()),
    ]);
    vars.extend(opts.env);
    let cwd = root.path().to_owned();
    let server = tokio::task::spawn_blocking(move || server::start(&cwd, vars))
        .await
        .expect("the launcher did not panic")
        .map_err(anyhow::Error::msg)?;
    let port = server.port;
    Ok(TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        data_dir,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client"),
        server: Some(server),
        root: Some(root),
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET <path>`.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET is answered")
    }

    /// `POST /api/jobs` with `{projectId, pipeline}`.
    pub async fn post_job(&self, project: &str, pipeline: &str) -> Response {
        self.post_json(
            "/api/jobs",
            &json!({ "projectId": project, "pipeline": pipeline }),
        )
        .await
    }

    /// `POST <path>` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST is answered")
    }

    /// Starts a job and returns its id, asserting it was accepted.
    pub async fn start_job(&self, project: &str, pipeline: &str) -> String {
        let response = self.post_job(project, pipeline).await;
        assert_eq!(response.status(), StatusCode::CREATED, "POST /api/jobs");
        let body: Value = response.json().await.expect("JSON body");
        body["jobId"]
            .as_str()
            .expect("jobId is a string")
            .to_owned()
    }

    /// `GET /api/jobs/{id}`.
    pub async fn get_job(&self, id: &str) -> Response {
        self.get(&format!("/api/jobs/{id}")).await
    }

    /// The job's state, asserting it exists.
    pub async fn job(&self, id: &str) -> Value {
        let response = self.get_job(id).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /api/jobs/{id}");
        response.json().await.expect("JSON body")
    }

    /// `POST /api/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Response {
        self.client
            .post(self.url(&format!("/api/jobs/{id}/cancel")))
            .send()
            .await
            .expect("POST is answered")
    }

    /// Polls the job until it has `finishedAt`; panics after `timeout`.
    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        self.wait_job(id, timeout, "finishedAt is set", |job| {
            !job["finishedAt"].is_null()
        })
        .await
    }

    /// Polls the job until `done` holds; panics after `timeout`.
    pub async fn wait_job(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id}: waited {timeout:?} for {what}; last state: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One page of `GET /api/jobs/{id}/events`.
    pub async fn events(&self, id: &str, since: u64, limit: usize) -> Value {
        let response = self
            .get(&format!(
                "/api/jobs/{id}/events?since={since}&limit={limit}"
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "GET events of {id}");
        response.json().await.expect("JSON body")
    }

    /// Every recorded event of a job, paging through `/events`.
    pub async fn all_events(&self, id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let page = self.events(id, since, 1000).await;
            let events = page["events"].as_array().expect("events is an array");
            if events.is_empty() {
                return all;
            }
            all.extend(events.iter().cloned());
            since = page["nextSince"].as_u64().expect("nextSince is a number");
        }
    }

    /// `GET /api/jobs/{id}/log` as text, asserting it succeeded.
    pub async fn log(&self, id: &str) -> String {
        let response = self.get(&format!("/api/jobs/{id}/log")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET log of {id}");
        response.text().await.expect("a text body")
    }

    /// Stops the server gracefully (SIGTERM) and returns its folder, for a
    /// restart on the same data.
    pub async fn stop(mut self) -> TempDir {
        let mut server = self.server.take().expect("the server");
        let status = tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(30)))
            .await
            .expect("the launcher did not panic")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "the server stopped with {status}");
        self.root.take().expect("the folder")
    }
}

/// Asserts `response` has `status` and a JSON body `{"error": "<non-empty>"}` and
/// nothing else; returns the message.
pub async fn assert_error(response: Response, status: StatusCode) -> String {
    let actual = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("a body");
    assert_eq!(actual, status, "status; body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}; body: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("the error body is JSON");
    let fields = body.as_object().expect("the error body is an object");
    assert_eq!(fields.len(), 1, "only an error field: {body}");
    let message = body["error"].as_str().expect("error is a string");
    assert!(!message.trim().is_empty(), "the error message is empty");
    message.to_owned()
}

/// The `event` names of `events`, in order.
pub fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().expect("event is a string"))
        .collect()
}

/// The `(status, progress)` of the `job:progress` events, in order.
pub fn progress_table(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["event"] == "job:progress")
        .map(|e| {
            (
                e["data"]["phase"].as_str().expect("phase").to_owned(),
                e["data"]["progress"].as_u64().expect("progress"),
            )
        })
        .collect()
}

/// The phase table of a job that ran to success, whichever steps it has.
pub fn successful_phase_table() -> Vec<(String, u64)> {
    [
        ("queued", 0),
        ("preparing", 10),
        ("installing", 30),
        ("building", 50),
        ("building", 70),
        ("completed", 90),
        ("completed", 100),
    ]
    .into_iter()
    .map(|(p, n)| (p.to_owned(), n))
    .collect()
}

/// The messages of the `job:log` events with this `stream`, in order.
pub fn log_lines<'a>(events: &'a [Value], stream: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["event"] == "job:log" && e["data"]["stream"] == stream)
        .map(|e| e["data"]["message"].as_str().expect("message"))
        .collect()
}

/// A minimal Socket.IO client over HTTP long-polling (Engine.IO v4), enough to
/// subscribe to a job and read what the server sends.
pub struct PollingSocket {
    client: reqwest::Client,
    url: String,
    next_ack: u64,
}

/// What a Socket.IO client received.
#[derive(Debug)]
pub enum Received {
    Event(String, Value),
    Ack(u64, Value),
}

impl PollingSocket {
    /// Opens an Engine.IO session at `/ws/` and connects to the default namespace.
    pub async fn connect(app: &TestApp) -> Self {
        let base = app.url("/ws/?EIO=4&transport=polling");
        let open = app.client.get(&base).send().await.expect("handshake");
        assert_eq!(open.status(), StatusCode::OK, "Engine.IO handshake");
        let open = open.text().await.expect("handshake body");
        let handshake: Value =
            serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
                .expect("handshake JSON");
        let sid = handshake["sid"].as_str().expect("sid");
        let socket = Self {
            client: app.client.clone(),
            url: format!("{base}&sid={sid}"),
            next_ack: 1,
        };
        socket.send("40").await;
        let packets = socket.poll().await;
        assert!(
            packets.iter().any(|p| p.starts_with("40")),
            "namespace connect acknowledged: {packets:?}"
        );
        socket
    }

    async fn send(&self, packet: &str) {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(packet.to_owned())
            .send()
            .await
            .expect("POST to the socket");
        assert_eq!(response.status(), StatusCode::OK, "socket POST");
    }

    /// One long-poll: the Engine.IO packets the server had for us.
    async fn poll(&self) -> Vec<String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .expect("GET from the socket");
        assert_eq!(response.status(), StatusCode::OK, "socket GET");
        let text = response.text().await.expect("socket body");
        text.split('\u{1e}').map(str::to_owned).collect()
    }

    /// Emits `event` with `data`, asking for an acknowledgement; returns its id.
    pub async fn emit_with_ack(&mut self, event: &str, data: &Value) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(&format!("42{id}{}", json!([event, data]))).await;
        id
    }

    /// Reads until `done` holds for what was received so far, or `timeout`.
    pub async fn receive_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        while !done(&received) {
            assert!(
                Instant::now() < deadline,
                "socket: waited {timeout:?}; received {received:?}"
            );
            for packet in self.poll().await {
                if packet == "2" {
                    self.send("3").await;
                } else if let Some(event) = packet.strip_prefix("42") {
                    let array: Value = serde_json::from_str(event).expect("event JSON");
                    let name = array[0].as_str().expect("event name").to_owned();
                    received.push(Received::Event(name, array[1].clone()));
                } else if let Some(ack) = packet.strip_prefix("43") {
                    let split = ack.find('[').expect("ack data");
                    let id = ack[..split].parse().expect("ack id");
                    let data: Value = serde_json::from_str(&ack[split..]).expect("ack JSON");
                    received.push(Received::Ack(id, data[0].clone()));
                }
            }
        }
        received
    }
}
