//! Keeps the benchmark harness in `bench/` from rotting: builds it (debug, in its
//! own `bench/target`), installs the Node reference server's npm dependencies if
//! they are missing, and runs a small scenario against buildcast (this build's
//! binary), the bare socketioxide reference, the Node.js socket.io reference and the
//! raw floor: 50 clients on two
//! jobs, every fifth over HTTP long-polling, 100 lines per job at 20 lines/s
//! (5 seconds). Each must deliver every line to every client exactly once, in order.
//! The harness starts every server with `PORT=0 --port-file` and learns the port
//! from the file the server writes once it listens (the references take the flag
//! too), so a server that stopped writing it fails here.
//! buildcast runs it once more with batched `job:logs` and every client dropping its
//! connection once, then resuming with `since`.
//! `loss_prone_short_non_resuming_clients_are_caught_up_not_closed` floods
//! non-resuming clients, some of which stop reading for 3 s, and asserts that
//! buildcast catches them up, closes none of them and loses no line;
//! `loss_prone_non_resuming_clients_under_flood` (ignored) does the same with a
//! 100 ms heartbeat, which engineioxide's bounded queue cannot honour (issue #13).
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

/// Loss-prone, short (runs in the test command): 20 clients that never resume
/// (they subscribe with the bare job id, as seed 002's frontends do) on one job of
/// 60,000 lines as fast as possible; every fifth stops reading for 3 s after its
/// first line. Their queues (64 packets here) fill, unless the kernel's socket
/// buffers take the whole stall, and buildcast catches them up from history:
/// every line must reach every client and none may be closed. Default heartbeat
/// (25 s).
#[test]
fn loss_prone_short_non_resuming_clients_are_caught_up_not_closed() {
    let bin = match harness() {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    };
    let result = run_buildcast(
        &bin.join("bench"),
        Path::new(env!("CARGO_BIN_EXE_buildcast")),
        &[
            "--name",
            "loss-prone-short",
            "--clients",
            "20",
            "--lines",
            "60000",
            "--rate",
            "0",
            "--no-resume",
            "--stall-read-ms",
            "3000",
            "--stall",
            "10",
            "--max-wait",
            "120",
            // 64 packets per socket: a stalled client's queue fills within its
            // stall on any machine, however large the kernel's socket buffers.
            "--buffer",
            "64",
        ],
    );
    assert!(
        result.contains("delivered=1200000/1200000 lost=0 dup=0 ooo=0 reconnects=0 "),
        "lines lost or clients closed:\n{result}"
    );
    // Whether queues overflowed depends on the kernel's socket buffers and the
    // machine's speed (a slower server's lines can all fit in them during the
    // stall): say so, the guarantee above holds either way.
    let catch_ups = result
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lagged_catch_ups="))
        .unwrap_or("?");
    println!("sockets caught up from history: {catch_ups}");
}

/// Loss-prone: clients that do not resume (they subscribe with the bare job id, never
/// `since`, as a plain socket.io client does) under a per-line flood that makes some
/// sockets catch up. 50 clients on one job, 30,000 lines as fast as possible; every
/// fifth client (16 KiB receive buffer) stops reading for 3 s after its first line,
/// like a browser tab in the background, then reads at full speed. Its queue fills,
/// buildcast catches it up from history, and the Engine.IO heartbeat (100 ms here,
/// ping timeout 20 s: a 3 s pause is no reason to close anyone) falls due meanwhile.
/// Every line must reach every client, and the server must close no client
/// (`reconnects=0`).
///
/// FAILS (issue #13), and cannot pass through socketioxide 0.18 / engineioxide 0.17's
/// public API: a stalled client's engineioxide queue is full for the length of the
/// stall (the queue filled before any "full" could be seen), Engine.IO's ping is
/// queued with `try_send` into that same queue, fails, and engineioxide closes the
/// socket as a heartbeat timeout. Nothing outside engineioxide can leave a free slot:
/// neither the queue's capacity nor its length is public. The upstream change: queue
/// the ping outside the bounded queue (or keep one slot for it). Measured after the
/// fan-out workers and build pacing: the 10 stalled clients closed, ~143,000 of
/// 1,500,000 lines lost, in 2 of 2 runs; with the default 25 s heartbeat the same
/// flood closes none and loses nothing (the short test above, and bench/README.md).
///
/// It runs release builds (a debug server is too slow to fill a queue): it builds
/// buildcast and `bench/` with `--release` first. Verify with
/// `cargo test --test bench_smoke -- --ignored loss_prone_non`.
#[test]
#[ignore = "engineioxide closes a socket whose queue is full when a 100 ms heartbeat ping is due (issue #13)"]
fn loss_prone_non_resuming_clients_under_flood() {
    let bench = root().join("bench");
    for (manifest, target) in [
        (root().join("Cargo.toml"), None),
        (bench.join("Cargo.toml"), Some(bench.join("target"))),
    ] {
        let mut cmd = Command::new(cargo());
        cmd.args(["build", "--release", "--bins", "--manifest-path"])
            .arg(&manifest);
        if let Some(t) = target {
            cmd.arg("--target-dir").arg(t);
        }
        assert!(
            cmd.status().expect("run cargo").success(),
            "building {} in release failed",
            manifest.display()
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root().join(t) })
        .unwrap_or_else(|| root().join("target"));
    let result = run_buildcast(
        &bench.join("target/release/bench"),
        &target.join("release/buildcast"),
        &[
            "--name",
            "loss-prone",
            "--clients",
            "50",
            "--lines",
            "30000",
            "--rate",
            "0",
            "--no-resume",
            "--stall-read-ms",
            "3000",
            "--ping-interval-ms",
            "100",
            "--stall",
            "5",
            "--max-wait",
            "60",
        ],
    );
    assert!(
        result.contains(" reconnects=0 "),
        "the server closed clients (each reconnected without resuming):\n{result}"
    );
    assert!(
        result.contains("delivered=1500000/1500000 lost=0 dup=0 ooo=0"),
        "lines lost:\n{result}"
    );
}

/// Runs `bench run` against buildcast with `args`; returns its RESULT line.
fn run_buildcast(bench: &Path, buildcast: &Path, args: &[&str]) -> String {
    let out = Command::new(bench)
        .args(["run", "--server", "buildcast", "--quiet"])
        .args(args)
        .arg("--buildcast")
        .arg(buildcast)
        .stdout(Stdio::piped())
        .output()
        .expect("run the bench binary");
    let out = String::from_utf8_lossy(&out.stdout);
    println!("{out}");
    out.lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or("")
        .to_owned()
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
