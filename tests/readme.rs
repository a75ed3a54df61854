//! The README's examples, run as written: every ```` ```sh ```` and ```` ```js ````
//! block of `README.md` (read at run time) is run against the real server, and a
//! block that stops working fails this test.
//!
//! How a block is run depends on the section it is in (one test per section
//! below); a runnable block in a section this file does not know fails
//! [`every_example_is_run_or_marked_no_run`]. A block is left out only when its
//! fence says so, ```` ```sh no-run ````: what the test suite itself is
//! (`cargo run`, `scripts/test`, proved by `scripts/fresh-machine-check`), the
//! container commands (no container engine runs here) and commands that never
//! end. Keep that list short.
//!
//! What the test changes, and only that:
//! - `localhost:3001` (or `127.0.0.1:3001`) becomes the test server's address;
//!   the server is started by the one launcher (`tests/support/server.rs`), and
//!   `BUILDCAST_URL` points `buildcast watch`'s default at it;
//! - the variables a reader sets by hand are set: `JOB` (a finished run of the
//!   built-in `demo` pipeline), `TOKEN`, `WORKER_TOKEN`;
//! - shell blocks run under `bash` with `set -eu -o pipefail`, `buildcast` on
//!   `PATH`, `cargo run [-q] [--] ARGS` running this build's binary with ARGS
//!   (the server only after 2 s, as a real `cargo run` checks or builds first,
//!   so an example that does not wait for it fails), and `curl` reporting each answer's status: any status from 400 up fails the
//!   block, except 409 (the README's cancel of a finished job);
//! - the "Try it" block starts its own server (`cargo run &`), as written: it
//!   listens on a free port the test picks (`PORT`);
//! - JavaScript fragments get the names they use from a few lines put before
//!   them (`io`, `token`, `server`, …), and run with Node.js and the npm
//!   `socket.io-client` of `tests/e2e`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/server.rs"]
mod server;
#[path = "support/skip.rs"]
mod skip;

/// Longest a block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

const WORKER_TOKEN: &str = "readme-worker-token-0123456789";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One fenced example.
#[derive(Debug, Clone)]
struct Block {
    /// `sh` or `js`.
    lang: &'static str,
    /// Marked `no-run`.
    no_run: bool,
    /// The heading of the section it is in.
    section: String,
    /// Its first line in the README (1-based).
    line: usize,
    code: String,
}

fn readme_blocks() -> Vec<Block> {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(block) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                blocks.extend(open.take().filter(|b| !b.lang.is_empty()));
            } else {
                block.code.push_str(line);
                block.code.push('\n');
            }
            continue;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            let mut words = info.split_whitespace();
            let lang = match words.next().unwrap_or("") {
                "sh" | "bash" | "shell" | "console" => "sh",
                "js" | "javascript" | "mjs" => "js",
                _ => "",
            };
            open = Some(Block {
                lang,
                no_run: words.any(|w| w == "no-run"),
                section: section.clone(),
                line: i + 2,
                code: String::new(),
            });
        } else if line.starts_with('#') {
            section = line.trim_start_matches('#').trim().to_owned();
        }
    }
    assert!(open.is_none(), "README.md ends inside a fenced block");
    blocks
}

/// The runnable blocks of `section`, in order.
fn section(name: &str) -> Vec<Block> {
    let blocks: Vec<Block> = readme_blocks()
        .into_iter()
        .filter(|b| b.section == name && !b.no_run)
        .collect();
    assert!(
        !blocks.is_empty(),
        "README.md has no runnable example under \"{name}\" any more: update tests/readme.rs"
    );
    blocks
}

/// Sections whose examples a test below runs.
const SECTIONS: [&str; 6] = [
    "Watch a build in 30 seconds",
    "History, `seq` and resuming",
    "REST API",
    "Follow a build without Socket.IO",
    "Try it",
    "External workers",
];

