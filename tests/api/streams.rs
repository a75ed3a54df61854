//! Following a job without Socket.IO: Server-Sent Events, the followed plain-text
//! log and NDJSON events — every event once, in order, resumable, with the same
//! auth and connection limits as the rest of the API.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{CHATTY_LINES, TestApp, TestOptions, spawn_app};

const FINISH: Duration = Duration::from_secs(60);
const SECRET: &str = "api-test-secret-that-is-long-enough!";

/// One parsed SSE message.
#[derive(Debug, Default, Clone)]
struct Message {
    event: String,
    id: Option<String>,
    data: String,
}

/// Reads a whole SSE response (the stream must end), optionally pausing before
/// reading, as a slow client does.
async fn read_sse(response: reqwest::Response, pause: Duration) -> Vec<Message> {
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    tokio::time::sleep(pause).await;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(FINISH, body.next())
        .await
        .expect("the stream goes on")
    {
        text.push_str(std::str::from_utf8(&chunk.expect("a chunk")).expect("utf-8"));
    }
    parse_sse(&text)
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m.event.starts_with("job:"))
        .map(|m| {
            let data: Value = serde_json::from_str(&m.data).expect("JSON data");
            data["seq"].as_u64().expect("a seq")
        })
        .collect()
}

async fn stream(
    app: &TestApp,
    id: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/stream{query}")))
        .timeout(FINISH);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last);
    }
    request.send().await.expect("the stream is answered")
}

#[tokio::test]
async fn sse_carries_every_event_once_in_order_and_ends_after_completion() {
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "chatty").await;
    // Attach while the build runs.
    let messages = read_sse(stream(&app, &id, "", None).await, Duration::ZERO).await;
    let job = app.wait_finished(&id, FINISH).await;
    let last = job["lastSeq"].as_u64().unwrap();
    assert_eq!(seqs(&messages), (1..=last).collect::<Vec<_>>());
    assert_eq!(messages.last().unwrap().event, "job:completed");
    let epoch = job["epoch"].as_str().unwrap();
    for m in messages.iter().filter(|m| m.event.starts_with("job:")) {
        let data: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(m.id.as_deref(), Some(&*format!("{epoch}:{}", data["seq"])));
    }
    let logs = messages.iter().filter(|m| m.event == "job:log").count();
    assert!(logs >= CHATTY_LINES, "{logs} log lines");
}

