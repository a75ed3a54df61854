//! A job's recorded history over REST: paging through `/events`, the phase table,
//! the plain-text `/log`, truncation of long logs, and retention.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use serde_json::Value;

use crate::helpers::{
    CHATTY_LINES, QUICK_BUILD_LINES, TestOptions, assert_error, log_lines, progress_table,
    spawn_app, successful_phase_table,
};

const FINISH: Duration = Duration::from_secs(30);
const EVENT_NAMES: [&str; 4] = ["job:progress", "job:log", "job:error", "job:completed"];

#[tokio::test]
async fn events_page_through_every_seq_without_a_gap() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;
    let job = app.wait_finished(&id, FINISH).await;
    let last_seq = job["lastSeq"].as_u64().expect("lastSeq");

    // Act
    let mut seen = Vec::new();
    let mut since = 0;
    let mut pages = 0;
    loop {
        let page = app.events(&id, since, 5).await;
        let events = page["events"].as_array().expect("events").clone();
        pages += 1;
        assert!(pages < 100, "paging does not end");

        // Assert (every page)
        assert!(events.len() <= 5, "a page of {} events", events.len());
        assert_eq!(page["lastSeq"], last_seq, "{page:#}");
        assert_eq!(page["epoch"], job["epoch"], "{page:#}");
        if events.is_empty() {
            assert_eq!(page["nextSince"], since, "{page:#}");
            break;
        }
        let next = page["nextSince"].as_u64().expect("nextSince");
        assert_eq!(Some(next), events.last().and_then(|e| e["seq"].as_u64()));
        seen.extend(events);
        since = next;
    }

    // Assert
    let seqs: Vec<u64> = seen
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>());
    assert!(pages > 2, "{last_seq} events in {pages} pages of 5");
    for event in &seen {
        let name = event["event"].as_str().expect("event name");
        assert!(EVENT_NAMES.contains(&name), "{event}");
        assert_eq!(event["data"]["seq"], event["seq"], "{event}");
        assert_eq!(event["data"]["jobId"], id.as_str(), "{event}");
        assert_eq!(event["data"]["projectId"], "p1", "{event}");
        assert!(event["data"]["timestamp"].is_string(), "{event}");
    }
    let last = seen.last().expect("events");
    assert_eq!(last["event"], "job:completed", "{last}");
    assert_eq!(last["data"]["success"], true, "{last}");
    assert_eq!(
        last["data"]["artifacts"],
        serde_json::json!(["result.txt"]),
        "{last}"
    );
}

#[tokio::test]
async fn successful_jobs_walk_the_phase_table() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    // `quick` has all four steps; `medium` has only a build step.
    let quick = app.start_job("p1", "quick").await;
    let medium = app.start_job("p1", "medium").await;
    app.wait_finished(&quick, FINISH).await;
    app.wait_finished(&medium, FINISH).await;

    for id in [&quick, &medium] {
        // Act
        let events = app.all_events(id).await;

        // Assert
        assert_eq!(progress_table(&events), successful_phase_table(), "{id}");
        let statuses: Vec<&str> = events
            .iter()
            .filter(|e| e["event"] == "job:progress")
            .map(|e| e["data"]["status"].as_str().expect("status"))
            .collect();
        assert_eq!(statuses[0], "queued");
        assert_eq!(statuses.last(), Some(&"completed"));
    }
}

#[tokio::test]
async fn log_is_a_plain_text_attachment_of_every_line_in_order() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;
    let events = app.all_events(&id).await;

    // Act
    let response = app.get(&format!("/api/jobs/{id}/log")).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE].to_str().expect("ascii");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let disposition = response.headers()[CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let text = response.text().await.expect("a body");
    let lines: Vec<&str> = text.lines().collect();
    let recorded: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "job:log")
        .map(|e| e["data"]["message"].as_str().expect("message"))
        .collect();
    assert_eq!(
        lines, recorded,
        "the log holds every recorded line in order"
    );
    let stdout = log_lines(&events, "stdout");
    assert_eq!(
        stdout,
        [
            "preparing",
            "installing",
            QUICK_BUILD_LINES[0],
            QUICK_BUILD_LINES[1],
            QUICK_BUILD_LINES[2],
            "tests passed"
        ]
    );
    let build_at = lines
        .iter()
        .position(|l| *l == QUICK_BUILD_LINES[0])
        .expect("the build's first line");
    assert_eq!(lines[build_at..build_at + 3], QUICK_BUILD_LINES);
}

