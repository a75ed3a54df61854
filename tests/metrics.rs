//! `GET /metrics` after a scripted scenario, parsed with a real Prometheus text
//! parser (`prometheus-parse`): three clients over both transports, a refused
//! token at Socket.IO, a gateway and REST, a connection over the per-user limit
//! at Socket.IO and a gateway, two builds (one fails), a resume with `since`. Each counter must have
//! the exact value the scenario implies. The clients are socket.io-client in
//! Node (`tests/e2e/metrics-scenario.mjs`), against the real binary.

#[path = "support/npm.rs"]
mod npm;
#[path = "support/server.rs"]
mod server;
#[path = "support/skip.rs"]
mod skip;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use serde_json::Value as Json;

const SECRET: &str = "metrics-test-secret-long-enough-for-hs256";
const TOKEN: &str = "metrics-scrape-token-0123456789";

const PIPELINES: &str = r#"
[pipelines.ok]
description = "succeeds after a few lines"
timeout = "60s"
[pipelines.ok.steps]
prepare = "sleep 0.5; echo preparing"
build = "for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.05; done"

[pipelines.bad]
description = "fails in its build step"
timeout = "60s"
[pipelines.bad.steps]
prepare = "sleep 0.5; echo preparing"
build = "echo 'about to fail'; exit 3"
"#;

fn e2e_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "one sample {name}{labels:?}, got {:?}",
        matching.iter().map(|s| &s.labels).collect::<Vec<_>>()
    );
    match &matching[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// The sum of every sample `name` (all label values).
fn total(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a number: {other:?}"),
        })
        .sum()
}

