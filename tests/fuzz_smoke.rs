//! Runs the `payloads` fuzz target (`fuzz/`) for a bounded time, so the parsers of
//! untrusted input are fuzzed on every test run.
//!
//! Needs cargo-fuzz (`cargo install cargo-fuzz`); it uses the stable toolchain with
//! `RUSTC_BOOTSTRAP=1` for the sanitizer flags. Without cargo-fuzz the test says so
//! and passes, unless `BUILDCAST_REQUIRE_FUZZ=1` (CI sets it). `FUZZ_SECONDS`
//! (default 60) bounds the run.

use std::path::Path;
use std::process::Command;

#[test]
fn payload_parsers_survive_fuzzing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("BUILDCAST_REQUIRE_FUZZ").is_none(),
            "BUILDCAST_REQUIRE_FUZZ is set but cargo-fuzz is not installed"
        );
        eprintln!("fuzz_smoke skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)");
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
