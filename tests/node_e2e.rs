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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "support/npm.rs"]
mod npm;
#[path = "support/skip.rs"]
mod skip;

fn npm_run(dir: &Path, args: &[&str]) -> std::process::ExitStatus {
    Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("BUILDCAST_BIN", env!("CARGO_BIN_EXE_buildcast"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run npm (install Node.js 20+ and npm): {e}"))
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
    let status = npm_run(&dir, &["test"]);
    assert!(
        status.success(),
        "the tests/{name} suite failed (see its output above)"
    );
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
