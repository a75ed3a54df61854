//! One step as a child process: `sh -c <script>` in its own process group, with
//! stdout and stderr read line by line as they arrive.
//!
//! The step ends when the shell exits, its deadline passes or it is cancelled. In
//! every case the whole process group is killed afterwards, so background
//! processes a script started do not outlive it.
//!
//! If the server itself dies (even by SIGKILL), the shell gets SIGKILL from the
//! kernel (`PR_SET_PDEATHSIG`). That signal is tied to the *thread* that started the
//! shell: steps are started from Tokio's worker threads, which live as long as the
//! runtime (the server never uses `block_in_place`, which would retire one). What the
//! shell started does not get it; the group's record ([`super::groups`]) lets the
//! next start kill those.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::groups::{GroupRecords, Record};
use crate::job::{JobId, Stream};
use crate::journal::Pacing;

/// Longest line passed on; a longer one is split.
const MAX_LINE: usize = 16 * 1024;
/// How long a signalled process group gets to exit before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// A step's reader lets other tasks run after this many lines ...
const LINES_PER_TURN: u32 = 128;
/// ... once it has also run this long.
const TURN: Duration = Duration::from_millis(2);

/// When a step's reader yields to the other tasks (HTTP, sockets).
///
/// Lines already buffered are read without waiting, so a flooding step would keep
/// its worker thread. Tokio's own budget would yield every 128 reads however cheap
/// they are: with a thousand busy socket tasks queued, cheap lines (held for
/// `job:logs` runs, or with no subscriber) then trickle in 128 per scheduler round.
/// The reader instead yields after [`LINES_PER_TURN`] lines *and* [`TURN`] of
/// time: expensive lines (a fan-out to many per-line sockets) yield as often as
/// before, cheap ones go on for a couple of milliseconds.
struct ReaderTurn {
    lines: u32,
    started: Instant,
}

impl ReaderTurn {
    fn new() -> Self {
        Self {
            lines: 0,
            started: Instant::now(),
        }
    }

    async fn line_done(&mut self) {
        self.lines += 1;
        if self.lines >= LINES_PER_TURN && self.started.elapsed() >= TURN {
            tokio::task::yield_now().await;
            *self = Self::new();
        }
    }
}

/// Environment variables never passed to a build: the server's own secrets, the
/// ones its configuration reads. Anything else in the server's environment is
/// passed on (a build may well need its own `DATABASE_URL`, say), so other
/// credentials do not belong in the server's environment.
const SECRET_VARS: [&str; 4] = [
    "JWT_SECRET",
    "WORKER_TOKEN",
    "REDIS_URL",
    "JWT_PUBLIC_KEY_FILE",
];

/// How a step ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StepEnd {
    Succeeded,
    /// It exited non-zero or could not start; the text says which.
    Failed(String),
    TimedOut,
    Cancelled,
}

/// Where a running step's process group is recorded: the records, and the job.
pub type RecordAs<'a> = Option<(&'a GroupRecords, &'a JobId)>;

/// What a step's run reports to besides its lines.
#[derive(Default)]
pub struct StepHooks<'a> {
    /// Where its process group is recorded.
    pub record_as: RecordAs<'a>,
    /// Pauses reading its output while history falls behind (a slow disk): the
    /// step then blocks on a full pipe instead of memory filling up.
    pub backpressure: Option<Pacing>,
}

/// Runs `script` in `dir`, calling `on_line` for each line of output. With
/// `record_as`, the step's process group is recorded while it runs.
pub async fn run_step(
    script: &str,
    dir: &Path,
    env: &[(&str, &str)],
    deadline: Instant,
    cancel: &CancellationToken,
    hooks: StepHooks<'_>,
    on_line: impl FnMut(Stream, String),
) -> StepEnd {
    // The reader yields by its own measure ([`ReaderTurn`]), not Tokio's budget.
    tokio::task::unconstrained(step(script, dir, env, deadline, cancel, hooks, on_line)).await
}

async fn step(
    script: &str,
    dir: &Path,
    env: &[(&str, &str)],
    deadline: Instant,
    cancel: &CancellationToken,
    hooks: StepHooks<'_>,
    mut on_line: impl FnMut(Stream, String),
) -> StepEnd {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for var in SECRET_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let server = std::process::id();
    // SAFETY: runs in the child between fork and exec, and only makes
    // async-signal-safe calls (prctl, getppid) and builds an error from an errno.
    unsafe {
        command.pre_exec(move || die_with_parent(server));
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return StepEnd::Failed(format!("could not start the step: {e}")),
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    // Dropped (the record removed) when this function returns, after the group is killed.
    let _record = record(hooks.record_as, pgid);
    let backpressure = hooks.backpressure;
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut err = BufReader::new(child.stderr.take().expect("piped stderr"));
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut exit = None;
    let mut turn = ReaderTurn::new();

    let end = loop {
        if exit.is_some() && !out_open && !err_open {
            break None;
        }
        tokio::select! {
            line = next_line(&mut out, &mut out_buf), if out_open => match line {
                Some(line) => {
                    on_line(Stream::Stdout, line);
                    turn.line_done().await;
                    wait_for_history(backpressure.as_ref(), cancel, deadline).await;
                }
                None => out_open = false,
            },
            line = next_line(&mut err, &mut err_buf), if err_open => match line {
                Some(line) => {
                    on_line(Stream::Stderr, line);
                    turn.line_done().await;
                    wait_for_history(backpressure.as_ref(), cancel, deadline).await;
                }
                None => err_open = false,
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status);
                // The shell is gone: end what it left behind so the pipes close.
                kill_group(pgid, libc::SIGKILL);
            }
            () = cancel.cancelled() => break Some(StepEnd::Cancelled),
            () = tokio::time::sleep_until(deadline) => break Some(StepEnd::TimedOut),
        }
    };
    if let Some(end) = end {
        stop_group(pgid, &mut child).await;
        return end;
    }
    kill_group(pgid, libc::SIGKILL);
    match exit.expect("loop ends after exit") {
        Ok(status) if status.success() => StepEnd::Succeeded,
        Ok(status) => StepEnd::Failed(match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".into(),
        }),
        Err(e) => StepEnd::Failed(format!("could not be waited for: {e}")),
    }
}

