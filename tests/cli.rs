//! The `buildcast` binary as a user runs it, from the outside: `buildcast token`
//! checks its secret as the server does, a log written to a file holds no colour
//! codes (on a terminal it has them, unless `NO_COLOR` is set), a build's steps
//! do not see the server's own secrets (but do see the rest of its environment),
//! and `SHUTDOWN_GRACE_SECS` does not cut a step's stop short. Each test runs the
//! real binary; servers are started by the one launcher,
//! `tests/support/server.rs`, except under a terminal, where `script`
//! (util-linux) starts it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/server.rs"]
mod server;

/// 40 bytes: long enough for the server.
const GOOD_SECRET: &str = "a-test-secret-of-forty-bytes-0123456789x";

/// Runs `buildcast args…` with only `env` (and `PATH`) in its environment, in `cwd`.
fn buildcast(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(server::BIN)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run buildcast")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The server's environment for these tests: loopback, its own data folder.
fn base_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("HOST".into(), "127.0.0.1".into()),
        ("DATA_DIR".into(), dir.join("data").display().to_string()),
    ]
}

#[test]
fn token_refuses_a_secret_the_server_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The server, given a short secret, stops at start-up with one line.
    let mut env = base_env(dir.path());
    env.push(("AUTH_MODE".into(), "jwt".into()));
    env.push(("JWT_SECRET".into(), "too-short".into()));
    let refused = match server::start(dir.path(), env) {
        Ok(_) => panic!("the server started with a 9-byte JWT_SECRET"),
        Err(e) => e,
    };
    let server_line = refused
        .lines()
        .find(|l| l.contains("JWT_SECRET"))
        .unwrap_or_else(|| panic!("no line about JWT_SECRET in: {refused}"))
        .to_owned();
    assert_eq!(
        server_line,
        r#"buildcast: invalid JWT_SECRET="(hidden)": must be at least 32 bytes"#
    );

    // `buildcast token` with the same secret, from the environment or --secret:
    // the same line, no token, a failing exit status.
    for (args, env) in [
        (
            vec!["token", "--sub", "alice"],
            vec![("JWT_SECRET", "too-short")],
        ),
        (
            vec!["token", "--sub", "alice", "--secret", "too-short"],
            vec![],
        ),
        // Spaces do not count: the server trims every value.
        (
            vec!["token", "--sub", "alice"],
            vec![("JWT_SECRET", "   too-short                       ")],
        ),
    ] {
        let out = buildcast(dir.path(), &args, &env);
        assert!(!out.status.success(), "{args:?} {env:?}: {out:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}: printed a token");
        assert_eq!(
            text(&out.stderr).trim_end(),
            server_line,
            "{args:?} {env:?}"
        );
        assert!(
            !text(&out.stderr).contains("too-short"),
            "the secret is shown"
        );
    }
}

#[tokio::test]
async fn a_token_from_buildcast_token_is_accepted_by_the_server_with_the_same_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Written in a .env file with spaces around it, the secret is the same for
    // both: the server trims values, and so does the token subcommand.
    let padded = format!("  {GOOD_SECRET}  ");
    let out = buildcast(
        dir.path(),
        &["token", "--sub", "alice", "--role", "builder"],
        &[("JWT_SECRET", &padded)],
    );
    assert!(out.status.success(), "{out:?}");
    let token = text(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let mut env = base_env(dir.path());
    env.push(("AUTH_MODE".into(), "jwt".into()));
    env.push(("JWT_SECRET".into(), padded));
    let server = server::start(dir.path(), env).expect("server");
    let client = reqwest::Client::new();
    let me = client
        .get(format!("{}/api/me", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(me.status(), 200, "{}", server.output());
    let me: Value = me.json().await.expect("JSON");
    assert_eq!(me["user"], "alice", "{me}");
    assert_eq!(me["role"], "builder", "{me}");
    let without = client
        .get(format!("{}/api/me", server.address))
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(without.status(), 401);
}

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    // NO_COLOR is not set: the output is not a terminal, that alone must do.
    let mut env = base_env(dir.path());
    env.push(("RUST_LOG".into(), "buildcast=info,tower_http=info".into()));
    let mut server = server::start_logging_to(dir.path(), env, &log).expect("server");
    let health = reqwest::get(format!("{}/health", server.address))
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200);
    let missing = reqwest::get(format!("{}/api/jobs/nope", server.address))
        .await
        .expect("GET a missing job");
    assert_eq!(missing.status(), 404);
    let status = server.stop(Duration::from_secs(20)).expect("stops");
    assert!(status.success(), "{status}");

    let bytes = server.output_bytes();
    let written = text(&bytes);
    // The log has what colours would have been put on: levels, the start-up
    // line, the access log.
    assert!(written.contains("INFO"), "{written}");
    assert!(
        written.contains("listening on http://127.0.0.1:"),
        "{written}"
    );
    assert!(written.contains("/api/jobs/nope"), "{written}");
    let escapes = bytes.iter().filter(|&&b| b == 0x1b).count();
    assert_eq!(escapes, 0, "ESC bytes in the log file:\n{written:?}");
}

