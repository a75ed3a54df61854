//! Starts the real `buildcast` binary for a Rust test and learns its port from
//! the server itself: it runs with `PORT=0 --port-file <file>` and the test waits
//! for the file, which the server writes (whole, by a rename) once it listens.
//! The JavaScript suites do the same through `tests/support/server.mjs`.
//!
//! The server's environment is only what the caller passes (plus `PATH`, `HOME`
//! and defaults for quiet logs), and it runs in a folder of the caller's choosing,
//! so no `.env` or variable of the developer's shell leaks in. Its output is kept
//! (the last 256 KiB of each stream) for error messages, or written to a file
//! ([`start_logging_to`]: a log file, as an operator redirects it), and the
//! process is killed if the `Server` is dropped while it still runs.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_buildcast");

/// How long a server may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

const KEEP_BYTES: usize = 256 * 1024;

/// A running server.
pub struct Server {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    output: Output,
    _port_dir: tempfile::TempDir,
}

/// Where the server's standard output and error go.
enum Output {
    /// Pipes read into a buffer of the last [`KEEP_BYTES`].
    Kept(Arc<Mutex<VecDeque<u8>>>),
    /// Both appended to this file.
    File(PathBuf),
}

/// Starts the binary in `cwd` with `env` (which should set `HOST`, `DATA_DIR`
/// and `PIPELINES_FILE`; `PORT` defaults to 0) and waits until it listens.
/// Fails with the server's output if it exits first or does not listen within
/// [`START_TIMEOUT`].
pub fn start<K, V>(cwd: &Path, env: impl IntoIterator<Item = (K, V)>) -> Result<Server, String>
where
    K: Into<OsString>,
    V: Into<OsString>,
{
    launch(cwd, env, None)
}

/// As [`start`], with the server's standard output and error both going to the
/// file `log` (created or truncated), as when an operator redirects them; the
/// default `NO_COLOR=1` is not set, so what colours do there is the server's own
/// choice. [`Server::output`] reads the file.
pub fn start_logging_to<K, V>(
    cwd: &Path,
    env: impl IntoIterator<Item = (K, V)>,
    log: &Path,
) -> Result<Server, String>
where
    K: Into<OsString>,
    V: Into<OsString>,
{
    launch(cwd, env, Some(log))
}

fn launch<K, V>(
    cwd: &Path,
    env: impl IntoIterator<Item = (K, V)>,
    log: Option<&Path>,
) -> Result<Server, String>
where
    K: Into<OsString>,
    V: Into<OsString>,
{
    let port_dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    let port_file = port_dir.path().join("port");
    let mut command = Command::new(BIN);
    command
        .arg("--port-file")
        .arg(&port_file)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        )
        .env("PORT", "0")
        .env("RUST_LOG", "warn,buildcast=info");
    if log.is_none() {
        command.env("NO_COLOR", "1");
    }
    command
        .envs(env.into_iter().map(|(k, v)| (k.into(), v.into())))
        .stdin(Stdio::null());
    if let Some(log) = log {
        let file = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let copy = file
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        command.stdout(file).stderr(copy);
    } else {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {BIN}: {e}"))?;
    let kept = Arc::new(Mutex::new(VecDeque::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let kept = Arc::clone(&kept);
        std::thread::spawn(move || keep(stream, &kept));
    }
    let output = match log {
        Some(log) => Output::File(log.to_owned()),
        None => Output::Kept(kept),
    };
    let mut server = Server {
        child,
        port: 0,
        address: String::new(),
        output,
        _port_dir: port_dir,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(port) = read_port(&port_file) {
            server.port = port;
            server.address = format!("http://127.0.0.1:{port}");
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            // Let the reader threads take the last of the output.
            std::thread::sleep(Duration::from_millis(50));
            return Err(format!(
                "buildcast exited ({status}) before listening:\n{}",
                server.output()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "buildcast did not listen within {START_TIMEOUT:?}:\n{}",
                server.output()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_port(file: &PathBuf) -> Option<u16> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn keep(mut stream: Box<dyn Read + Send>, output: &Mutex<VecDeque<u8>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut out = output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.extend(&buf[..n]);
        let excess = out.len().saturating_sub(KEEP_BYTES);
        out.drain(..excess);
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed so far (stdout and stderr, interleaved): at most
    /// the last 256 KiB, or the whole log file.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output_bytes()).into_owned()
    }

    /// [`Server::output`] as the bytes written.
    pub fn output_bytes(&self) -> Vec<u8> {
        match &self.output {
            Output::Kept(kept) => kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .copied()
                .collect(),
            Output::File(path) => std::fs::read(path).unwrap_or_default(),
        }
    }

    /// Sends SIGTERM and waits for the exit, killing the server after `grace`.
    /// Returns its exit status, or an error if it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = i32::try_from(self.pid()).expect("a pid");
        // SAFETY: kill only sends a signal to the process this test started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "buildcast did not stop within {grace:?} of SIGTERM:\n{}",
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
