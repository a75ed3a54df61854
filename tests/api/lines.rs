//! A job's log by line number and searched on the server: `GET
//! /api/jobs/{id}/lines` (from or around line N) and `GET /api/jobs/{id}/search`
//! (plain, regex, limits, escape sequences, a running job, the log cap's gap).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    CHATTY_LINES, DEFAULT_PIPELINES, TestApp, TestOptions, assert_error, spawn_app,
};

const FINISH: Duration = Duration::from_secs(60);

/// `escapes`: lines whose text a reader sees differs from what was printed
/// (colours inside words, quotes and backslashes, a carriage return).
/// `waiting`: prints two lines, then waits for a `go` file beside its workspace.
const PIPELINES: &str = r#"
[pipelines.escapes]
description = "lines with escape sequences, quotes and backslashes"
timeout = "60s"
[pipelines.escapes.steps]
build = '''
printf '\033[1;31mERR\033[0mOR: boom\n'
printf 'say "hi" \\ there\n'
printf '10%%\r50%%\r100%% done\n'
echo 'plain error: two'
'''

[pipelines.waiting]
description = "two lines, then waits for a go file (at most 30 s)"
timeout = "60s"
[pipelines.waiting.steps]
build = """
echo 'live needle one'
echo 'live needle two'
for i in $(seq 1 600); do [ -e ../go ] && break; sleep 0.05; done
echo 'after the wait'
"""
"#;

async fn app() -> TestApp {
    spawn_app(TestOptions::default().pipelines(&format!("{DEFAULT_PIPELINES}{PIPELINES}"))).await
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("JSON body")
}