/// Runs the server under `script` (util-linux), so its output is a terminal,
/// until it listens, then stops it; returns what it printed on that terminal.
fn output_on_a_terminal(dir: &Path, no_color: bool) -> Vec<u8> {
    let port_file = dir.join("port");
    let pid_file = dir.join("pid");
    let typescript = dir.join("typescript");
    let _ = std::fs::remove_file(&port_file);
    let inner = format!(
        "'{}' --port-file '{}' & echo $! > '{}'; wait",
        server::BIN,
        port_file.display(),
        pid_file.display()
    );
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-f", "-c", &inner])
        .arg(&typescript)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("PORT", "0")
        .env("RUST_LOG", "buildcast=info")
        .env("DATA_DIR", dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let mut script = command.spawn().expect("run script (util-linux)");
    let deadline = Instant::now() + server::START_TIMEOUT;
    while !(port_file.exists() && pid_file.exists()) {
        assert!(
            script.try_wait().expect("wait").is_none(),
            "the server under script ended early: {}",
            text(&std::fs::read(&typescript).unwrap_or_default())
        );
        assert!(Instant::now() < deadline, "the server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: signals the server this test started (its pid, written by the shell).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while script.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = script.kill();
            panic!("the server under script did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read(&typescript).expect("the typescript")
}

#[test]
fn on_a_terminal_the_log_has_colours_unless_no_color_is_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let coloured = output_on_a_terminal(dir.path(), false);
    assert!(
        text(&coloured).contains("listening on"),
        "{}",
        text(&coloured)
    );
    assert!(
        coloured.contains(&0x1b),
        "no colours on a terminal: {:?}",
        text(&coloured)
    );
    let plain = output_on_a_terminal(dir.path(), true);
    assert!(text(&plain).contains("listening on"), "{}", text(&plain));
    assert!(
        !plain.contains(&0x1b),
        "colours with NO_COLOR set: {:?}",
        text(&plain)
    );
}

#[tokio::test]
async fn steps_do_not_see_the_server_secrets_but_see_the_rest_of_its_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipelines = dir.path().join("pipelines.toml");
    std::fs::write(
        &pipelines,
        "[pipelines.env]\ndescription = \"prints its environment\"\ntimeout = \"60s\"\n\
         [pipelines.env.steps]\nbuild = \"env | sort\"\n",
    )
    .expect("pipelines file");
    let key_file = dir.path().join("key.pem");
    let mut env = base_env(dir.path());
    env.extend(
        [
            ("PIPELINES_FILE", pipelines.display().to_string()),
            // Read by the configuration whatever AUTH_MODE is: removed from steps.
            ("WORKER_TOKEN", "worker-token-value-0123456789".into()),
            // Secrets of the jwt mode, present in the environment of this
            // loopback server without authentication: removed all the same.
            ("JWT_SECRET", GOOD_SECRET.into()),
            ("JWT_PUBLIC_KEY_FILE", key_file.display().to_string()),
            // Not the server's: a build may need them.
            ("DATABASE_URL", "postgres://ci@db.example/test".into()),
            ("BUILD_SETTING", "passed-on".into()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let server = server::start(dir.path(), env).expect("server");
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/api/jobs", server.address))
        .json(&serde_json::json!({"projectId": "envcheck", "pipeline": "env"}))
        .send()
        .await
        .expect("POST /api/jobs");
    assert_eq!(created.status(), 201, "{}", server.output());
    let job: Value = created.json().await.expect("JSON");
    let id = job["jobId"].as_str().expect("jobId").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = client
            .get(format!("{}/api/jobs/{id}", server.address))
            .send()
            .await
            .expect("GET job")
            .json()
            .await
            .expect("JSON");
        if !job["finishedAt"].is_null() {
            assert_eq!(job["status"], "completed", "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = client
        .get(format!("{}/api/jobs/{id}/log", server.address))
        .send()
        .await
        .expect("GET log")
        .text()
        .await
        .expect("log text");
    assert!(log.contains("BUILD_SETTING=passed-on"), "{log}");
    assert!(
        log.contains("DATABASE_URL=postgres://ci@db.example/test"),
        "{log}"
    );
    assert!(log.contains(&format!("BUILDCAST_JOB_ID={id}")), "{log}");
    for secret in [
        "JWT_SECRET",
        "WORKER_TOKEN",
        "JWT_PUBLIC_KEY_FILE",
        GOOD_SECRET,
        "worker-token-value",
    ] {
        assert!(!log.contains(secret), "a step saw {secret}:\n{log}");
    }
}

#[tokio::test]
async fn shutdown_grace_is_for_clients_a_step_that_ignores_sigterm_still_gets_its_two_seconds() {
    // SHUTDOWN_GRACE_SECS=0: no wait for clients. A step is still sent SIGTERM
    // and killed 2 s later, whatever SHUTDOWN_GRACE_SECS says, and its job ends
    // failed in history.
    let dir = tempfile::tempdir().expect("temp dir");
    let pipelines = dir.path().join("pipelines.toml");
    std::fs::write(
        &pipelines,
        "[pipelines.stubborn]\ndescription = \"ignores SIGTERM\"\ntimeout = \"10m\"\n\
         [pipelines.stubborn.steps]\nbuild = \"trap '' TERM; echo started; sleep 600\"\n",
    )
    .expect("pipelines file");
    let mut env = base_env(dir.path());
    env.push(("PIPELINES_FILE".into(), pipelines.display().to_string()));
    env.push(("SHUTDOWN_GRACE_SECS".into(), "0".into()));
    let mut server = server::start(dir.path(), env.clone()).expect("server");
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/api/jobs", server.address))
        .json(&serde_json::json!({"projectId": "stop", "pipeline": "stubborn"}))
        .send()
        .await
        .expect("POST /api/jobs")
        .json()
        .await
        .expect("JSON");
    let id = created["jobId"].as_str().expect("jobId").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = client
            .get(format!("{}/api/jobs/{id}/log", server.address))
            .send()
            .await
            .expect("GET log")
            .text()
            .await
            .expect("text");
        if log.contains("started") {
            break;
        }
        assert!(Instant::now() < deadline, "the step did not start: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stopping = Instant::now();
    let status = server.stop(Duration::from_secs(30)).expect("stops");
    let took = stopping.elapsed();
    assert!(status.success(), "{status}: {}", server.output());
    assert!(
        took >= Duration::from_millis(1500),
        "stopped in {took:?}: the step was not given its 2 s"
    );
    assert!(took < Duration::from_secs(20), "stopped in {took:?}");

    let server = server::start(dir.path(), env).expect("restarted");
    let job: Value = client
        .get(format!("{}/api/jobs/{id}", server.address))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("JSON");
    assert_eq!(job["status"], "failed", "{job}");
}