#[tokio::test]
async fn a_slow_sse_reader_is_caught_up_from_history_without_a_gap() {
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "chatty").await;
    // The stream is open (and its tap registered) but nothing is read for a while:
    // its bounded queue overflows and it must continue from the store.
    let response = stream(&app, &id, "", None).await;
    let messages = read_sse(response, Duration::from_secs(3)).await;
    let last = app.wait_finished(&id, FINISH).await["lastSeq"]
        .as_u64()
        .unwrap();
    assert_eq!(seqs(&messages), (1..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_and_resets_on_a_wrong_epoch() {
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;
    let job = app.wait_finished(&id, FINISH).await;
    let last = job["lastSeq"].as_u64().unwrap();
    let epoch = job["epoch"].as_str().unwrap();

    // Resume after seq 5 of the right epoch: the rest, no reset.
    let messages = read_sse(
        stream(&app, &id, "", Some(&format!("{epoch}:5"))).await,
        Duration::ZERO,
    )
    .await;
    assert!(messages.iter().all(|m| m.event != "reset"));
    assert_eq!(seqs(&messages), (6..=last).collect::<Vec<_>>());

    // The same through the query.
    let messages = read_sse(
        stream(&app, &id, &format!("?since=5&epoch={epoch}"), None).await,
        Duration::ZERO,
    )
    .await;
    assert_eq!(seqs(&messages), (6..=last).collect::<Vec<_>>());

    // A wrong epoch: reset (first), then the whole history.
    let messages = read_sse(
        stream(&app, &id, "", Some("another-epoch:5")).await,
        Duration::ZERO,
    )
    .await;
    let resets: Vec<_> = messages.iter().filter(|m| m.event == "reset").collect();
    assert_eq!(resets.len(), 1);
    assert_eq!(messages[0].event, "reset");
    let reset: Value = serde_json::from_str(&resets[0].data).unwrap();
    assert_eq!(reset["recovered"], json!(false));
    assert_eq!(reset["epoch"], json!(epoch));
    assert!(reset["reason"].as_str().unwrap().contains("epoch"));
    assert_eq!(seqs(&messages), (1..=last).collect::<Vec<_>>());

    // Beyond the last seq: reset too.
    let messages = read_sse(
        stream(
            &app,
            &id,
            &format!("?since={}&epoch={epoch}", last + 10),
            None,
        )
        .await,
        Duration::ZERO,
    )
    .await;
    assert_eq!(messages[0].event, "reset");
    assert_eq!(seqs(&messages), (1..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn sse_batch_sends_log_runs_and_follow_0_ends_with_the_history() {
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "chatty").await;
    let last = app.wait_finished(&id, FINISH).await["lastSeq"]
        .as_u64()
        .unwrap();
    let messages = read_sse(stream(&app, &id, "?batch=1", None).await, Duration::ZERO).await;
    let mut all = Vec::new();
    for m in &messages {
        let data: Value = serde_json::from_str(&m.data).unwrap();
        match m.event.as_str() {
            "job:logs" => {
                let run = data.as_array().unwrap();
                assert!(!run.is_empty());
                let last_of_run = run.last().unwrap()["seq"].as_u64().unwrap();
                assert!(m.id.as_ref().unwrap().ends_with(&format!(":{last_of_run}")));
                all.extend(run.iter().map(|e| e["seq"].as_u64().unwrap()));
            }
            name if name.starts_with("job:") => all.push(data["seq"].as_u64().unwrap()),
            _ => {}
        }
    }
    assert_eq!(all, (1..=last).collect::<Vec<_>>());
    assert!(messages.iter().filter(|m| m.event == "job:logs").count() < 100);

    // A running job with follow=0: what is recorded so far, then the end.
    let id = app.start_job("p1", "slow").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = tokio::time::timeout(
        Duration::from_secs(5),
        read_sse(stream(&app, &id, "?follow=0", None).await, Duration::ZERO),
    )
    .await
    .expect("follow=0 ends before the job");
    let got = seqs(&messages);
    assert!(!got.is_empty());
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn ndjson_follow_streams_contiguous_events() {
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "medium").await;
    let response = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/events?follow=1")))
        .header("Accept", "application/x-ndjson")
        .timeout(FINISH)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let last = app.job(&id).await["lastSeq"].as_u64().unwrap();
    let got: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, (1..=last).collect::<Vec<_>>());
    assert_eq!(lines.last().unwrap()["event"], "job:completed");
    assert_eq!(lines[0]["data"]["seq"], json!(1));

    // format=ndjson with since, on the finished job.
    let text = app
        .get(&format!("/api/jobs/{id}/events?format=ndjson&since=3"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        text.lines()
            .next()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].clone()),
        Some(json!(4))
    );
    // The paged JSON answer is unchanged.
    let page = app.events(&id, 0, 5).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn the_followed_log_has_its_options_and_the_plain_log_is_unchanged() {
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "medium").await;
    let response = app
        .get(&format!("/api/jobs/{id}/log?follow=1&timestamps=1"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-buildcast-last-seq"));
    assert!(response.headers().contains_key("x-buildcast-epoch"));
    let followed = response.text().await.unwrap();
    let plain = app.log(&id).await;
    let stripped: Vec<&str> = followed
        .lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').unwrap();
            assert!(
                time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                    .is_ok(),
                "{ts}"
            );
            rest
        })
        .collect();
    assert_eq!(stripped, plain.lines().collect::<Vec<_>>());
    assert!(plain.contains("medium line 15"));

    let tail = app
        .get(&format!("/api/jobs/{id}/log?tail=3"))
        .await
        .text()
        .await
        .unwrap();
    let all: Vec<&str> = plain.lines().collect();
    assert_eq!(tail.lines().collect::<Vec<_>>(), all[all.len() - 3..]);

    // seqs=1 and since: a script resumes after the last seq it printed.
    let numbered = app
        .get(&format!("/api/jobs/{id}/log?seqs=1"))
        .await
        .text()
        .await
        .unwrap();
    let third: u64 = numbered
        .lines()
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rest = app
        .get(&format!("/api/jobs/{id}/log?since={third}"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rest.lines().collect::<Vec<_>>(), all[3..]);
}

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(jsonwebtoken::get_current_timestamp() + 600);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn streams_have_the_rest_api_auth_and_connection_limits() {
    let app = spawn_app(
        TestOptions::default()
            .env("AUTH_MODE", "jwt")
            .env("JWT_SECRET", SECRET)
            .env("MAX_CONNECTIONS_PER_USER", "1"),
    )
    .await;
    let builder = token(json!({ "sub": "b", "role": "builder" }));
    let id = app
        .client
        .post(app.url("/api/jobs"))
        .bearer_auth(&builder)
        .json(&json!({ "projectId": "p1", "pipeline": "slow" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let paths = [
        format!("/api/jobs/{id}/stream"),
        format!("/api/jobs/{id}/log?follow=1"),
        format!("/api/jobs/{id}/events?follow=1&format=ndjson"),
        "/api/projects/p1/stream".to_owned(),
    ];
    let foreign = token(json!({ "sub": "r", "projects": ["p2"] }));
    for path in &paths {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let restricted = app
            .client
            .get(app.url(path))
            .bearer_auth(&foreign)
            .send()
            .await
            .unwrap();
        assert_eq!(restricted.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Token in the query (what EventSource can send), and the per-user limit.
    let viewer = token(json!({ "sub": "v", "projects": ["p1"] }));
    let first = app
        .get(&format!("/api/jobs/{id}/stream?token={viewer}"))
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = app
        .client
        .get(app.url(&paths[1]))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
    // The slot is released once the stream is dropped.
    let mut again = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..50 {
        again = app
            .client
            .get(app.url(&paths[3]))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap()
            .status();
        if again == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again, StatusCode::OK);
}

#[tokio::test]
async fn a_project_stream_starts_with_a_snapshot_then_carries_project_events() {
    let app = spawn_app(TestOptions::default()).await;
    let response = app
        .client
        .get(app.url("/api/projects/p7/stream"))
        .timeout(FINISH)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = app.start_job("p7", "quick").await;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: project:completed") {
        let chunk = tokio::time::timeout(FINISH, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.find("event: snapshot").unwrap() < text.find("event: project:progress").unwrap());
    assert!(text.contains(&id));
    assert!(!text.contains("event: job:log"));
}

/// Lines the `flood` pipeline prints, each about 400 bytes: far more than the
/// kernel's socket buffers hold, so a reader that stops reading stalls its stream.
const FLOOD_LINES: u64 = 30_000;

fn flood_pipelines() -> String {
    format!(
        "{}\n[pipelines.flood]\ndescription = \"{FLOOD_LINES} long lines at once\"\ntimeout = \"120s\"\n[pipelines.flood.steps]\nbuild = \"pad=$(printf '%0400d' 0); for i in $(seq 1 {FLOOD_LINES}); do echo \\\"flood line $i $pad\\\"; done\"\n",
        crate::helpers::DEFAULT_PIPELINES
    )
}

/// This process's resident memory in KiB (the server runs in it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Parses the SSE messages of a whole body.
fn parse_sse(text: &str) -> Vec<Message> {
    let mut out = Vec::new();
    let mut current = Message::default();
    for line in text.split('\n') {
        if line.is_empty() {
            if !current.event.is_empty() || !current.data.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if let Some(v) = line.strip_prefix("event: ") {
            current.event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("id: ") {
            current.id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            current.data.push_str(v);
        }
    }
    out
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&body[..end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        body = &body[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_overflows_its_queue_and_catches_up_without_holding_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app(
        TestOptions::default()
            .env("STREAM_QUEUE_EVENTS", "8")
            .pipelines(&flood_pipelines()),
    )
    .await;
    let health = app.get("/health").await.json::<Value>().await.unwrap();
    assert_eq!(health["delivery"]["stream_catch_ups"], json!(0));
    let before = rss_kib();

    let id = app.start_job("p1", "flood").await;
    // A client that sends its request and then reads nothing, through a small
    // receive buffer: the server's writes stop, the stream's queue fills.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().unwrap())
        .await
        .unwrap();
    stalled
        .write_all(
            format!(
                "GET /api/jobs/{id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Its queue overflows while the flood goes on (it is the only stream yet).
    let mut peak = before;
    let deadline = tokio::time::Instant::now() + FINISH;
    loop {
        peak = peak.max(rss_kib());
        let health = app.get("/health").await.json::<Value>().await.unwrap();
        if health["delivery"]["stream_catch_ups"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled stream's queue never overflowed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another reader, reading all along: the stalled one does not hold it up.
    let mut other = Some(tokio::spawn(read_sse(
        stream(&app, &id, "", None).await,
        Duration::ZERO,
    )));
    let mut other_messages = Vec::new();
    let catch_ups = loop {
        peak = peak.max(rss_kib());
        if let Some(task) = other.as_mut().filter(|t| t.is_finished()) {
            other_messages = task.await.unwrap();
            other = None;
        }
        let health = app.get("/health").await.json::<Value>().await.unwrap();
        let catch_ups = health["delivery"]["stream_catch_ups"].as_u64().unwrap();
        let status = app.job(&id).await["status"].as_str().unwrap().to_owned();
        if other.is_none() && (status == "completed" || status == "failed") {
            break catch_ups;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status {status}, other reader done: {}",
            other.is_none()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let job = app.job(&id).await;
    assert_eq!(job["status"], json!("completed"));
    let last = job["lastSeq"].as_u64().unwrap();
    assert!(last > FLOOD_LINES, "{last}");
    eprintln!(
        "RSS of the test process (server in-process): {before} KiB before the flood, at most {peak} KiB while a stream stalled; {catch_ups} stream catch-ups"
    );
    // The flood is about 12 MB of events: a stalled stream holds 8 of them plus
    // a page of history, not the flood.
    assert!(
        peak - before < 64 * 1024,
        "RSS grew by {} KiB while a stream stalled",
        peak - before
    );
    assert_eq!(seqs(&other_messages), (1..=last).collect::<Vec<_>>());

    // The stalled reader reads again: everything, once, in order.
    let mut raw = Vec::new();
    tokio::time::timeout(FINISH, stalled.read_to_end(&mut raw))
        .await
        .expect("the stalled stream ends")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response headers");
    let head = std::str::from_utf8(&raw[..split])
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[split + 4..])
    } else {
        raw[split + 4..].to_vec()
    };
    let messages = parse_sse(std::str::from_utf8(&body).unwrap());
    assert_eq!(seqs(&messages), (1..=last).collect::<Vec<_>>());
    assert_eq!(messages.last().unwrap().event, "job:completed");
}

#[tokio::test]
async fn sse_resumed_across_a_cut_history_resets_then_sends_what_is_kept() {
    // The log cap drops the middle of a long log from history.
    let app = spawn_app(TestOptions::default().env("MAX_LOG_BYTES_PER_JOB", "20000")).await;
    let id = app.start_job("p1", "chatty").await;
    let job = app.wait_finished(&id, FINISH).await;
    let epoch = job["epoch"].as_str().unwrap();
    let kept: Vec<u64> = app
        .all_events(&id)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().expect("a seq"))
        .collect();
    let hole = (1..)
        .find(|seq| !kept.contains(seq))
        .expect("the cap dropped the middle");

    // Resume from just before the hole: what it asks for no longer exists.
    let messages = read_sse(
        stream(&app, &id, "", Some(&format!("{epoch}:{}", hole - 1))).await,
        Duration::ZERO,
    )
    .await;
    assert_eq!(messages[0].event, "reset", "{:?}", &messages[..3]);
    let reset: Value = serde_json::from_str(&messages[0].data).unwrap();
    assert_eq!(reset["recovered"], json!(false));
    assert!(!reset["reason"].as_str().unwrap_or_default().is_empty());
    assert_eq!(seqs(&messages), kept, "the whole history as it is kept");
}
