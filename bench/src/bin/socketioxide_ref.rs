//! The bare socketioxide reference: the socketioxide 0.18 server a Rust team would
//! write for buildcast's `job:log` use case, and nothing more. It shows what the
//! library itself costs, so that buildcast's own overhead (history, persistence,
//! lossless catch-up, the cluster) can be read off in the same run:
//!
//!     PORT=3004 LINE_COMMAND='...' socketioxide-ref [--port-file PATH]
//!
//! With `--port-file`, the port it listens on (`PORT=0`: any free one) is written
//! to PATH once it listens, as buildcast does.
//!
//! The same contract as the Node reference and the raw floor: `POST /api/jobs
//! {projectId, pipeline}` starts `sh -c "$LINE_COMMAND"`; each stdout line becomes
//! one `job:log` event `{jobId, projectId, stream, message, timestamp, seq}` sent to
//! the room `job:<id>` with `io.to(room).emit(..)` (socketioxide encodes it once per
//! broadcast); then `job:completed`. `subscribe:job` takes a job id or an object
//! `{jobId, since, epoch, batch}` (only `jobId` is used: no history, no batches) and
//! acknowledges `{ok: true}`. Handlers are registered in the connect middleware, so
//! they exist before the client is told it is connected.
//!
//! `WEBSOCKET_PATH`, `WEBSOCKET_PING_INTERVAL_MS` and `WEBSOCKET_PING_TIMEOUT_MS` as
//! buildcast reads them. The per-socket queue (`max_buffer_size`) is
//! `SIO_MAX_BUFFER_SIZE`, default 1,000,000 packets: large enough that no scenario
//! fills it (socketioxide drops what does not fit), memory is the limit, like Node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use buildcast_bench::sys::{iso8601_millis, now_ns, port_file_arg, raise_nofile, write_port_file};
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tokio::io::{AsyncBufReadExt, BufReader};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Log<'a> {
    job_id: &'a str,
    project_id: &'a str,
    stream: &'static str,
    message: &'a str,
    timestamp: String,
    seq: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Completed<'a> {
    job_id: &'a str,
    project_id: &'a str,
    status: &'static str,
    success: bool,
    progress: u8,
    timestamp: String,
    seq: u64,
}

struct App {
    io: SocketIo,
    line_command: String,
    next_id: AtomicU64,
}

/// Connect middleware: the event handlers, before the client gets its `40`.
async fn prepare(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.on(
        "subscribe:job",
        async |socket: SocketRef, TryData(arg): TryData<Value>, ack: AckSender| {
            let job = match &arg {
                Ok(Value::String(id)) => Some(id.as_str()),
                Ok(Value::Object(o)) => o.get("jobId").and_then(Value::as_str),
                _ => None,
            };
            match job.filter(|j| !j.is_empty()) {
                Some(job) => {
                    socket.join(format!("job:{job}"));
                    let _ = ack.send(&json!({ "ok": true }));
                }
                None => {
                    let _ = ack
                        .send(&json!({ "ok": false, "error": "jobId must be a non-empty string" }));
                }
            }
        },
    );
    socket.on(
        "unsubscribe:job",
        async |socket: SocketRef, TryData(arg): TryData<Value>, ack: AckSender| {
            if let Ok(Value::String(job)) = &arg {
                socket.leave(format!("job:{job}"));
            }
            let _ = ack.send(&json!({ "ok": true }));
        },
    );
    Ok(())
}

async fn run_job(app: Arc<App>, job: String, project: String) -> std::io::Result<()> {
    let room = format!("job:{job}");
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&app.line_command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut seq = 0u64;
    while let Some(line) = lines.next_line().await? {
        seq += 1;
        let log = Log {
            job_id: &job,
            project_id: &project,
            stream: "stdout",
            message: &line,
            timestamp: iso8601_millis(now_ns()),
            seq,
        };
        if let Err(e) = app.io.to(room.clone()).emit("job:log", &log).await {
            eprintln!("socketioxide-ref: job {job}: emit: {e}");
        }
    }
    let status = child.wait().await?;
    seq += 1;
    let done = Completed {
        job_id: &job,
        project_id: &project,
        status: if status.success() {
            "completed"
        } else {
            "failed"
        },
        success: status.success(),
        progress: 100,
        timestamp: iso8601_millis(now_ns()),
        seq,
    };
    if let Err(e) = app.io.to(room).emit("job:completed", &done).await {
        eprintln!("socketioxide-ref: job {job}: emit: {e}");
    }
    Ok(())
}

async fn create_job(app: Arc<App>, body: axum::body::Bytes) -> (StatusCode, Json<Value>) {
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "malformed JSON"})),
            );
        }
    };
    let (Some(project), Some(pipeline)) = (
        parsed.get("projectId").and_then(Value::as_str),
        parsed.get("pipeline").and_then(Value::as_str),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "projectId and pipeline must be strings"})),
        );
    };
    let job = format!("sio-{}", app.next_id.fetch_add(1, Ordering::Relaxed));
    let project = project.to_owned();
    let reply =
        json!({"jobId": job, "projectId": project, "pipeline": pipeline, "status": "queued"});
    tokio::spawn(async move {
        if let Err(e) = run_job(app, job.clone(), project).await {
            eprintln!("socketioxide-ref: job {job}: {e}");
        }
    });
    (StatusCode::CREATED, Json(reply))
}

#[tokio::main]
async fn main() {
    raise_nofile();
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = env_or("PORT", 3004);
    let (layer, io) = SocketIo::builder()
        .req_path(std::env::var("WEBSOCKET_PATH").unwrap_or_else(|_| "/ws".into()))
        .ping_interval(Duration::from_millis(env_or(
            "WEBSOCKET_PING_INTERVAL_MS",
            25_000,
        )))
        .ping_timeout(Duration::from_millis(env_or(
            "WEBSOCKET_PING_TIMEOUT_MS",
            20_000,
        )))
        .max_buffer_size(env_or("SIO_MAX_BUFFER_SIZE", 1_000_000))
        .build_layer();
    io.ns("/", (async |_: SocketRef| {}).with(prepare));
    let app = Arc::new(App {
        io,
        line_command: std::env::var("LINE_COMMAND").unwrap_or_else(|_| "echo hello".into()),
        next_id: AtomicU64::new(1),
    });
    let jobs = app.clone();
    let router = Router::new()
        .route(
            "/api/jobs",
            post(move |body: axum::body::Bytes| create_job(jobs.clone(), body)),
        )
        .route("/health", get(async || Json(json!({"status": "ok"}))))
        .layer(layer);
    // The listen backlog buildcast and the raw floor use (tokio's `bind` takes 1024):
    // with less, connection bursts lose SYNs and clients wait out the 1 s retransmit.
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().expect("HOST:PORT");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind HOST:PORT");
    let listener = socket.listen(4096).expect("listen");
    let port = listener.local_addr().expect("local address").port();
    if let Some(path) = port_file_arg() {
        write_port_file(&path, port).expect("write --port-file");
    }
    eprintln!("socketioxide-ref listening on {host}:{port}");
    axum::serve(listener, router).await.expect("serve");
}