#[tokio::test]
async fn history_of_an_unknown_job_is_404() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;

    for path in ["/api/jobs/no-such-job/events", "/api/jobs/no-such-job/log"] {
        // Act
        let response = app.get(path).await;

        // Assert
        assert_error(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn events_query_must_be_valid() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "quick").await;

    for query in [
        "since=-1",
        "since=abc",
        "limit=x",
        "sinse=3&limit=x",
        "limit=0",
    ] {
        // Act
        let response = app.get(&format!("/api/jobs/{id}/events?{query}")).await;

        // Assert
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
}

// ---- truncation ----------------------------------------------------------------

#[tokio::test]
async fn long_log_keeps_head_and_tail_and_marks_the_cut() {
    // Arrange
    const CAP: usize = 20_000;
    let app = spawn_app(TestOptions::default().env("MAX_LOG_BYTES_PER_JOB", CAP.to_string())).await;
    let id = app.start_job("p1", "chatty").await;
    let job = app.wait_finished(&id, FINISH).await;

    // Act
    let events = app.all_events(&id).await;
    let log = app.log(&id).await;

    // Assert: the job itself is unaffected.
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(progress_table(&events), successful_phase_table());
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "job:completed")
        .collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(events.last(), Some(completed[0]), "job:completed is last");
    assert_eq!(completed[0]["data"]["success"], true);

    // The head and the tail are kept, the middle is not.
    let stdout = log_lines(&events, "stdout");
    let numbers: Vec<usize> = stdout
        .iter()
        .map(|l| {
            l.strip_prefix("chatty line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect();
    assert!(
        numbers.len() < CHATTY_LINES / 2,
        "{} lines kept",
        numbers.len()
    );
    assert_eq!(numbers.first(), Some(&1), "the first line is kept");
    assert_eq!(numbers.last(), Some(&CHATTY_LINES), "the last line is kept");
    let cut = numbers
        .windows(2)
        .position(|w| w[1] != w[0] + 1)
        .expect("a cut in the middle");
    let (head, tail) = numbers.split_at(cut + 1);
    assert_eq!(
        head,
        (1..=head.len()).collect::<Vec<_>>(),
        "head is contiguous"
    );
    let tail_start = CHATTY_LINES - tail.len() + 1;
    assert_eq!(
        tail,
        (tail_start..=CHATTY_LINES).collect::<Vec<_>>(),
        "tail is contiguous"
    );
    assert!(
        head.len() > 10 && tail.len() > 10,
        "{} + {}",
        head.len(),
        tail.len()
    );

    // Exactly one marker, naming how many lines went. It takes its own seq when
    // the job ends, after the tail: a seq that live clients got as a line is never
    // rewritten (it was the first dropped line's seq, rewritten once dropped).
    let dropped = CHATTY_LINES - head.len() - tail.len();
    let markers: Vec<&str> = log_lines(&events, "system")
        .into_iter()
        .filter(|l| l.contains("log truncated"))
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(
        markers[0].contains(&format!("{dropped} lines")),
        "{dropped} dropped lines named in {:?}",
        markers[0]
    );
    let log_lines_text: Vec<&str> = log.lines().collect();
    let marker_at = log_lines_text
        .iter()
        .position(|l| l.contains("log truncated"))
        .expect("the marker is in /log");
    assert_eq!(marker_at, log_lines_text.len() - 1, "the marker comes last");
    assert_eq!(
        log_lines_text[marker_at - 1],
        format!("chatty line {CHATTY_LINES}")
    );
    let head_end = format!("chatty line {}", head.len());
    let cut_at = log_lines_text
        .iter()
        .position(|l| *l == head_end)
        .expect("the head's last line is in /log");
    assert_eq!(
        log_lines_text[cut_at + 1],
        format!("chatty line {tail_start}"),
        "the cut in /log"
    );
    let marker_seq = events
        .iter()
        .find(|e| {
            e["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("log truncated"))
        })
        .and_then(|e| e["seq"].as_u64())
        .expect("the marker's seq");
    let tail_end_seq = events
        .iter()
        .rev()
        .find(|e| e["data"]["stream"] == "stdout")
        .and_then(|e| e["seq"].as_u64())
        .expect("the last line's seq");
    assert!(marker_seq > tail_end_seq, "the marker has a seq of its own");

    // What is stored stays within the cap, plus the marker line.
    let log_events: Vec<&Value> = events.iter().filter(|e| e["event"] == "job:log").collect();
    let stored: usize = log_events
        .iter()
        .map(|e| serde_json::to_string(&e["data"]).expect("JSON").len())
        .sum();
    let longest = log_events
        .iter()
        .map(|e| serde_json::to_string(&e["data"]).expect("JSON").len())
        .max()
        .unwrap_or(0);
    assert!(
        stored <= CAP + longest,
        "{stored} bytes of log stored with a cap of {CAP}"
    );
    assert!(log.len() <= CAP, "/log is {} bytes", log.len());
}

#[tokio::test]
async fn short_logs_are_not_truncated() {
    // Arrange
    let app = spawn_app(TestOptions::default()).await;
    let id = app.start_job("p1", "chatty").await;
    app.wait_finished(&id, FINISH).await;

    // Act
    let events = app.all_events(&id).await;

    // Assert
    let stdout = log_lines(&events, "stdout");
    assert_eq!(stdout.len(), CHATTY_LINES);
    assert_eq!(
        stdout[CHATTY_LINES - 1],
        format!("chatty line {CHATTY_LINES}")
    );
    assert!(
        !log_lines(&events, "system")
            .iter()
            .any(|l| l.contains("log truncated"))
    );
    let last_seq = app.job(&id).await["lastSeq"].as_u64().expect("lastSeq");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>());
}

// ---- retention -----------------------------------------------------------------

#[tokio::test]
async fn retention_deletes_expired_jobs_and_their_files() {
    // Arrange: keep finished jobs about 1.7 s, sweep every second.
    let app = spawn_app(
        TestOptions::default()
            .env("RETENTION_DAYS", "0.00002")
            .env("RETENTION_INTERVAL_SECS", "1"),
    )
    .await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;
    let job_dir = app.data_dir.join("jobs").join(&id);
    assert!(
        job_dir.join("artifacts").join("result.txt").is_file(),
        "the artifact is stored at first"
    );
    let finished_at = Instant::now();

    // Act: 1.7 s to expire and up to 1 s to the next sweep; allow 10 s.
    while job_dir.exists() && finished_at.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let removed_after = finished_at.elapsed();
    let mut status = app.get_job(&id).await.status();
    while status != StatusCode::NOT_FOUND
        && finished_at.elapsed() < removed_after + Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.get_job(&id).await.status();
    }

    // Assert
    assert!(
        !job_dir.exists(),
        "the job's folder is still there {removed_after:?} after the job finished"
    );
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "GET /api/jobs/{{id}} still shows the job {:?} after it finished and {:?} after its files were removed",
        finished_at.elapsed(),
        finished_at.elapsed() - removed_after,
    );
    let events = app.get(&format!("/api/jobs/{id}/events")).await;
    assert_error(events, StatusCode::NOT_FOUND).await;
    let artifact = app
        .get(&format!("/api/jobs/{id}/artifacts/result.txt"))
        .await;
    assert_error(artifact, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn retention_interval_zero_runs_no_sweep_and_keeps_every_job() {
    // Arrange: jobs expire after about 1.7 s, but RETENTION_INTERVAL_SECS=0.
    let app = spawn_app(
        TestOptions::default()
            .env("RETENTION_DAYS", "0.00002")
            .env("RETENTION_INTERVAL_SECS", "0"),
    )
    .await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;
    let artifact = app
        .data_dir
        .join("jobs")
        .join(&id)
        .join("artifacts")
        .join("result.txt");
    assert!(artifact.is_file(), "the artifact is stored");

    // Act: well past the expiry and the 1 s sweeps of the test above.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Assert
    assert!(artifact.is_file(), "the artifact was deleted");
    let job = app.job(&id).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    app.stop().await;
}

#[tokio::test]
async fn retention_keeps_running_jobs() {
    // Arrange
    let app = spawn_app(
        TestOptions::default()
            .env("RETENTION_DAYS", "0.00002")
            .env("RETENTION_INTERVAL_SECS", "1"),
    )
    .await;
    let id = app.start_job("p1", "slow").await;

    // Act: let several sweeps run while the job runs.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Assert
    let job = app.job(&id).await;
    assert!(job["finishedAt"].is_null(), "{job:#}");
    assert_eq!(job["status"], "building", "{job:#}");
    app.stop().await;
}