/// The job's log events in order, as `/events` gives them (seq, message).
async fn log_events(app: &TestApp, id: &str) -> Vec<(u64, String)> {
    app.all_events(id)
        .await
        .into_iter()
        .filter(|e| e["event"] == "job:log")
        .map(|e| {
            (
                e["seq"].as_u64().expect("seq"),
                e["data"]["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

/// (line, seq, message) of a `/lines` page.
fn page_lines(page: &Value) -> Vec<(u64, u64, String)> {
    page["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            assert_eq!(l["data"]["seq"], l["seq"], "{l}");
            (
                l["line"].as_u64().expect("line"),
                l["seq"].as_u64().expect("seq"),
                l["data"]["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn lines_are_numbered_in_order_and_read_from_or_around_any_line() {
    // Arrange
    let app = app().await;
    let id = app.start_job("p1", "chatty").await;
    let job = app.wait_finished(&id, FINISH).await;
    let events = log_events(&app, &id).await;
    assert!(events.len() > CHATTY_LINES, "{} log events", events.len());
    let total = events.len() as u64;

    // Act
    let all = get_json(&app, &format!("/api/jobs/{id}/lines?limit=10000")).await;
    let from = get_json(&app, &format!("/api/jobs/{id}/lines?from=1000&limit=3")).await;
    let around = get_json(&app, &format!("/api/jobs/{id}/lines?around=1500&limit=10")).await;
    let tail = get_json(&app, &format!("/api/jobs/{id}/lines?from={total}")).await;
    let past = get_json(&app, &format!("/api/jobs/{id}/lines?from={}", total + 1)).await;

    // Assert: line n is the n-th log event, and every page says so.
    let expected: Vec<(u64, u64, String)> = events
        .iter()
        .enumerate()
        .map(|(k, (seq, message))| (k as u64 + 1, *seq, message.clone()))
        .collect();
    assert_eq!(page_lines(&all), expected);
    assert_eq!(page_lines(&from), expected[999..1002].to_vec());
    assert_eq!(page_lines(&around), expected[1494..1504].to_vec());
    assert_eq!(page_lines(&tail), expected[expected.len() - 1..].to_vec());
    assert_eq!(page_lines(&past), Vec::new());
    for page in [&all, &from, &around, &tail, &past] {
        assert_eq!(page["totalLines"], total, "{page}");
        assert_eq!(page["lastSeq"], job["lastSeq"]);
        assert_eq!(page["epoch"], job["epoch"]);
    }
    // Near the start, "around" starts at line 1.
    let start = get_json(&app, &format!("/api/jobs/{id}/lines?around=2&limit=10")).await;
    assert_eq!(page_lines(&start), expected[..10].to_vec());
}

#[tokio::test]
async fn bad_line_queries_are_400() {
    let app = app().await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;
    for query in [
        "from=0",
        "around=0",
        "from=3&around=5",
        "limit=0",
        "from=abc",
        "from=-1",
    ] {
        let body = assert_error(
            app.get(&format!("/api/jobs/{id}/lines?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(!body.is_empty(), "{query}");
    }
    assert_error(
        app.get("/api/jobs/no-such-job/lines").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn search_finds_lines_by_text_case_ignored_or_by_regex() {
    // Arrange
    let app = app().await;
    let id = app.start_job("p1", "chatty").await;
    app.wait_finished(&id, FINISH).await;
    let lines = page_lines(&get_json(&app, &format!("/api/jobs/{id}/lines?limit=10000")).await);
    let text_of = |line: u64| lines[line as usize - 1].2.clone();
    let search = |query: &str| {
        let path = format!("/api/jobs/{id}/search?{query}");
        let app = &app;
        async move { get_json(app, &path).await }
    };

    // Act
    let plain = search("q=CHATTY%20LINE%20199").await;
    let regex = search(r"q=chatty%20line%2019\d\d$&regex=true").await;
    let limited = search(r"q=chatty%20line%2019\d\d$&regex=true&limit=7").await;
    let next_from = limited["matches"][6]["line"].as_u64().expect("line") + 1;
    let next = search(&format!(
        r"q=chatty%20line%2019\d\d$&regex=true&limit=7&from={next_from}"
    ))
    .await;
    let case = search("q=CHATTY%20LINE%20199&regex=true").await;
    let none = search("q=no%20such%20text").await;

    // Assert: each match is the line of that number, text and all.
    let texts = |page: &Value| -> Vec<String> {
        page["matches"]
            .as_array()
            .expect("matches")
            .iter()
            .map(|m| {
                let line = m["line"].as_u64().expect("line");
                assert_eq!(m["snippet"].as_str(), Some(text_of(line).as_str()), "{m}");
                assert_eq!(m["seq"].as_u64(), Some(lines[line as usize - 1].1), "{m}");
                assert_eq!(m["stream"], "stdout", "{m}");
                text_of(line)
            })
            .collect()
    };
    let mut expected: Vec<String> = std::iter::once(199)
        .chain(1990..2000)
        .map(|n| format!("chatty line {n}"))
        .collect();
    assert_eq!(texts(&plain), expected);
    assert_eq!(plain["more"], false);
    expected = (1900..2000).map(|n| format!("chatty line {n}")).collect();
    assert_eq!(texts(&regex), expected);
    assert_eq!(texts(&limited), expected[..7].to_vec());
    assert_eq!(limited["more"], true);
    assert_eq!(texts(&next), expected[7..14].to_vec());
    assert_eq!(
        texts(&case),
        Vec::<String>::new(),
        "a regex is case-sensitive"
    );
    assert_eq!(none["matches"], serde_json::json!([]));
    assert_eq!(none["more"], false);
}

#[tokio::test]
async fn search_looks_at_the_text_a_reader_sees() {
    let app = app().await;
    let id = app.start_job("p1", "escapes").await;
    app.wait_finished(&id, FINISH).await;
    let search = |query: &'static str| {
        let app = &app;
        let id = &id;
        async move {
            let page = get_json(app, &format!("/api/jobs/{id}/search?{query}")).await;
            page["matches"]
                .as_array()
                .expect("matches")
                .iter()
                .map(|m| m["snippet"].as_str().expect("snippet").to_owned())
                .collect::<Vec<_>>()
        }
    };

    // A word split by colour codes, in either kind of search.
    assert_eq!(
        search("q=error%3A").await,
        ["ERROR: boom", "plain error: two"]
    );
    assert_eq!(search("q=ERROR%3A%20b&regex=true").await, ["ERROR: boom"]);
    // Quotes and backslashes, which the stored JSON escapes.
    assert_eq!(
        search("q=%22hi%22%20%5C%20th").await,
        [r#"say "hi" \ there"#]
    );
    // What a carriage return overwrote is not shown, so not found.
    assert_eq!(search("q=100%25%20done").await, ["100% done"]);
    assert_eq!(search("q=50%25").await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_searches_are_400_with_a_clear_error() {
    let app = app().await;
    let id = app.start_job("p1", "quick").await;
    app.wait_finished(&id, FINISH).await;
    for (query, says) in [
        ("q=", "q must not be empty"),
        ("", "q must not be empty"),
        ("q=(unclosed&regex=true", "invalid regex"),
        (r"q=\w{1000}\w{1000}\w{1000}&regex=true", "invalid regex"),
        ("q=x&regex=maybe", "regex"),
        ("q=x&limit=0", "limit"),
        ("q=x&from=0", "from"),
    ] {
        let body = assert_error(
            app.get(&format!("/api/jobs/{id}/search?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(body.contains(says), "{query}: {body}");
    }
    let long = "x".repeat(1001);
    let body = assert_error(
        app.get(&format!("/api/jobs/{id}/search?q={long}")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body.contains("longer than"), "{body}");
}

#[tokio::test]
async fn a_running_job_is_searched_and_read_by_line_as_far_as_it_got() {
    // Arrange: the job printed two lines and waits.
    let app = app().await;
    let id = app.start_job("p1", "waiting").await;
    let lines_url = format!("/api/jobs/{id}/lines");
    let page = loop {
        let page = get_json(&app, &lines_url).await;
        if page_lines(&page).iter().any(|l| l.2 == "live needle two") {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Act
    let found = get_json(&app, &format!("/api/jobs/{id}/search?q=live%20needle")).await;

    // Assert: it is still running, and both lines are found under their numbers.
    assert_eq!(app.job(&id).await["finishedAt"], Value::Null);
    let numbered = page_lines(&page);
    let number_of = |text: &str| numbered.iter().find(|l| l.2 == text).map(|l| l.0);
    let lines: Vec<u64> = found["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| m["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(
        lines,
        [number_of("live needle one"), number_of("live needle two")]
            .map(|n| n.expect("numbered"))
            .to_vec()
    );
    assert_eq!(page["totalLines"], numbered.len() as u64);

    // And the lines that follow go on from there.
    let workspace = app.data_dir.join("jobs").join(&id).join("go");
    std::fs::write(&workspace, "").expect("the go file");
    app.wait_finished(&id, FINISH).await;
    let after = page_lines(&get_json(&app, &lines_url).await);
    assert_eq!(after[..numbered.len()], numbered[..]);
    let last = after
        .iter()
        .find(|l| l.2 == "after the wait")
        .expect("the last line");
    let found = get_json(&app, &format!("/api/jobs/{id}/search?q=after%20the")).await;
    assert_eq!(found["matches"][0]["line"].as_u64(), Some(last.0));
}

#[tokio::test]
async fn a_line_the_log_cap_dropped_keeps_its_number() {
    // Arrange: the middle of the chatty log is dropped.
    let app = spawn_app(TestOptions::default().env("MAX_LOG_BYTES_PER_JOB", "20000")).await;
    let id = app.start_job("p1", "chatty").await;
    app.wait_finished(&id, FINISH).await;

    // Act
    let page = get_json(&app, &format!("/api/jobs/{id}/lines?limit=10000")).await;
    let lines = page_lines(&page);

    // Assert: line numbers keep growing by one, except over the cut, and the
    // tail's lines are numbered as they were printed.
    let numbers: Vec<u64> = lines.iter().map(|l| l.0).collect();
    let jumps = numbers.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(jumps, 1, "one cut: {numbers:?}");
    let first = lines.iter().find(|l| l.2 == "chatty line 1").expect("head");
    let last = lines
        .iter()
        .find(|l| l.2 == "chatty line 2000")
        .expect("tail");
    assert_eq!(last.0 - first.0, 1999, "{first:?} {last:?}");
    assert!(page["totalLines"].as_u64() >= Some(last.0));
    // Reading from a dropped line starts at the first kept one after it.
    let cut = numbers
        .windows(2)
        .find(|w| w[1] != w[0] + 1)
        .expect("the cut");
    let from = get_json(
        &app,
        &format!("/api/jobs/{id}/lines?from={}&limit=1", cut[0] + 1),
    )
    .await;
    assert_eq!(page_lines(&from)[0].0, cut[1]);
    // Search gives the tail's numbers too.
    let found = get_json(
        &app,
        &format!("/api/jobs/{id}/search?q=chatty%20line%202000"),
    )
    .await;
    assert_eq!(found["matches"][0]["line"].as_u64(), Some(last.0));
}
