//! Keeps the benchmark harness in `bench/` from rotting: builds it (debug, in its
//! own `bench/target`), installs the Node reference server's npm dependencies if
//! they are missing, and runs a small scenario against buildcast (this build's
//! binary), the bare socketioxide reference, the Node.js socket.io reference and the
//! raw floor: 50 clients on two
//! jobs, every fifth over HTTP long-polling, 100 lines per job at 20 lines/s
//! (5 seconds). Each must deliver every line to every client exactly once, in order.
//! buildcast runs it once more with batched `job:logs` and every client dropping its
//! connection once, then resuming with `since`.
//! It also runs the harness's own unit tests (the sequence checker must catch a
//! lost, a duplicated and a reordered line; the packet scanner; WebSocket framing).
//!
//! The full benchmark is `bench/run.sh` (see bench/README.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the bench binaries and the reference server's dependencies, once.
fn harness() -> &'static Result<PathBuf, String> {
    static HARNESS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let bench = root().join("bench");
        let target = bench.join("target");
        let status = Command::new(cargo())
            .args(["build", "--bins", "--manifest-path"])
            .arg(bench.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("building bench/ failed (see the output above)".into());
        }
        let node = bench.join("reference-node");
        if !node.join("node_modules/socket.io").is_dir() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&node)
                .status()
                .map_err(|e| format!("cannot run npm (install Node.js 20+ and npm): {e}"))?;
            if !status.success() {
                return Err("npm ci failed in bench/reference-node".into());
            }
        }
        Ok(target.join("debug"))
    })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[test]
fn bench_unit_tests() {
    let bench = root().join("bench");
    if let Err(e) = harness() {
        panic!("{e}");
    }
    let status = Command::new(cargo())
        .args(["test", "--lib", "--manifest-path"])
        .arg(bench.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(bench.join("target"))
        .status()
        .expect("run cargo test in bench/");
    assert!(
        status.success(),
        "bench/'s unit tests failed (see the output above)"
    );
}

fn smoke(server: &str) {
    smoke_with(server, &[], &[]);
}

/// The smoke run with `extra` arguments; the result line must contain `expect` too.
fn smoke_with(server: &str, extra: &[&str], expect: &[&str]) {
    let bin = match harness() {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    };
    let mut child = Command::new(bin.join("bench"))
        .args(["run", "--server", server, "--name", "smoke"])
        .args([
            "--clients",
            "50",
            "--jobs",
            "2",
            "--lines",
            "100",
            "--rate",
            "20",
        ])
        .args(["--transport", "mixed", "--stall", "10", "--max-wait", "30"])
        .args(["--check", "--quiet"])
        .args(extra)
        .arg("--buildcast")
        .arg(env!("CARGO_BIN_EXE_buildcast"))
        .arg("--node-dir")
        .arg(root().join("bench/reference-node"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the bench binary");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the {server} smoke run did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut out)
        .expect("read bench output");
    println!("{out}");
    let result = out.lines().find(|l| l.starts_with("RESULT ")).unwrap_or("");
    assert!(
        status.success(),
        "{server}: not every client got every line exactly once, in order:\n{result}"
    );
    assert!(
        result.contains("delivered=5000/5000 lost=0 dup=0 ooo=0"),
        "{result}"
    );
    for e in expect {
        assert!(result.contains(e), "{server}: expected {e:?} in\n{result}");
    }
}

#[test]
fn smoke_buildcast() {
    smoke("buildcast");
}

/// Batched `job:logs` (`--log-batch`), and resume: every client drops its connection
/// once after 40 lines, reconnects and subscribes again with `since`; buildcast must
/// replay exactly what the client missed.
#[test]
fn smoke_buildcast_batched_with_resume() {
    smoke_with(
        "buildcast",
        &["--log-batch", "--drop-after", "40"],
        &["reconnects=50 ", "batches="],
    );
}

#[test]
fn smoke_node_reference() {
    smoke("node");
}

#[test]
fn smoke_socketioxide_reference() {
    smoke("socketioxide");
}

#[test]
fn smoke_raw_floor() {
    smoke("raw");
}