#[test]
fn every_example_is_run_or_marked_no_run() {
    let blocks = readme_blocks();
    assert!(blocks.len() > 10, "too few examples found: {blocks:?}");
    let unrun: Vec<String> = blocks
        .iter()
        .filter(|b| !b.no_run && !SECTIONS.contains(&b.section.as_str()))
        .map(|b| format!("line {} ({}, under \"{}\")", b.line, b.lang, b.section))
        .collect();
    assert!(
        unrun.is_empty(),
        "README examples no test runs: {unrun:?}; run them in tests/readme.rs, or mark \
         the fence `no-run` if they cannot run here"
    );
    let skipped: Vec<String> = blocks
        .iter()
        .filter(|b| b.no_run)
        .map(|b| format!("{} ({})", b.line, b.section))
        .collect();
    // The few a test cannot run (the gateways' example calls the seed frontends'
    // own classes, which the compat e2e suites run); a longer list needs a reason.
    assert!(skipped.len() <= 5, "examples marked no-run: {skipped:?}");
}

// ---- running blocks -------------------------------------------------------------

/// Replaces the README's address with the test server's.
fn at_port(code: &str, port: u16) -> String {
    code.replace("localhost:3001", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:3001", &format!("127.0.0.1:{port}"))
}

/// Put before every shell block.
const SHELL_PRELUDE: &str = r#"set -eu -o pipefail
curl() { command curl -w '%{stderr}README-HTTP %{http_code} %{url_effective}\n' "$@"; }
cargo() {
  if [ "${1:-}" != run ]; then echo "tests/readme.rs runs only 'cargo run', not: cargo $*" >&2; return 2; fi
  shift
  while [ $# -gt 0 ]; do
    case "$1" in -q|--quiet) shift ;; --) shift; break ;; *) break ;; esac
  done
  # cargo run builds before it runs: a server is not there at once.
  if [ $# -eq 0 ]; then sleep 2; fi
  "$BUILDCAST_BIN" "$@"
}
"#;

/// What a block printed.
#[derive(Debug)]
struct Ran {
    stdout: String,
    stderr: String,
}

