//! Runs the Node end-to-end suites as part of `cargo test`, against this build's
//! binary: `tests/e2e/` (the real npm `socket.io-client` 4.x and 2.x) and
//! `tests/browser/` (the dashboard in headless Chromium, driven by playwright-core).
//!
//! Installs a suite's npm dependencies from its lock file first if they are
//! missing or older than the lock file. What the suites need from the machine
//! (Node.js 20+ and npm, redis-server, python3 with redis-py, Chromium at
//! `CHROMIUM_PATH` or
//! `/usr/bin/chromium`) is checked first: a missing one fails the test by name
//! (`scripts/test` installs them all) unless `BUILDCAST_ALLOW_SKIP=1`, which lets
//! the suite skip those tests, saying so on the terminal.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "support/npm.rs"]
mod npm;
#[path = "support/skip.rs"]
mod skip;

/// Runs `npm args…` in `dir`, its output passed through to the terminal; returns
/// whether it succeeded and the report of every failed test in it (so that a
/// failure is named in the panic message, not only somewhere in a long log).
fn npm_run(dir: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("BUILDCAST_BIN", env!("CARGO_BIN_EXE_buildcast"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run npm (install Node.js 20+ and npm): {e}"));
    let stdout = child.stdout.take().expect("npm's stdout");
    // Echoed straight to the terminal, as the suite's own output (not captured).
    let failures = failed_tests(BufReader::new(stdout), &mut std::io::stdout());
    let status = child.wait().expect("npm ran");
    (status.success(), failures)
}

/// Echoes TAP output line by line to `echo` and keeps each `not ok` block (the
/// failed test's name and its YAML report up to `...`), skipped tests left out.
fn failed_tests(tap: impl BufRead, echo: &mut impl Write) -> String {
    const MAX_LINES: usize = 400;
    let mut kept = Vec::new();
    let mut in_block = false;
    // Read to the end whatever the bytes (a line that is not UTF-8 must not stop
    // the reading, or npm would block on a full pipe).
    for line in tap.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        // The echo is a courtesy to whoever watches; the report is kept regardless.
        let _ = writeln!(echo, "{line}");
        let trimmed = line.trim_start();
        if trimmed.starts_with("not ok ") && !trimmed.contains("# SKIP") {
            in_block = true;
        }
        if in_block && kept.len() < MAX_LINES {
            kept.push(line.clone());
        }
        if in_block && trimmed == "..." {
            in_block = false;
        }
    }
    kept.join("\n")
}

/// Whether `program args…` runs and exits 0.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Node.js 20+ and npm; false (after `skip::missing`) when the suite cannot run.
fn have_node(suite: &str) -> bool {
    let node = succeeds(
        "node",
        &[
            "-e",
            "process.exit(+process.versions.node.split('.')[0] >= 20 ? 0 : 1)",
        ],
    );
    if !(node && succeeds("npm", &["--version"])) {
        skip::missing(suite, "Node.js 20 or newer and npm");
        return false;
    }
    true
}

/// The suites start many servers and clients each: run them one at a time on a
/// small machine rather than side by side.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_suite(name: &str) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    assert!(npm::ensure_installed(&dir), "npm ci failed in tests/{name}");
    let (passed, failures) = npm_run(&dir, &["test"]);
    if !passed {
        keep_for_the_summary(name, &failures);
    }
    assert!(
        passed,
        "the tests/{name} suite failed (its output is above); the failed tests:\n{failures}"
    );
}

/// Writes the short form of `failures` where `scripts/test` asks for it
/// (`BUILDCAST_FAILED_TESTS_DIR`), to print at the very end of a run: a long
/// log's middle is what gets cut when shown. Nothing is written without it.
fn keep_for_the_summary(suite: &str, failures: &str) {
    let Some(dir) = std::env::var_os("BUILDCAST_FAILED_TESTS_DIR").map(PathBuf::from) else {
        return;
    };
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(suite), short_report(suite, failures)));
    if let Err(e) = written {
        eprintln!("cannot keep the failed tests of tests/{suite} for the summary: {e}");
    }
}

/// Each failed test's name, location and error message (a message may go on
/// over more indented lines), not its stack; at most a dozen lines a test.
fn short_report(suite: &str, failures: &str) -> String {
    const PER_TEST: usize = 12;
    let mut short = String::new();
    let (mut lines_of_test, mut in_error) = (0, false);
    for line in failures.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let keep = if trimmed.starts_with("not ok ") {
            lines_of_test = 0;
            true
        } else if trimmed.starts_with("error:") {
            in_error = true;
            true
        } else if in_error && indent > 2 {
            true
        } else {
            in_error = false;
            trimmed.starts_with("location:")
        };
        if keep && lines_of_test < PER_TEST {
            short.push_str(&format!("tests/{suite}: {}\n", line.trim_end()));
            lines_of_test += 1;
        }
    }
    short
}

#[test]
fn socket_io_client_suites() {
    if !have_node("tests/e2e") {
        return;
    }
    if !succeeds("sh", &["-c", "command -v redis-server"]) {
        skip::missing("the cluster tests of tests/e2e", "redis-server");
    }
    if !succeeds("python3", &["-c", "import redis"]) {
        skip::missing(
            "the Python worker test of tests/e2e",
            "python3 with redis-py (python3-redis)",
        );
    }
    run_suite("e2e");
}

#[test]
fn dashboard_in_chromium() {
    if !have_node("tests/browser") {
        return;
    }
    let chromium = std::env::var_os("CHROMIUM_PATH")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.exists() {
        skip::missing(
            "tests/browser",
            &format!(
                "Chromium at {} (apt-get install chromium, or set CHROMIUM_PATH)",
                chromium.display()
            ),
        );
        return;
    }
    run_suite("browser");
}

#[test]
fn a_failed_test_is_named_with_its_report_and_skips_are_not() {
    let tap: &[u8] = b"TAP version 13\n\
               # Subtest: fine\n\
               ok 1 - fine\n\
               not ok 2 - skipped one # SKIP no redis\n\
               # Subtest: broken\n\
               not ok 3 - broken\n  ---\n  error: 'expected 1, got \xff 2'\n  ...\n\
               ok 4 - after\n";
    let mut echoed = Vec::new();
    let report = failed_tests(tap, &mut echoed);
    assert_eq!(
        echoed.len(),
        tap.len() + 2,
        "every line echoed (\\xff as U+FFFD)"
    );
    assert_eq!(
        report,
        "not ok 3 - broken\n  ---\n  error: 'expected 1, got \u{fffd} 2'\n  ..."
    );
    assert_eq!(
        short_report("e2e", &report),
        "tests/e2e: not ok 3 - broken\ntests/e2e:   error: 'expected 1, got \u{fffd} 2'\n"
    );
    let yaml = "not ok 1 - t\n  ---\n  location: 'a.mjs:3:1'\n  error: |-\n    first\n    second\n  code: 'X'\n  stack: |-\n    at f\n  ...";
    assert_eq!(
        short_report("browser", yaml),
        "tests/browser: not ok 1 - t\ntests/browser:   location: 'a.mjs:3:1'\ntests/browser:   error: |-\n\
         tests/browser:     first\ntests/browser:     second\n"
    );
}