/// The number of observations of histogram `name`, over every label value.
fn observations(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .map_or(0.0, |b| b.count),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

fn count(counts: &Json, client: &str, event: &str) -> f64 {
    counts[client][event].as_f64().unwrap_or(0.0)
}

#[tokio::test]
async fn every_counter_moves_as_the_scenario_implies() {
    // Installs the e2e suite's packages if this runs before `tests/node_e2e.rs` did.
    if !npm::ensure_installed(&e2e_dir()) {
        return skip::missing(
            "the metrics scenario",
            "tests/e2e/node_modules (npm ci in tests/e2e)",
        );
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pipelines = dir.path().join("pipelines.toml");
    std::fs::write(&pipelines, PIPELINES).expect("the pipelines file");
    let mut server = server::start(
        dir.path(),
        [
            ("HOST", OsString::from("127.0.0.1")),
            ("DATA_DIR", dir.path().join("data").into_os_string()),
            ("PIPELINES_FILE", pipelines.into_os_string()),
            ("AUTH_MODE", "jwt".into()),
            ("JWT_SECRET", SECRET.into()),
            ("METRICS_TOKEN", TOKEN.into()),
            ("MAX_CONNECTIONS_PER_USER", "3".into()),
            ("RUST_LOG", "buildcast=info".into()),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let url = server.address.clone();

    // Without the token: 401 with a JSON error.
    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(refused.status(), 401);

    let run = tokio::process::Command::new("node")
        .arg(e2e_dir().join("metrics-scenario.mjs"))
        .arg(&url)
        .arg(SECRET)
        .current_dir(e2e_dir())
        .output()
        .await
        .expect("node runs the scenario");
    assert!(
        run.status.success(),
        "the scenario failed: {}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
        server.output()
    );
    let seen: Json = serde_json::from_slice(&run.stdout).expect("the scenario's JSON");
    assert_eq!(seen["refused"], "Authentication error", "{seen}");
    assert_eq!(
        seen["gatewayRefused"],
        serde_json::json!({"code": 4001, "reason": "Authentication failed"})
    );
    assert_eq!(seen["restRefused"], 401);
    assert_eq!(
        seen["gatewayFull"],
        serde_json::json!({"code": 1008, "reason": "Too many connections"})
    );
    assert_eq!(seen["socketFull"], "Too many connections", "{seen}");
    assert_eq!(seen["acks"], serde_json::json!([true, true, true, true]));
    assert_eq!(seen["resume"]["recovered"], true, "{seen}");
    assert_eq!(seen["jobs"]["ok"]["status"], "completed");
    assert_eq!(seen["jobs"]["bad"]["status"], "failed");
    let last_ok = seen["jobs"]["ok"]["lastSeq"].as_f64().expect("lastSeq");
    let last_bad = seen["jobs"]["bad"]["lastSeq"].as_f64().expect("lastSeq");

    let text = http
        .get(format!("{url}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics with the token")
        .text()
        .await
        .expect("the metrics text");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    let _ = server.stop(Duration::from_secs(15));

    // Connections: two WebSocket clients, one long-polling, all Engine.IO 4, all gone.
    let connects = "buildcast_socketio_connects_total";
    assert_eq!(
        value(
            &scrape,
            connects,
            &[("transport", "websocket"), ("eio", "4")]
        ),
        2.0
    );
    assert_eq!(
        value(&scrape, connects, &[("transport", "polling"), ("eio", "4")]),
        1.0
    );
    assert_eq!(total(&scrape, "buildcast_socketio_disconnects_total"), 3.0);
    assert_eq!(total(&scrape, "buildcast_socketio_connections"), 0.0);
    // Refusals: a bad token at three doors, a fourth connection at two.
    let auth = "buildcast_auth_refusals_total";
    for endpoint in ["socketio", "gateway_jobs", "http"] {
        assert_eq!(
            value(
                &scrape,
                auth,
                &[("endpoint", endpoint), ("reason", "bad_signature")]
            ),
            1.0,
            "{endpoint}"
        );
    }
    assert_eq!(total(&scrape, auth), 3.0);
    let limits = "buildcast_limit_refusals_total";
    for endpoint in ["socketio", "gateway_jobs"] {
        assert_eq!(
            value(
                &scrape,
                limits,
                &[
                    ("endpoint", endpoint),
                    ("limit", "max_connections_per_user")
                ]
            ),
            1.0,
            "{endpoint}"
        );
    }
    assert_eq!(total(&scrape, limits), 2.0);

    // Subscriptions: a project, two jobs, one resume.
    let acks = "buildcast_subscribe_acks_total";
    assert_eq!(
        value(&scrape, acks, &[("kind", "project"), ("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        value(&scrape, acks, &[("kind", "job"), ("outcome", "ok")]),
        3.0
    );
    assert_eq!(total(&scrape, acks), 4.0);
    assert_eq!(
        value(
            &scrape,
            "buildcast_replays_total",
            &[("recovered", "true"), ("reason", "none")]
        ),
        1.0
    );
    assert_eq!(total(&scrape, "buildcast_replays_total"), 1.0);
    assert_eq!(
        value(&scrape, "buildcast_replayed_events_total", &[]),
        last_ok - 2.0
    );

    // Events: every event of both jobs came from the runner; one error, two ends.
    let recorded = "buildcast_events_recorded_total";
    assert_eq!(total(&scrape, recorded), last_ok + last_bad);
    assert_eq!(
        value(
            &scrape,
            recorded,
            &[("kind", "completed"), ("source", "runner")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &scrape,
            recorded,
            &[("kind", "error"), ("source", "runner")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "buildcast_log_bytes_total",
            &[("source", "runner")]
        ),
        seen["logBytes"].as_f64().expect("logBytes")
    );

    // Deliveries: what the clients received live, event by event.
    let counts = &seen["counts"];
    let emits = "buildcast_socketio_emits_total";
    for event in ["job:progress", "job:log", "job:error", "job:completed"] {
        let live = count(counts, "c1", event) + count(counts, "c2", event);
        let got = scrape
            .samples
            .iter()
            .find(|s| s.metric == emits && s.labels.get("event") == Some(event));
        let got = got.map_or(0.0, |s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("{emits} is a counter"),
        });
        assert_eq!(got, live, "{emits}{{event={event}}}: {counts}");
    }
    // Each job room held one socket: one worker's fan-out per event it got live.
    let live_job_events: f64 = ["job:progress", "job:log", "job:error", "job:completed"]
        .iter()
        .map(|e| count(counts, "c1", e) + count(counts, "c2", e))
        .sum();
    assert_eq!(
        observations(&scrape, "buildcast_fanout_duration_seconds"),
        live_job_events,
        "one timed fan-out per event and room share"
    );
    for event in ["project:progress", "project:completed"] {
        assert_eq!(
            value(&scrape, emits, &[("event", event)]),
            count(counts, "c3", event),
            "{event}: {counts}"
        );
    }
    assert_eq!(
        value(&scrape, "buildcast_catch_ups_total", &[("kind", "job")]),
        0.0
    );
    assert_eq!(value(&scrape, "buildcast_sockets_dropped_total", &[]), 0.0);

    // Runner: one completed, one failed, both waited and ran.
    let finished = "buildcast_jobs_finished_total";
    assert_eq!(value(&scrape, finished, &[("status", "completed")]), 1.0);
    assert_eq!(value(&scrape, finished, &[("status", "failed")]), 1.0);
    assert_eq!(observations(&scrape, "buildcast_job_duration_seconds"), 2.0);
    assert_eq!(
        observations(&scrape, "buildcast_job_queue_wait_seconds"),
        2.0
    );
    assert_eq!(total(&scrape, "buildcast_jobs"), 0.0);

    // Store: batches committed, none failed, nothing waiting.
    assert!(value(&scrape, "buildcast_store_batches_total", &[]) >= 1.0);
    assert_eq!(total(&scrape, "buildcast_store_errors_total"), 0.0);
    assert_eq!(value(&scrape, "buildcast_store_queue_events", &[]), 0.0);

    // Process.
    assert_eq!(
        value(
            &scrape,
            "buildcast_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(value(&scrape, "buildcast_uptime_seconds", &[]) > 0.0);
    assert!(value(&scrape, "buildcast_process_resident_memory_bytes", &[]) > 0.0);
}

/// A redis-server of its own on a free port, killed when dropped.
struct Redis {
    child: std::process::Child,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let redis = Redis {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(redis)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Json {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// Polls `url` until `done` holds for its JSON body (20 s at most).
async fn wait_json(http: &reqwest::Client, url: &str, done: impl Fn(&Json) -> bool) -> Json {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = get_json(http, url).await;
        if done(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never matched: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

fn source(scrape: &Scrape, source: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "buildcast_events_recorded_total" && s.labels.get("source") == Some(source)
        })
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("a counter"),
        })
        .sum()
}

#[tokio::test]
async fn cluster_and_worker_counters_add_up_on_both_nodes() {
    let Some(redis) = start_redis() else {
        return skip::missing("the cluster metrics", "redis-server");
    };
    const WORKER: &str = "metrics-worker-token-0123456789";
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pipelines = dir.path().join("pipelines.toml");
    std::fs::write(&pipelines, PIPELINES).expect("the pipelines file");
    let node = |name: &str| {
        server::start(
            dir.path(),
            [
                ("HOST", OsString::from("127.0.0.1")),
                ("DATA_DIR", dir.path().join(name).into_os_string()),
                ("PIPELINES_FILE", pipelines.clone().into_os_string()),
                ("REDIS_URL", redis.url.clone().into()),
                ("NODE_ID", name.into()),
                ("WORKER_TOKEN", WORKER.into()),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let (mut a, mut b) = (node("node-a"), node("node-b"));
    let http = reqwest::Client::new();
    for n in [&a, &b] {
        wait_json(&http, &format!("{}/ready", n.address), |r| {
            r["status"] == "ready"
        })
        .await;
    }

    // A build on A.
    let created: Json = http
        .post(format!("{}/api/jobs", a.address))
        .json(&serde_json::json!({ "projectId": "cluster", "pipeline": "ok" }))
        .send()
        .await
        .expect("POST /api/jobs")
        .json()
        .await
        .expect("JSON");
    let build = created["jobId"].as_str().expect("jobId").to_owned();
    // A worker over REST (on A), and one over Redis (whichever node claims it).
    let rest: Json = http
        .post(format!("{}/api/jobs/w-rest-1/events", a.address))
        .bearer_auth(WORKER)
        .json(&serde_json::json!([
            { "type": "status", "data": { "status": "running" }, "projectId": "cluster" },
            { "type": "log", "data": { "log_line": "hello from a worker\n" } },
            { "type": "complete", "data": { "status": "completed", "message": "done" } },
        ]))
        .send()
        .await
        .expect("POST events")
        .json()
        .await
        .expect("JSON");
    assert!(rest["lastSeq"].as_u64().is_some(), "{rest}");
    let client = redis::Client::open(redis.url.as_str()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    for message in [
        serde_json::json!({ "type": "status", "data": { "status": "running" }, "projectId": "cluster" }),
        serde_json::json!({ "type": "log", "data": { "log_line": "hello over redis\n" } }),
        serde_json::json!({ "type": "complete", "data": { "status": "completed" } }),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("job:w-redis-1:updates")
            .arg(message.to_string())
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every job ends on both nodes with the same last seq.
    let mut last = HashMap::new();
    for job in [build.as_str(), "w-rest-1", "w-redis-1"] {
        let on_a = wait_json(&http, &format!("{}/api/jobs/{job}", a.address), |j| {
            j["status"] == "completed"
        })
        .await;
        let seq = on_a["lastSeq"].as_f64().expect("lastSeq");
        wait_json(&http, &format!("{}/api/jobs/{job}", b.address), |j| {
            j["status"] == "completed" && j["lastSeq"].as_f64() == Some(seq)
        })
        .await;
        last.insert(job.to_owned(), seq);
    }
    let all: f64 = last.values().sum();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sa, sb) = (
        scrape(&http, &a.address).await,
        scrape(&http, &b.address).await,
    );
    let _ = a.stop(Duration::from_secs(15));
    let _ = b.stop(Duration::from_secs(15));

    // Each node holds every event once: recorded here, or mirrored (B runs
    // nothing, so it mirrors at least A's build).
    assert!(source(&sb, "mirror") >= last[&build]);
    assert_eq!(source(&sa, "runner"), last[&build]);
    assert_eq!(source(&sb, "runner"), 0.0);
    assert_eq!(source(&sa, "worker_rest"), last["w-rest-1"]);
    assert_eq!(source(&sb, "worker_rest"), 0.0);
    assert_eq!(
        source(&sa, "worker_redis") + source(&sb, "worker_redis"),
        last["w-redis-1"]
    );
    for s in [&sa, &sb] {
        let local = source(s, "runner") + source(s, "worker_rest") + source(s, "worker_redis");
        let mirrored = source(s, "mirror");
        assert_eq!(local + mirrored, all, "every event once on each node");
        assert_eq!(
            total(s, "buildcast_cluster_mirrored_events_total"),
            mirrored
        );
        assert_eq!(
            observations(s, "buildcast_cluster_pubsub_lag_seconds"),
            mirrored
        );
        assert_eq!(total(s, "buildcast_cluster_gap_fills_total"), 0.0);
        assert_eq!(value(s, "buildcast_redis_up", &[]), 1.0);
        assert_eq!(value(s, "buildcast_cluster_publish_queue", &[]), 0.0);
        for node in ["node-a", "node-b"] {
            let age = value(
                s,
                "buildcast_cluster_heartbeat_age_seconds",
                &[("node", node)],
            );
            assert!(
                (0.0..15.0).contains(&age),
                "{node}'s heartbeat is {age} s old"
            );
        }
    }
}

#[tokio::test]
async fn a_log_cut_by_the_cap_is_counted_once() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pipelines = dir.path().join("pipelines.toml");
    std::fs::write(
        &pipelines,
        "[pipelines.long]\ndescription = \"more log than the cap\"\ntimeout = \"60s\"\n\
         [pipelines.long.steps]\nbuild = \"for i in $(seq 1 300); do echo line $i of a long log; done\"\n",
    )
    .expect("the pipelines file");
    let mut server = server::start(
        dir.path(),
        [
            ("HOST", OsString::from("127.0.0.1")),
            ("DATA_DIR", dir.path().join("data").into_os_string()),
            ("PIPELINES_FILE", pipelines.into_os_string()),
            ("MAX_LOG_BYTES_PER_JOB", "2048".into()),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let url = server.address.clone();
    let http = reqwest::Client::new();
    let created: Json = http
        .post(format!("{url}/api/jobs"))
        .json(&serde_json::json!({ "projectId": "cap", "pipeline": "long" }))
        .send()
        .await
        .expect("POST /api/jobs")
        .json()
        .await
        .expect("JSON");
    let id = created["jobId"].as_str().expect("jobId");
    wait_json(&http, &format!("{url}/api/jobs/{id}"), |j| {
        j["status"] == "completed"
    })
    .await;
    let scraped = scrape(&http, &url).await;
    let _ = server.stop(Duration::from_secs(15));
    assert_eq!(
        value(
            &scraped,
            "buildcast_log_truncations_total",
            &[("reason", "log_cap")]
        ),
        1.0
    );
    assert!(
        value(
            &scraped,
            "buildcast_log_bytes_total",
            &[("source", "runner")]
        ) > 2048.0,
        "every line's bytes are counted, kept or not"
    );
}
