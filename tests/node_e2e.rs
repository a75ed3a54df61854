//! Runs the Node end-to-end suites as part of `cargo test`, against this build's
//! binary: `tests/e2e/` (the real npm `socket.io-client` 4.x and 2.x) and
//! `tests/browser/` (the dashboard in headless Chromium, driven by playwright-core).
//!
//! Installs a suite's npm dependencies from its lock file first if they are
//! missing, so `cargo test` alone runs every test on a fresh clone with Node.js.

use std::path::Path;
use std::process::Command;

fn npm(dir: &Path, args: &[&str]) -> std::process::ExitStatus {
    Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("BUILDCAST_BIN", env!("CARGO_BIN_EXE_buildcast"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run npm (install Node.js 20+ and npm): {e}"))
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
    if !dir.join("node_modules").is_dir() {
        let installed = npm(&dir, &["ci", "--no-audit", "--no-fund"]);
        assert!(installed.success(), "npm ci failed in tests/{name}");
    }
    let status = npm(&dir, &["test"]);
    assert!(
        status.success(),
        "the tests/{name} suite failed (see its output above)"
    );
}

#[test]
fn socket_io_client_suites() {
    run_suite("e2e");
}

#[test]
fn dashboard_in_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the dashboard tests need Debian's chromium (apt-get install chromium)"
    );
    run_suite("browser");
}
