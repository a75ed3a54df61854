//! `buildcast watch`: follow a build from a terminal through the job's
//! Server-Sent Events stream (`GET /api/jobs/{id}/stream`).
//!
//! On a terminal it shows a progress bar (phase and percentage) pinned under the
//! scrolling log, stderr lines in red; otherwise it prints plain lines (progress
//! as `[phase NN%] message`). It exits 0 when the build completed, 1 when it
//! failed, 130 when it was cancelled (2 when it cannot watch at all).
//!
//! A dropped connection or a server restart loses nothing: it reconnects with
//! `Last-Event-ID` (`<epoch>:<seq>` of the last event shown). When the server
//! answers `reset` (the history changed, e.g. the job was recovered after a crash),
//! the whole history follows and only events not shown before — by seq and
//! content — are printed.
//!
//! `--project` follows a project's events instead (one line per job update).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// Arguments of `buildcast watch`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["job", "project"])))]
pub struct WatchArgs {
    /// The job to follow.
    pub job: Option<String>,
    /// Follow a project's jobs instead.
    #[arg(long)]
    pub project: Option<String>,
    /// The server's base URL.
    #[arg(long, env = "BUILDCAST_URL", default_value = "http://127.0.0.1:3001")]
    pub url: String,
    /// A token (sent as `Authorization: Bearer`).
    #[arg(long, env = "BUILDCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print what is recorded so far and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
}

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// No byte for this long (the server sends a comment every 15 s): reconnect.
const READ_TIMEOUT: Duration = Duration::from_secs(45);

/// One Server-Sent Events message.
#[derive(Debug, Default)]
pub struct Message {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Splits a byte stream into SSE messages.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Message,
}

impl Parser {
    /// Feeds bytes; returns the messages they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let message = std::mem::take(&mut self.current);
                if !message.data.is_empty() || !message.event.is_empty() {
                    out.push(message);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_owned(),
                "id" => self.current.id = Some(value.to_owned()),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {}
            }
        }
        out
    }
}

/// How a watch ended.
enum End {
    Exit(ExitCode),
    /// The connection dropped (or could not be made): try again.
    Retry(String),
}

/// Where the output goes: a progress bar on a terminal, plain lines otherwise.
struct Output {
    bar: Option<ProgressBar>,
}

impl Output {
    fn new() -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {prefix:>10.bold} [{bar:40.cyan/blue}] {pos:>3}% {wide_msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        }
    }

    fn colored(&self, text: &str, color: &str) {
        if self.bar.is_some() {
            self.line(&format!("\u{1b}[{color}m{text}\u{1b}[0m"));
        } else {
            self.line(text);
        }
    }

    fn progress(&self, phase: &str, progress: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(phase.to_owned());
                bar.set_position(progress.min(100));
                bar.set_message(message.to_owned());
            }
            None => self.line(&format!("[{phase} {progress}%] {message}")),
        }
    }

    fn notice(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("buildcast: {text}")),
            None => eprintln!("buildcast: {text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        let _ = std::io::stdout().flush();
    }
}

/// What has been shown, by seq: a hash of each event's payload.
#[derive(Default)]
struct Shown {
    by_seq: HashMap<u64, u64>,
    last_id: Option<String>,
}

impl Shown {
    /// Whether this event is new (not shown with this content before); records it.
    fn first_time(&mut self, seq: u64, data: &str) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut h);
        self.by_seq.insert(seq, h.finish()) != Some(h.finish())
    }
}

