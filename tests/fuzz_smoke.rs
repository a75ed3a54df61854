//! Runs the `payloads` fuzz target (`fuzz/`) for a bounded time, so the parsers of
//! untrusted input are fuzzed on every test run.
//!
//! Needs cargo-fuzz (`cargo install cargo-fuzz`); it uses the stable toolchain with
//! `RUSTC_BOOTSTRAP=1` for the sanitizer flags, and a C++ compiler for libFuzzer.
//! Without cargo-fuzz the test fails saying so (`scripts/test` installs it), unless
//! `BUILDCAST_ALLOW_SKIP=1`: then it passes with a `SKIPPED` line on the terminal.
//! `FUZZ_SECONDS` (default 60) bounds the run.

use std::path::Path;
use std::process::Command;

#[path = "support/skip.rs"]
mod skip;

#[test]
fn payload_parsers_survive_fuzzing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        skip::missing(
            "fuzz_smoke",
            "cargo-fuzz (cargo install cargo-fuzz --locked)",
        );
        return;
    }
    let seconds = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let status = Command::new("cargo")
        .args(["fuzz", "run", "payloads", "--", "-rss_limit_mb=2048"])
        .arg(format!("-max_total_time={seconds}"))
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .expect("running cargo fuzz");
    assert!(
        status.success(),
        "the fuzz target found a crash (see fuzz/artifacts/)"
    );
}
