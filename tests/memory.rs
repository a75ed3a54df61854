//! Memory stays bounded however long a build's log is: the real binary runs a job
//! printing two million lines, and the server's peak resident memory (VmHWM) is
//! checked. Its own test target, so that it runs in a process of its own.
//!
//! Run with `cargo test --test memory -- --nocapture` to see the measured figure.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Lines the build prints.
const LINES: u64 = 2_000_000;
/// Highest peak resident memory allowed for the server, in MiB. Measured: about
/// 32 MiB in a debug build; holding the whole history in memory would take
/// several hundred.
const MAX_PEAK_MIB: u64 = 96;
/// Debug builds are slow; a release build needs a fraction of this.
const FINISH_WITHIN: Duration = Duration::from_secs(300);

const PIPELINES: &str = r#"
[pipelines.huge]
description = "two million log lines"
timeout = "10m"
[pipelines.huge.steps]
build = "seq 1 2000000"
"#;

#[path = "support/server.rs"]
mod server;

/// The server process (the shared launcher's); killed if a test ends without
/// stopping it.
struct Server {
    inner: server::Server,
    address: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let pipelines = dir.join("pipelines.toml");
        std::fs::write(&pipelines, PIPELINES).expect("writing the pipelines file");
        let inner = server::start(
            dir,
            [
                ("HOST", "127.0.0.1".into()),
                ("DATA_DIR", dir.join("data").into_os_string()),
                ("PIPELINES_FILE", pipelines.into_os_string()),
                ("RUST_LOG", OsString::from("buildcast=info")),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let address = inner.address.clone();
        Self { inner, address }
    }

    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    fn stop(mut self) -> std::process::ExitStatus {
        self.inner
            .stop(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A field of `/proc/<pid>/status` in kB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[tokio::test]
async fn two_million_log_lines_keep_memory_bounded() {
    // Arrange
    let dir = tempfile::tempdir().expect("a temporary folder");
    let server = Server::start(dir.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client");
    let url = |path: &str| format!("{}{path}", server.address);
    let idle_kib = proc_status_kib(server.pid(), "VmHWM");

    // Act: run the build to its end.
    let started = Instant::now();
    let created: Value = client
        .post(url("/api/jobs"))
        .json(&json!({ "projectId": "memory", "pipeline": "huge" }))
        .send()
        .await
        .expect("POST /api/jobs")
        .json()
        .await
        .expect("JSON body");
    let id = created["jobId"].as_str().expect("jobId").to_owned();
    let job = loop {
        let job: Value = client
            .get(url(&format!("/api/jobs/{id}")))
            .send()
            .await
            .expect("GET the job")
            .json()
            .await
            .expect("JSON body");
        if !job["finishedAt"].is_null() {
            break job;
        }
        assert!(
            started.elapsed() < FINISH_WITHIN,
            "not finished after {FINISH_WITHIN:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let build_time = started.elapsed();
    let after_build_kib = proc_status_kib(server.pid(), "VmHWM");

    // Then read its history back, which must not load it whole either.
    let page: Value = client
        .get(url(&format!("/api/jobs/{id}/events?since=0&limit=1")))
        .send()
        .await
        .expect("GET events")
        .json()
        .await
        .expect("JSON body");
    let log = client
        .get(url(&format!("/api/jobs/{id}/log")))
        .send()
        .await
        .expect("GET log");
    assert_eq!(log.status(), reqwest::StatusCode::OK);
    let log = log.text().await.expect("the log");
    let peak_kib = proc_status_kib(server.pid(), "VmHWM");
    let exit = server.stop();

    // Assert
    eprintln!(
        "memory: VmHWM idle {} MiB, after the build {} MiB, after reading the log {} MiB \
         (build of {LINES} lines took {build_time:.1?}; /log is {} bytes)",
        idle_kib / 1024,
        after_build_kib / 1024,
        peak_kib / 1024,
        log.len(),
    );
    assert_eq!(job["status"], "completed", "{job:#}");
    assert!(
        page["lastSeq"].as_u64().is_some_and(|s| s >= LINES),
        "lastSeq {} for {LINES} lines",
        page["lastSeq"]
    );
    let first_number = log
        .lines()
        .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        first_number,
        Some("1"),
        "the log starts with the first line"
    );
    // The log cap's note takes its own seq when the job ends, so it follows the
    // last line (as tests/api/history.rs pins).
    let last_number = log
        .lines()
        .rfind(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        last_number,
        Some(LINES.to_string().as_str()),
        "the log's tail ends with the last line"
    );
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("log truncated")),
        "the truncation note comes last"
    );
    assert!(
        peak_kib / 1024 < MAX_PEAK_MIB,
        "peak resident memory {} MiB exceeds {MAX_PEAK_MIB} MiB",
        peak_kib / 1024
    );
    assert!(exit.success(), "the server exited with {exit:?} on SIGTERM");
}