/// Runs `buildcast watch`.
pub async fn run(args: WatchArgs) -> ExitCode {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(READ_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("buildcast: cannot make an HTTP client: {e}");
            return ExitCode::from(2);
        }
    };
    let base = args.url.trim_end_matches('/').to_owned();
    let output = Output::new();
    let mut shown = Shown::default();
    let mut backoff = Duration::from_millis(200);
    loop {
        let end = match (&args.job, &args.project) {
            (Some(job), _) => watch_job(&client, &base, job, &args, &output, &mut shown).await,
            (None, Some(project)) => watch_project(&client, &base, project, &args, &output).await,
            (None, None) => End::Exit(ExitCode::from(2)),
        };
        match end {
            End::Exit(code) => {
                output.finish();
                return code;
            }
            End::Retry(why) => {
                if args.no_follow {
                    output.notice(&why);
                    output.finish();
                    return ExitCode::from(2);
                }
                output.notice(&format!("{why}; reconnecting"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Opens a stream; a refusal that retrying cannot fix ends the watch.
async fn open(
    client: &reqwest::Client,
    url: &str,
    args: &WatchArgs,
    last_id: Option<&str>,
) -> Result<reqwest::Response, End> {
    let mut request = client.get(url).header("Accept", "text/event-stream");
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request
        .send()
        .await
        .map_err(|e| End::Retry(format!("cannot reach {url}: {}", root_cause(&e))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(body);
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(End::Retry(format!(
            "the server answered {status}: {message}"
        )));
    }
    eprintln!("buildcast: {status}: {message}");
    Err(End::Exit(ExitCode::from(2)))
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Opens the SSE stream at `url` and hands each message to `on_message` until it
/// says the watch is over (`Some`), the connection fails (a retry), or the stream
/// ends (`None`).
async fn each_message(
    client: &reqwest::Client,
    url: &str,
    args: &WatchArgs,
    last_id: Option<&str>,
    mut on_message: impl FnMut(Message) -> Option<End>,
) -> Option<End> {
    let response = match open(client, url, args, last_id).await {
        Ok(response) => response,
        Err(end) => return Some(end),
    };
    let mut body = response.bytes_stream();
    let mut parser = Parser::default();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return Some(End::Retry(format!(
                    "the connection dropped: {}",
                    root_cause(&e)
                )));
            }
        };
        for message in parser.feed(&chunk) {
            if let Some(end) = on_message(message) {
                return Some(end);
            }
        }
    }
    None
}

async fn watch_job(
    client: &reqwest::Client,
    base: &str,
    job: &str,
    args: &WatchArgs,
    output: &Output,
    shown: &mut Shown,
) -> End {
    let follow = if args.no_follow { "?follow=0" } else { "" };
    let url = format!("{base}/api/jobs/{job}/stream{follow}");
    let last_id = shown.last_id.clone();
    let ended = each_message(client, &url, args, last_id.as_deref(), |message| {
        let end = show_job_event(&message, output, shown);
        if end.is_none()
            && message.event.starts_with("job:")
            && let Some(id) = message.id
        {
            shown.last_id = Some(id);
        }
        end
    })
    .await;
    if let Some(end) = ended {
        return end;
    }
    if args.no_follow {
        return End::Exit(ExitCode::SUCCESS);
    }
    End::Retry("the stream ended before the job".into())
}

/// Shows one message of a job stream; `Some` when the watch is over.
fn show_job_event(message: &Message, output: &Output, shown: &mut Shown) -> Option<End> {
    if message.event == "reset" {
        let reason = serde_json::from_str::<Value>(&message.data)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_default();
        output.notice(&format!(
            "the server restarted the history ({reason}); only what was not shown yet is printed"
        ));
        return None;
    }
    if !message.event.starts_with("job:") {
        return None;
    }
    let data: Value = serde_json::from_str(&message.data).ok()?;
    let events: Vec<&Value> = match (&message.event[..], &data) {
        ("job:logs", Value::Array(run)) => run.iter().collect(),
        _ => vec![&data],
    };
    for event in events {
        let seq = event["seq"].as_u64().unwrap_or(0);
        let fresh = shown.first_time(seq, &event.to_string());
        let text = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
        match &message.event[..] {
            "job:progress" => {
                let progress = event["progress"].as_u64().unwrap_or(0);
                if fresh || output.bar.is_some() {
                    output.progress(&text("phase"), progress, &text("message"));
                }
            }
            "job:log" | "job:logs" if fresh => match &text("stream")[..] {
                "stderr" => output.colored(&text("message"), "31"),
                "system" => output.colored(&text("message"), "2"),
                _ => output.line(&text("message")),
            },
            "job:error" if fresh => output.colored(&format!("error: {}", text("message")), "1;31"),
            "job:completed" => {
                let status = text("status");
                if let Some(bar) = &output.bar {
                    bar.set_prefix(status.clone());
                    bar.set_position(event["progress"].as_u64().unwrap_or(100).min(100));
                }
                output.line(&format!("[{status}]"));
                return Some(End::Exit(match &status[..] {
                    "completed" => ExitCode::SUCCESS,
                    "cancelled" => ExitCode::from(130),
                    _ => ExitCode::FAILURE,
                }));
            }
            _ => {}
        }
    }
    None
}

async fn watch_project(
    client: &reqwest::Client,
    base: &str,
    project: &str,
    args: &WatchArgs,
    output: &Output,
) -> End {
    let url = format!("{base}/api/projects/{project}/stream");
    let describe = |job: &Value| {
        format!(
            "{} {} {}% {}",
            job["jobId"].as_str().unwrap_or("?"),
            job["status"].as_str().unwrap_or("?"),
            job["progress"].as_u64().unwrap_or(0),
            job["message"]
                .as_str()
                .or(job["pipeline"].as_str())
                .unwrap_or("")
        )
    };
    let ended = each_message(client, &url, args, None, |message| {
        let data = serde_json::from_str::<Value>(&message.data).ok()?;
        match &message.event[..] {
            "snapshot" => {
                for job in data["jobs"].as_array().into_iter().flatten() {
                    output.line(&describe(job));
                }
                if args.no_follow {
                    return Some(End::Exit(ExitCode::SUCCESS));
                }
            }
            "project:progress" | "project:completed" => output.line(&describe(&data)),
            "reset" => output.notice("fell behind; a new snapshot follows"),
            _ => {}
        }
        None
    })
    .await;
    if let Some(end) = ended {
        return end;
    }
    End::Retry("the project stream ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sse_across_chunks() {
        let mut p = Parser::default();
        assert!(
            p.feed(b"retry: 1000\n\n: keep-alive\n\nevent: job:log\nid: e:1")
                .is_empty()
        );
        let got = p.feed(b"\ndata: {\"seq\":1}\r\n\r\nevent: reset\ndata: a\ndata: b\n\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].event, "job:log");
        assert_eq!(got[0].id.as_deref(), Some("e:1"));
        assert_eq!(got[0].data, "{\"seq\":1}");
        assert_eq!(got[1].data, "a\nb");
    }

    #[test]
    fn an_event_is_shown_once_unless_its_content_changed() {
        let mut shown = Shown::default();
        assert!(shown.first_time(1, "a"));
        assert!(!shown.first_time(1, "a"));
        assert!(shown.first_time(1, "b"));
    }
}