/// Waits while history falls behind, unless the step is cancelled or out of time
/// meanwhile (the read loop then sees why).
async fn wait_for_history(
    backpressure: Option<&Pacing>,
    cancel: &CancellationToken,
    deadline: Instant,
) {
    if let Some(backpressure) = backpressure {
        tokio::select! {
            () = backpressure.wait_for_room() => {}
            () = cancel.cancelled() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// In the child, before exec: asks for SIGKILL when the server's thread that
/// forked it ends, and fails if the server is already gone (it died before that).
fn die_with_parent(server: u32) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and nothing else.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(server) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Records the step's group, if asked to; a failure is logged (the step still runs:
/// only the clean-up after a crash depends on the record).
fn record(record_as: RecordAs<'_>, pgid: Option<i32>) -> Option<Record> {
    let ((records, job), pgid) = (record_as?, pgid?);
    records
        .record(job, pgid)
        .inspect_err(|e| tracing::error!(job_id = %job, pgid, error = %e, "cannot record the step's process group"))
        .ok()
}

/// Reads the next line (without its line ending), or `None` at end of stream.
/// Cancel-safe: a partly read line stays in `buf` for the next call.
async fn next_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        let available = match reader.fill_buf().await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => &[],
        };
        if available.is_empty() {
            if buf.is_empty() {
                return None;
            }
            return Some(take_line(buf));
        }
        let room = MAX_LINE - buf.len();
        match available.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => {
                buf.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                return Some(take_line(buf));
            }
            None => {
                let n = available.len().min(room);
                buf.extend_from_slice(&available[..n]);
                reader.consume(n);
                if buf.len() >= MAX_LINE {
                    return Some(take_line(buf));
                }
            }
        }
    }
}

fn take_line(buf: &mut Vec<u8>) -> String {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

fn kill_group(pgid: Option<i32>, signal: i32) {
    if let Some(pgid) = pgid {
        // SAFETY: killpg only sends a signal.
        if unsafe { libc::killpg(pgid, signal) } == -1 {
            let e = io::Error::last_os_error();
            // ESRCH: the whole group is already gone.
            if e.raw_os_error() != Some(libc::ESRCH) {
                tracing::error!(pgid, signal, error = %e, "cannot signal the step's process group");
            }
        }
    }
}

/// Asks the group to stop, then kills it if it has not within the grace period.
async fn stop_group(pgid: Option<i32>, child: &mut tokio::process::Child) {
    kill_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::debug!(?pgid, "step ignored SIGTERM; killing it");
    }
    kill_group(pgid, libc::SIGKILL);
    if let Err(e) = child.wait().await {
        tracing::error!(?pgid, error = %e, "cannot wait for the step's shell");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(script: &str, timeout: Duration) -> (StepEnd, Vec<(Stream, String)>) {
        let mut lines = Vec::new();
        let dir = std::env::temp_dir();
        let end = run_step(
            script,
            &dir,
            &[("BUILDCAST_JOB_ID", "j1")],
            Instant::now() + timeout,
            &CancellationToken::new(),
            StepHooks::default(),
            |s, l| lines.push((s, l)),
        )
        .await;
        (end, lines)
    }

    #[tokio::test]
    async fn lines_keep_their_stream_and_order() {
        let (end, lines) = run(
            "echo one; echo two >&2; printf 'three\\r\\nno newline'; echo $BUILDCAST_JOB_ID",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(end, StepEnd::Succeeded);
        let stdout: Vec<_> = lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(stdout, ["one", "three", "no newlinej1"]);
        assert!(lines.contains(&(Stream::Stderr, "two".into())));
    }

    #[tokio::test]
    async fn exit_codes_and_timeouts_end_the_step() {
        let (end, _) = run("exit 3", Duration::from_secs(10)).await;
        assert_eq!(end, StepEnd::Failed("exited with code 3".into()));
        let started = std::time::Instant::now();
        let (end, _) = run("sleep 30", Duration::from_millis(200)).await;
        assert_eq!(end, StepEnd::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn background_children_do_not_hold_the_step_open() {
        let started = std::time::Instant::now();
        let (end, lines) = run("sleep 30 & echo done", Duration::from_secs(20)).await;
        assert_eq!(end, StepEnd::Succeeded);
        assert_eq!(lines, [(Stream::Stdout, "done".to_string())]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn long_lines_are_split() {
        let (_, lines) = run(
            "head -c 40000 /dev/zero | tr '\\0' x; echo",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].1.len(), MAX_LINE);
    }
}