/// A folder for one section: a `bin/` with `buildcast`, a `node_modules` link.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink(server::BIN, bin.join("buildcast")).expect("link buildcast");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment of a block: nothing of the developer's shell but `PATH`.
    fn env(&self, vars: &[(&str, String)]) -> BTreeMap<String, String> {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env: BTreeMap<String, String> = [
            ("PATH", path),
            ("HOME", self.path().display().to_string()),
            ("BUILDCAST_BIN", server::BIN.to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }
}

/// Runs `program args` in its own process group in `cwd`, waits at most
/// [`BLOCK_TIMEOUT`], then stops the whole group (a server a block started in
/// the background included) unless `keep` is set, in which case the group's id
/// is returned for [`stop_group`].
fn run_in_group(
    program: &str,
    args: &[&str],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    keep: bool,
) -> (std::process::ExitStatus, Ran, Option<i32>) {
    use std::os::unix::process::CommandExt;
    let out_path = cwd.join(".readme-stdout");
    let err_path = cwd.join(".readme-stderr");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let group = i32::try_from(child.id()).expect("pid");
    let deadline = Instant::now() + BLOCK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() || !keep {
        stop_group(group);
    }
    let _ = child.wait();
    let ran = Ran {
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    };
    let Some(status) = status else {
        panic!("{program} {args:?} did not end within {BLOCK_TIMEOUT:?}: {ran:#?}");
    };
    (status, ran, keep.then_some(group))
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// SIGTERM to the process group, SIGKILL to what is left a few seconds later.
fn stop_group(group: i32) {
    // SAFETY: signals only the process group this test started.
    unsafe {
        libc::kill(-group, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: as above; signal 0 only checks whether the group still exists.
    while unsafe { libc::kill(-group, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Runs a shell block; fails the test if it fails or an answer was an error.
fn run_shell(
    block: &Block,
    port: u16,
    ws: &Workspace,
    vars: &[(&str, String)],
    keep: bool,
) -> (Ran, Option<i32>) {
    let script = ws.path().join(format!("readme-{}.sh", block.line));
    std::fs::write(
        &script,
        format!("{SHELL_PRELUDE}{}", at_port(&block.code, port)),
    )
    .expect("write the script");
    let script = script.display().to_string();
    let (status, ran, group) = run_in_group("bash", &[&script], ws.path(), &ws.env(vars), keep);
    let errors: Vec<&str> = ran
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("README-HTTP "))
        .filter(|l| {
            let code: u16 = l
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            code >= 400 && code != 409
        })
        .collect();
    if !(status.success() && errors.is_empty())
        && let Some(group) = group
    {
        stop_group(group);
    }
    assert!(
        status.success() && errors.is_empty(),
        "README.md line {} (\"{}\") failed ({status}; error answers: {errors:?}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
        block.line,
        block.section,
        block.code,
        ran.stdout,
        ran.stderr
    );
    (ran, group)
}

/// Node.js 20+ with the npm `socket.io-client` of `tests/e2e` (installed from its
/// lock file if missing); `None` (after saying so) if Node.js is missing.
fn node_modules() -> Option<&'static PathBuf> {
    static MODULES: OnceLock<Option<PathBuf>> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            let node = Command::new("node")
                .args([
                    "-e",
                    "process.exit(+process.versions.node.split('.')[0] >= 20 ? 0 : 1)",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if !node {
                skip::missing("the README's JavaScript examples", "Node.js 20 or newer");
                return None;
            }
            let e2e = root().join("tests/e2e");
            if !e2e.join("node_modules/socket.io-client").is_dir() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&e2e)
                    .status()
                    .unwrap_or_else(|e| panic!("cannot run npm: {e}"));
                assert!(status.success(), "npm ci failed in tests/e2e");
            }
            Some(e2e.join("node_modules"))
        })
        .as_ref()
}

/// Runs a JavaScript block (with `prelude` before it and `epilogue` after) as
/// `<file>` with `args`; returns its exit status and output.
fn run_js(
    block: &Block,
    port: u16,
    ws: &Workspace,
    modules: &Path,
    (prelude, epilogue): (&str, &str),
    node_args: &[&str],
    vars: &[(&str, String)],
) -> (std::process::ExitStatus, Ran) {
    let link = ws.path().join("node_modules");
    if !link.exists() {
        std::os::unix::fs::symlink(modules, &link).expect("link node_modules");
    }
    let file = ws.path().join(format!("readme-{}.mjs", block.line));
    std::fs::write(
        &file,
        at_port(&format!("{prelude}{}{epilogue}", block.code), port),
    )
    .expect("write the script");
    let mut args: Vec<String> = node_args.iter().map(|a| (*a).to_owned()).collect();
    args.insert(
        node_args.iter().take_while(|a| a.starts_with("--")).count(),
        file.display().to_string(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, ran, _) = run_in_group("node", &args, ws.path(), &ws.env(vars), false);
    (status, ran)
}

// ---- the server the blocks talk to -----------------------------------------------

/// A server started by the launcher with the built-in pipelines, no
/// authentication, and a worker token.
fn start_server(ws: &Workspace) -> server::Server {
    let cwd = ws.path().join("server");
    std::fs::create_dir_all(&cwd).expect("server dir");
    server::start(
        &cwd,
        [
            ("HOST", "127.0.0.1".to_owned()),
            ("DATA_DIR", cwd.join("data").display().to_string()),
            ("WORKER_TOKEN", WORKER_TOKEN.to_owned()),
        ],
    )
    .expect("the server starts")
}

fn http(method: &str, url: &str, body: Option<&str>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "-X", method, url]);
    if let Some(body) = body {
        cmd.args(["-H", "content-type: application/json", "-d", body]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{method} {url}: {text} {out:?}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
}

/// Starts the built-in `demo` pipeline and waits for it to finish; its id.
fn finished_demo_job(server: &server::Server) -> String {
    let job = http(
        "POST",
        &format!("{}/api/jobs", server.address),
        Some(r#"{"projectId":"web","pipeline":"demo"}"#),
    );
    let id = job["jobId"].as_str().expect("jobId").to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let job = http("GET", &format!("{}/api/jobs/{id}", server.address), None);
        if !job["finishedAt"].is_null() {
            assert_eq!(job["status"], "completed", "{job}");
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the demo job did not finish: {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- one test per section ----------------------------------------------------------

#[test]
fn watch_a_build_in_30_seconds() {
    let ws = Workspace::new();
    let server = start_server(&ws);
    let blocks = section("Watch a build in 30 seconds");
    let mut job_id = None;
    for block in &blocks {
        match block.lang {
            "sh" => {
                let (ran, _) = run_shell(block, server.port, &ws, &[], false);
                let created: Value = serde_json::from_str(ran.stdout.trim())
                    .unwrap_or_else(|e| panic!("line {}: {e}: {}", block.line, ran.stdout));
                assert_eq!(created["status"], "queued", "{created}");
                job_id = Some(created["jobId"].as_str().expect("jobId").to_owned());
            }
            _ => {
                let Some(modules) = node_modules() else {
                    continue;
                };
                // `node watch.mjs <jobId>`, as its first line says.
                let id = job_id.clone().expect("the shell example comes first");
                let (status, ran) = run_js(block, server.port, &ws, modules, ("", ""), &[&id], &[]);
                assert!(status.success(), "line {}: {status}: {ran:#?}", block.line);
                for expected in [
                    "[10%] preparing:",
                    "  Compiling unit 20/20",
                    "  3 passed; 0 failed",
                    "completed in ",
                    "artifacts: app.bin",
                ] {
                    assert!(
                        ran.stdout.contains(expected),
                        "line {}: no {expected:?} in: {ran:#?}",
                        block.line
                    );
                }
            }
        }
    }
}

#[test]
fn history_seq_and_resuming() {
    let ws = Workspace::new();
    let server = start_server(&ws);
    let job = finished_demo_job(&server);
    let Some(modules) = node_modules() else {
        return;
    };
    let prelude = "import { io } from 'socket.io-client';\n\
                   const socket = io('http://localhost:3001', { path: '/ws' });\n\
                   const jobId = process.env.JOB;\n\
                   const lastSeq = 0;\n\
                   const showLine = (line) => console.log(line.message);\n";
    let epilogue = "\nsocket.on('job:completed', () => socket.close());\n\
                    setTimeout(() => { console.error('no job:completed'); process.exit(3); }, 30000).unref();\n";
    for block in section("History, `seq` and resuming") {
        assert_eq!(block.lang, "js", "line {}", block.line);
        let (status, ran) = run_js(
            &block,
            server.port,
            &ws,
            modules,
            (prelude, epilogue),
            &[],
            &[("JOB", job.clone())],
        );
        assert!(status.success(), "line {}: {status}: {ran:#?}", block.line);
        // Every line of the build, through job:logs runs.
        for expected in [
            "Fetching serde",
            "Compiling unit 20/20",
            "3 passed; 0 failed",
        ] {
            assert!(ran.stdout.contains(expected), "no {expected:?}: {ran:#?}");
        }
    }
}

#[test]
fn rest_api() {
    let ws = Workspace::new();
    let server = start_server(&ws);
    let job = finished_demo_job(&server);
    for block in section("REST API") {
        assert_eq!(block.lang, "sh", "line {}", block.line);
        let (ran, _) = run_shell(&block, server.port, &ws, &[("JOB", job.clone())], false);
        // The artifact download wrote the file the demo build made.
        let artifact = std::fs::read_to_string(ws.path().join("app.bin")).unwrap_or_default();
        assert_eq!(artifact, format!("binary for job {job}\n"), "{ran:#?}");
        assert!(ran.stdout.contains(r#""status":"ok""#), "{ran:#?}");
    }
}

#[test]
fn follow_a_build_without_socket_io() {
    let ws = Workspace::new();
    let server = start_server(&ws);
    let job = finished_demo_job(&server);
    let vars = [
        ("JOB", job.clone()),
        ("TOKEN", "not-checked-without-auth".to_owned()),
        ("BUILDCAST_URL", server.address.clone()),
    ];
    for block in section("Follow a build without Socket.IO") {
        if block.lang == "sh" {
            let (ran, _) = run_shell(&block, server.port, &ws, &vars, false);
            assert!(ran.stdout.contains("Compiling unit 20/20"), "{ran:#?}");
            continue;
        }
        let Some(modules) = node_modules() else {
            continue;
        };
        // A browser fragment: Node.js has EventSource behind a flag.
        let has_event_source = Command::new("node")
            .args([
                "--experimental-eventsource",
                "-e",
                "process.exit(typeof EventSource === 'function' ? 0 : 1)",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_event_source {
            skip::missing(
                "the README's EventSource example",
                "Node.js with EventSource (20.18 or newer)",
            );
            continue;
        }
        let prelude = "const server = process.env.SERVER;\n\
                       const jobId = process.env.JOB;\n\
                       const token = process.env.TOKEN;\n\
                       const showProgress = (p) => console.log(`progress ${p.progress}`);\n\
                       const clearEverything = () => console.log('reset');\n\
                       setTimeout(() => { console.error('no job:completed'); process.exit(3); }, 60000).unref();\n";
        let vars = [
            ("SERVER", server.address.clone()),
            ("JOB", job.clone()),
            ("TOKEN", String::new()),
        ];
        let (status, ran) = run_js(
            &block,
            server.port,
            &ws,
            modules,
            (prelude, ""),
            &["--experimental-eventsource", "--no-warnings"],
            &vars,
        );
        assert!(status.success(), "line {}: {status}: {ran:#?}", block.line);
        for expected in ["Compiling unit 20/20", "3 passed; 0 failed", "progress 100"] {
            assert!(ran.stdout.contains(expected), "no {expected:?}: {ran:#?}");
        }
    }
}

#[test]
fn try_it() {
    let ws = Workspace::new();
    let blocks = section("Try it");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (shell, js): (Vec<&Block>, Vec<&Block>) = blocks.iter().partition(|b| b.lang == "sh");
    assert_eq!(shell.len(), 1, "one shell example starts the server");
    // The script ends with the server still running in the background; keep the
    // token it minted for the JavaScript example.
    let mut block = shell[0].clone();
    block
        .code
        .push_str("printf '%s' \"$TOKEN\" > minted-token\n");
    let (ran, group) = run_shell(&block, port, &ws, &[("PORT", port.to_string())], true);
    let group = group.expect("the group");
    let result = std::panic::catch_unwind(|| {
        assert!(ran.stdout.contains(r#""jobs":"#), "{ran:#?}");
        let token = std::fs::read_to_string(ws.path().join("minted-token")).expect("the token");
        assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");
        let Some(modules) = node_modules() else {
            return;
        };
        let prelude = "import { io } from 'socket.io-client';\n\
                       const token = process.env.TOKEN;\n";
        let epilogue = "\nsocket.on('connect', () => { console.log('connected'); socket.close(); });\n\
                        socket.on('connect_error', () => setTimeout(() => socket.close(), 100));\n\
                        setTimeout(() => { console.error('neither connected nor refused'); process.exit(3); }, 20000).unref();\n";
        for block in &js {
            // The good token connects; a bad one gets the error the comment shows.
            let (status, ran) = run_js(
                block,
                port,
                &ws,
                modules,
                (prelude, epilogue),
                &[],
                &[("TOKEN", token.clone())],
            );
            assert!(status.success(), "{ran:#?}");
            assert!(ran.stdout.contains("connected"), "{ran:#?}");
            let (status, ran) = run_js(
                block,
                port,
                &ws,
                modules,
                (prelude, epilogue),
                &[],
                &[("TOKEN", "not-a-token".to_owned())],
            );
            assert!(status.success(), "{ran:#?}");
            assert!(ran.stderr.contains("Authentication error"), "{ran:#?}");
            assert!(!ran.stdout.contains("connected"), "{ran:#?}");
        }
    });
    stop_group(group);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn external_workers() {
    let ws = Workspace::new();
    let server = start_server(&ws);
    for block in section("External workers") {
        assert_eq!(block.lang, "sh", "line {}", block.line);
        let (ran, _) = run_shell(
            &block,
            server.port,
            &ws,
            &[("WORKER_TOKEN", WORKER_TOKEN.to_owned())],
            false,
        );
        let answer: Value =
            serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {ran:#?}"));
        assert_eq!(answer["accepted"], 3, "{answer}");
        assert_eq!(answer["jobId"], "nightly-42", "{answer}");
        let job = http(
            "GET",
            &format!("{}/api/jobs/nightly-42", server.address),
            None,
        );
        assert_eq!(job["status"], "completed", "{job}");
    }
}
