//! Runs a scenario against a server: starts the server with a fresh configuration,
//! creates the jobs, connects the clients in batches, lets the line source go, waits
//! until every client has every line (or delivery stalls), and measures.
//!
//! Server CPU comes from `/proc/<pid>/stat` (utime + stime, the server process only:
//! the line source and its shell are children and are not counted, for any server),
//! memory from `/proc/<pid>/status` (`VmRSS`, `VmHWM`), the load generator's own CPU
//! from getrusage.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::hist::Hist;
use crate::load::{self, ClientOptions, Shared, Transport};
use crate::scan;
use crate::sys::{self, now_ns};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Buildcast,
    /// The bare socketioxide reference (`socketioxide-ref`).
    Socketioxide,
    Node,
    Raw,
}

impl Server {
    pub const ALL: [Server; 4] = [
        Server::Buildcast,
        Server::Socketioxide,
        Server::Node,
        Server::Raw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Server::Buildcast => "buildcast",
            Server::Socketioxide => "socketioxide",
            Server::Node => "node",
            Server::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Server::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("unknown server {s:?} (buildcast, socketioxide, node, raw)"))
    }
}

/// Which transports the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    WebSocket,
    Polling,
    /// Every fifth client polls, the others use a WebSocket.
    Mixed,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "ws" | "websocket" => Ok(Mix::WebSocket),
            "polling" => Ok(Mix::Polling),
            "mixed" => Ok(Mix::Mixed),
            _ => Err(format!("unknown transport {s:?} (ws, polling, mixed)")),
        }
    }

    fn of(self, client: usize) -> Transport {
        match self {
            Mix::WebSocket => Transport::WebSocket,
            Mix::Polling => Transport::Polling,
            Mix::Mixed if client % 5 == 4 => Transport::Polling,
            Mix::Mixed => Transport::WebSocket,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mix::WebSocket => "ws",
            Mix::Polling => "polling",
            Mix::Mixed => "ws+polling",
        }
    }
}

/// What runs: clients spread over jobs, each job printing `lines` lines.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub clients: usize,
    pub jobs: usize,
    pub lines: u64,
    /// Lines per second per job; 0: as fast as possible.
    pub rate: u64,
    pub mix: Mix,
    /// Idle scenario: no lines, hold the subscribed clients this long and measure.
    pub idle_hold: Option<Duration>,
    /// Runs per server; the table shows medians.
    pub repeat: usize,
    /// Clients subscribe with `batch: true` (`--log-batch`): buildcast sends
    /// `job:logs` batches, the others ignore it and send `job:log`.
    pub log_batch: bool,
    /// Two buildcast nodes sharing a redis-server: the job runs on node a, every
    /// second client connects to node b (buildcast only).
    pub cluster: bool,
}

impl Scenario {
    /// Server processes per run.
    pub fn nodes(&self) -> usize {
        if self.cluster { 2 } else { 1 }
    }

    /// Whether this scenario runs against `server`.
    pub fn runs_on(&self, server: Server) -> bool {
        !self.cluster || server == Server::Buildcast
    }

    pub fn describe(&self) -> String {
        if self.idle_hold.is_some() {
            return format!(
                "{} idle subscribed clients ({})",
                self.clients,
                self.mix.label()
            );
        }
        let rate = if self.rate == 0 {
            "as fast as possible".to_string()
        } else {
            format!("{} lines/s", self.rate)
        };
        let jobs = if self.jobs > 1 {
            format!("{} jobs × {} clients", self.jobs, self.clients / self.jobs)
        } else {
            format!("{} clients", self.clients)
        };
        format!(
            "{jobs} ({}), {} lines per job, {rate}{}{}",
            self.mix.label(),
            self.lines,
            if self.log_batch {
                ", subscribed with batch: true"
            } else {
                ""
            },
            if self.cluster {
                ", two buildcast nodes and redis-server: the job on node a, every second client on node b"
            } else {
                ""
            }
        )
    }
}

/// The scenarios of a full run. `scale` multiplies line counts (not clients).
pub fn suite(scale: f64, repeat: usize) -> Vec<Scenario> {
    let lines = |n: u64| ((n as f64 * scale).round() as u64).max(1);
    let s = |name: &str, clients, jobs, n, rate, mix| Scenario {
        name: name.into(),
        clients,
        jobs,
        lines: lines(n),
        rate,
        mix,
        idle_hold: None,
        repeat: 1,
        log_batch: false,
        cluster: false,
    };
    vec![
        s("1k-100lps", 1000, 1, 1000, 100, Mix::WebSocket),
        s("5k-100lps", 5000, 1, 500, 100, Mix::WebSocket),
        Scenario {
            log_batch: true,
            ..s("5k-100lps-batch", 5000, 1, 500, 100, Mix::WebSocket)
        },
        Scenario {
            repeat,
            ..s("saturation", 1000, 1, 10_000, 0, Mix::WebSocket)
        },
        // Half the lines of `saturation`: node takes ~100 s for 10,000.
        Scenario {
            repeat,
            log_batch: true,
            ..s("saturation-batch", 1000, 1, 5_000, 0, Mix::WebSocket)
        },
        Scenario {
            idle_hold: Some(Duration::from_secs(5)),
            lines: 0,
            ..s("idle-10k", 10_000, 1, 0, 0, Mix::WebSocket)
        },
        s("200jobs", 1000, 200, 500, 50, Mix::WebSocket),
        // The per-line fan-out sweep: fanout-100, 1k-100lps, 5k-100lps, fanout-10k.
        s("fanout-100", 100, 1, 500, 100, Mix::WebSocket),
        // 1,000,000 deliveries/s offered: more than 2 cores give any server here.
        s("fanout-10k", 10_000, 1, 300, 100, Mix::WebSocket),
        // A CI farm: 200 builds at once, 20 watchers each, history on (buildcast's
        // default): 10,000 lines/s in, 200,000 deliveries/s out.
        s("ci-farm", 4000, 200, 500, 50, Mix::WebSocket),
        // Two buildcast nodes and Redis: the job on node a, half the clients on b.
        Scenario {
            cluster: true,
            ..s("cluster-1k", 1000, 1, 1000, 100, Mix::WebSocket)
        },
        s("polling-500", 500, 1, 500, 50, Mix::Polling),
        // Node takes ~5-10 s, buildcast ~8 s (per line), the floor ~1-2 s.
        s("polling-saturation", 500, 1, 10_000, 0, Mix::Polling),
        Scenario {
            log_batch: true,
            ..s("polling-saturation-batch", 500, 1, 10_000, 0, Mix::Polling)
        },
    ]
}

/// Where the servers and the line source are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub buildcast: PathBuf,
    pub node_dir: PathBuf,
    pub raw: PathBuf,
    pub socketioxide: PathBuf,
    pub linegen: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Clients connecting at once.
    pub batch: usize,
    /// Give up when no line arrived for this long after the source should be done.
    pub stall: Duration,
    /// Give up this long after the source should be done, whatever happens.
    pub max_wait: Duration,
    /// `RUST_LOG` for buildcast; its default when unset.
    pub rust_log: Option<String>,
    /// `WEBSOCKET_MAX_BUFFER_SIZE` for buildcast (`--buffer`); its default (1024)
    /// when unset. A small one makes a stalled client's queue fill at once.
    pub buffer: Option<usize>,
    /// Heartbeat given to every server (buildcast's default: 25 s).
    pub ping_interval_ms: u64,
    /// Keep each run's directory (server log, buildcast's data) instead of removing it.
    pub keep: bool,
    /// Each client drops its connection once after this many lines (`--drop-after`).
    pub drop_after: Option<u64>,
    /// Clients never resume (`--no-resume`): on buildcast too they subscribe again
    /// with the bare job id after a lost connection, so what they missed is lost.
    pub no_resume: bool,
    /// Every fifth WebSocket client reads slowly (`--slow-read-ms`).
    pub slow_read: Option<Duration>,
    /// Every fifth WebSocket client stops reading once (`--stall-read-ms`).
    pub stall_read: Option<Duration>,
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch: 200,
            stall: Duration::from_secs(15),
            max_wait: Duration::from_secs(300),
            rust_log: None,
            buffer: None,
            ping_interval_ms: 25_000,
            keep: false,
            drop_after: None,
            no_resume: false,
            slow_read: None,
            stall_read: None,
            verbose: false,
        }
    }
}

/// The figures of one run (or the medians of several).
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub scenario: String,
    pub server: String,
    pub runs: usize,
    pub clients: usize,
    /// Clients that never subscribed, or ended with an error.
    pub failed_clients: usize,
    pub first_error: Option<String>,
    pub expected: u64,
    /// Distinct lines delivered, over all clients.
    pub delivered: u64,
    pub lost: u64,
    pub dup: u64,
    pub out_of_order: u64,
    /// Reconnections after a lost connection, over all clients.
    pub reconnects: u64,
    /// Why a client lost its connection the first time.
    pub first_disconnect: Option<String>,
    /// `job:logs` batches received (buildcast with `--log-batch`), over all clients.
    pub batches: u64,
    /// Seconds from "go" to the last line received.
    pub window_s: f64,
    pub msgs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Seconds to connect and subscribe every client.
    pub connect_s: f64,
    /// Server CPU while the clients connected.
    pub server_cpu_connect_s: f64,
    /// Server CPU from "go" until the last client had every line (idle: over the hold).
    pub server_cpu_s: f64,
    pub cpu_us_per_msg: f64,
    pub rss_start_kib: u64,
    pub rss_subscribed_kib: u64,
    pub peak_rss_kib: u64,
    pub rss_per_conn_kib: f64,
    /// The load generator's CPU over the same period as `server_cpu_s`.
    pub loadgen_cpu_s: f64,
    /// buildcast only: sockets switched to catch-up from history (`/health`).
    pub lagged: Option<u64>,
    /// Why the run ended before every line arrived, if it did.
    pub ended: Option<String>,
    pub idle: bool,
    /// The cluster scenario: each node's clients and figures...
    pub nodes: Vec<NodeFigures>,
    /// ...and Redis's CPU over the same period as `server_cpu_s` (which includes it).
    pub redis_cpu_s: Option<f64>,
}

/// One node of the cluster scenario.
#[derive(Debug, Clone, Default)]
pub struct NodeFigures {
    pub name: String,
    pub clients: usize,
    pub delivered: u64,
    pub msgs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

impl RunResult {
    /// Every client subscribed and received every line exactly once, in order.
    pub fn is_clean(&self) -> bool {
        self.failed_clients == 0
            && self.lost == 0
            && self.dup == 0
            && self.out_of_order == 0
            && self.delivered == self.expected
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {}: clients={} failed={} delivered={}/{} lost={} dup={} ooo={} reconnects={} window={:.2}s msgs/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms connect={:.2}s server_cpu={:.2}s cpu_us/msg={:.2} rss_start={}KiB rss_subscribed={}KiB peak_rss={}KiB rss/conn={:.1}KiB loadgen_cpu={:.2}s",
            self.scenario,
            self.server,
            self.clients,
            self.failed_clients,
            self.delivered,
            self.expected,
            self.lost,
            self.dup,
            self.out_of_order,
            self.reconnects,
            self.window_s,
            self.msgs_per_s,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.connect_s,
            self.server_cpu_s,
            self.cpu_us_per_msg,
            self.rss_start_kib,
            self.rss_subscribed_kib,
            self.peak_rss_kib,
            self.rss_per_conn_kib,
            self.loadgen_cpu_s,
        );
        if let Some(l) = self.lagged {
            let _ = write!(s, " lagged_catch_ups={l}");
        }
        if self.batches > 0 {
            let _ = write!(
                s,
                " batches={} lines/batch={:.1}",
                self.batches,
                self.delivered as f64 / self.batches as f64
            );
        }
        for n in &self.nodes {
            let _ = write!(
                s,
                " node_{}=[clients={} delivered={} msgs/s={:.0} p50={:.2}ms p99={:.2}ms cpu={:.2}s peak_rss={}KiB]",
                n.name,
                n.clients,
                n.delivered,
                n.msgs_per_s,
                n.p50_ms,
                n.p99_ms,
                n.cpu_s,
                n.peak_rss_kib
            );
        }
        if let Some(c) = self.redis_cpu_s {
            let _ = write!(s, " redis_cpu={c:.2}s");
        }
        if let Some(e) = &self.ended {
            let _ = write!(s, " ended={e:?}");
        }
        if let Some(e) = &self.first_error {
            let _ = write!(s, " first_error={e:?}");
        }
        if let Some(e) = &self.first_disconnect {
            let _ = write!(s, " first_disconnect={e:?}");
        }
        s
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// A port free right now, for redis-server (the servers under test tell theirs).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Running {
    child: Child,
    pid: u32,
    log: PathBuf,
    /// Where a server writes its port once it listens (`--port-file`).
    port_file: Option<PathBuf>,
}

impl Running {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    async fn stop(mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(
    server: Server,
    paths: &Paths,
    opts: &Options,
    dir: &Path,
    jobs: usize,
    line_command: &str,
    cluster: Option<(&str, &str)>,
) -> Result<Running, String> {
    let log = dir.join("server.log");
    let port_file = dir.join("port");
    let out = std::fs::File::create(&log).map_err(|e| format!("server log: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("server log: {e}"))?;
    let mut cmd = match server {
        Server::Buildcast => Command::new(&paths.buildcast),
        Server::Node => {
            let mut c = Command::new("node");
            c.arg(paths.node_dir.join("server.mjs"));
            c
        }
        Server::Raw => Command::new(&paths.raw),
        Server::Socketioxide => Command::new(&paths.socketioxide),
    };
    // Every server, buildcast and the references alike, listens on a port of its
    // choosing and writes it to the file given with --port-file once it listens.
    cmd.arg("--port-file").arg(&port_file);
    // A clean environment (no developer .env or settings leak in), the same
    // Socket.IO path and heartbeat on every server, loopback only.
    cmd.env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME" || k == "LANG"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("WEBSOCKET_PATH", "/ws")
        .env(
            "WEBSOCKET_PING_INTERVAL_MS",
            opts.ping_interval_ms.to_string(),
        )
        .env("WEBSOCKET_PING_TIMEOUT_MS", "20000")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    match server {
        Server::Buildcast => {
            // The line source as the pipeline's one step; history and persistence
            // as by default, in a fresh DATA_DIR.
            let pipelines = dir.join("pipelines.toml");
            let toml = format!(
                "[pipelines.bench]\ndescription = \"benchmark line source\"\ntimeout = \"1h\"\n\n\
                 [pipelines.bench.steps]\nbuild = '''{line_command}'''\n"
            );
            std::fs::write(&pipelines, toml).map_err(|e| format!("pipelines file: {e}"))?;
            cmd.env("DATA_DIR", dir.join("data"))
                .env("PIPELINES_FILE", &pipelines)
                .env("MAX_CONCURRENT_JOBS", jobs.max(2).to_string());
            if let Some(l) = &opts.rust_log {
                cmd.env("RUST_LOG", l);
            }
            if let Some(n) = opts.buffer {
                cmd.env("WEBSOCKET_MAX_BUFFER_SIZE", n.to_string());
            }
            if let Some((redis_url, node_id)) = cluster {
                cmd.env("REDIS_URL", redis_url).env("NODE_ID", node_id);
            }
        }
        Server::Node | Server::Raw | Server::Socketioxide => {
            cmd.env("LINE_COMMAND", line_command);
        }
    }
    let child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start {} ({}): {e}",
            server.name(),
            match server {
                Server::Buildcast => paths.buildcast.display().to_string(),
                Server::Node => "node".into(),
                Server::Raw => paths.raw.display().to_string(),
                Server::Socketioxide => paths.socketioxide.display().to_string(),
            }
        )
    })?;
    let pid = child.id();
    Ok(Running {
        child,
        pid,
        log,
        port_file: Some(port_file),
    })
}

/// Waits for the server to write its port, then for `/health` to answer 200;
/// returns the address to use.
async fn wait_ready(srv: &mut Running) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let port_file = srv.port_file.clone().ok_or("no --port-file")?;
    let mut addr: Option<SocketAddr> = None;
    loop {
        if let Some(status) = srv.exited() {
            return Err(format!(
                "server exited ({status}) before it was ready:\n{}",
                srv.log_tail()
            ));
        }
        if addr.is_none() {
            addr = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
                .filter(|&p| p != 0)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        }
        if let Some(addr) = addr
            && let Ok((200, _)) = load::http_once(addr, "GET", "/health", None).await
        {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(format!("server not ready after 60 s:\n{}", srv.log_tail()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Runs `scenario` once against `server`.
pub async fn run_once(
    server: Server,
    scenario: &Scenario,
    paths: &Paths,
    opts: &Options,
) -> RunResult {
    let dir = std::env::temp_dir().join(format!(
        "buildcast-bench-{}-{}",
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut r = RunResult {
        scenario: scenario.name.clone(),
        server: server.name().into(),
        runs: 1,
        clients: scenario.clients,
        idle: scenario.idle_hold.is_some(),
        ..RunResult::default()
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        r.ended = Some(format!("temp dir: {e}"));
        return r;
    }
    let outcome = measure(server, scenario, paths, opts, &dir, &mut r).await;
    if let Err(e) = outcome {
        r.ended = Some(e);
    }
    if opts.keep {
        eprintln!("  kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

/// `redis-server` on `port`, no persistence, loopback only (the cluster scenario).
fn start_redis(dir: &Path, port: u16) -> Result<Running, String> {
    let log = dir.join("redis.log");
    let out = std::fs::File::create(&log).map_err(|e| format!("redis log: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("redis log: {e}"))?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start redis-server (the cluster scenario needs it): {e}"))?;
    let pid = child.id();
    Ok(Running {
        child,
        pid,
        log,
        port_file: None,
    })
}

async fn wait_redis(redis: &mut Running, port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if redis.exited().is_some() {
            return Err(format!("redis-server exited:\n{}", redis.log_tail()));
        }
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut buf = [0u8; 64];
            if s.write_all(b"PING\r\n").await.is_ok()
                && let Ok(n) = s.read(&mut buf).await
                && buf[..n].starts_with(b"+PONG")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("redis-server not ready after 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure(
    server: Server,
    sc: &Scenario,
    paths: &Paths,
    opts: &Options,
    dir: &Path,
    r: &mut RunResult,
) -> Result<(), String> {
    let go = dir.join("go");
    let line_command = format!(
        "exec {} --count {} --rate {} --go {}",
        shell_quote(&paths.linegen),
        sc.lines,
        sc.rate,
        shell_quote(&go)
    );
    let mut redis: Option<Running> = None;
    let mut nodes: Vec<(Running, SocketAddr)> = Vec::new();
    let result: Result<(), String> = async {
        let cluster = if sc.cluster {
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let mut rd = start_redis(dir, port)?;
            let ready = wait_redis(&mut rd, port).await;
            redis = Some(rd);
            ready?;
            Some(format!("redis://127.0.0.1:{port}"))
        } else {
            None
        };
        for &name in NODE_NAMES.iter().take(sc.nodes()) {
            let (ndir, node) = match &cluster {
                Some(url) => {
                    let d = dir.join(name);
                    std::fs::create_dir_all(&d).map_err(|e| format!("node dir: {e}"))?;
                    (d, Some((url.as_str(), name)))
                }
                None => (dir.to_path_buf(), None),
            };
            let srv = start_server(server, paths, opts, &ndir, sc.jobs, &line_command, node)?;
            // Kept before the wait, so that a server that fails it is stopped too.
            nodes.push((srv, ([127, 0, 0, 1], 0).into()));
            let (srv, addr) = nodes.last_mut().expect("just pushed");
            *addr = wait_ready(srv).await?;
        }
        let redis_pid = redis.as_ref().map(|r| r.pid);
        drive(server, sc, opts, &go, &mut nodes, redis_pid, r).await
    }
    .await;
    // Let any line source still waiting go, then stop the servers.
    let _ = std::fs::write(&go, b"");
    for (srv, _) in nodes {
        if result.is_err() && opts.verbose {
            eprintln!("--- server log ---\n{}", srv.log_tail());
        }
        srv.stop().await;
    }
    if let Some(rd) = redis {
        rd.stop().await;
    }
    result
}

/// Node names in the cluster scenario: the job runs on `a`.
const NODE_NAMES: [&str; 2] = ["a", "b"];

async fn drive(
    server: Server,
    sc: &Scenario,
    opts: &Options,
    go: &Path,
    nodes: &mut [(Running, SocketAddr)],
    redis_pid: Option<u32>,
    r: &mut RunResult,
) -> Result<(), String> {
    let pids: Vec<u32> = nodes.iter().map(|(s, _)| s.pid).collect();
    let pid = pids[0];
    let addr = nodes[0].1;
    // Server CPU: every node, and Redis in the cluster scenario.
    let cpu_of = |pid: u32| sys::proc_cpu_secs(pid).unwrap_or(0.0);
    let cpu_all = || {
        pids.iter()
            .chain(redis_pid.iter())
            .map(|&p| cpu_of(p))
            .sum::<f64>()
    };
    r.rss_start_kib = sys::proc_status_kib(pid, "VmRSS").unwrap_or(0);

    // Jobs: the same REST call on every server (on the first node of a cluster).
    let mut jobs = Vec::with_capacity(sc.jobs);
    for _ in 0..sc.jobs {
        let (status, body) = load::http_once(
            addr,
            "POST",
            "/api/jobs",
            Some(r#"{"projectId":"bench","pipeline":"bench"}"#),
        )
        .await?;
        let id = scan::str_after(&body, b"\"jobId\":\"")
            .filter(|_| status == 201)
            .ok_or_else(|| {
                format!(
                    "POST /api/jobs: {status} {}",
                    String::from_utf8_lossy(&body)
                )
            })?;
        jobs.push(String::from_utf8_lossy(id).into_owned());
    }

    // Clients, in batches; each batch is subscribed before the next connects. In a
    // cluster, client i connects to node i % nodes (half of them to node b).
    let client_opts = ClientOptions {
        log_batch: sc.log_batch,
        resume: server == Server::Buildcast && !opts.no_resume,
        drop_after: opts.drop_after,
        slow_read: opts.slow_read,
        stall_read: opts.stall_read,
    };
    let shareds: Vec<Arc<Shared>> = nodes
        .iter()
        .map(|(_, a)| Shared::new(*a, "/ws/", sc.lines, client_opts))
        .collect();
    let cpu_before_connect = cpu_all();
    let t_connect = Instant::now();
    let mut handles = Vec::with_capacity(sc.clients);
    let mut failed = 0usize;
    for start in (0..sc.clients).step_by(opts.batch.max(1)) {
        let mut waits = Vec::new();
        for id in start..(start + opts.batch.max(1)).min(sc.clients) {
            let job = jobs[id % jobs.len()].clone();
            let node = id % shareds.len();
            let (h, rx) = load::spawn(shareds[node].clone(), id, job, sc.mix.of(id));
            handles.push((node, h));
            waits.push(rx);
        }
        for rx in waits {
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    failed += 1;
                    r.first_error.get_or_insert(e);
                }
                Ok(Err(_)) | Err(_) => {
                    failed += 1;
                    r.first_error
                        .get_or_insert("not subscribed within 60 s".into());
                }
            }
        }
        for (srv, _) in nodes.iter_mut() {
            if let Some(status) = srv.exited() {
                return Err(format!(
                    "server exited ({status}) while clients connected:\n{}",
                    srv.log_tail()
                ));
            }
        }
    }
    r.connect_s = t_connect.elapsed().as_secs_f64();
    let cpu_subscribed = cpu_all();
    r.server_cpu_connect_s = cpu_subscribed - cpu_before_connect;
    let subscribed = sc.clients - failed;
    if opts.verbose {
        eprintln!(
            "  {} {}: {subscribed}/{} clients subscribed in {:.1} s",
            sc.name,
            server.name(),
            sc.clients,
            r.connect_s
        );
    }
    let complete = || {
        shareds
            .iter()
            .map(|s| s.complete_clients.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    let delivered_so_far = || {
        shareds
            .iter()
            .map(|s| s.delivered.load(Ordering::Relaxed))
            .sum::<u64>()
    };

    let mut node_cpu0: Vec<f64> = pids.iter().map(|&p| cpu_of(p)).collect();
    let mut redis_cpu0 = redis_pid.map(cpu_of).unwrap_or(0.0);
    if let Some(hold) = sc.idle_hold {
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.rss_subscribed_kib = sys::proc_status_kib(pid, "VmRSS").unwrap_or(0);
        let cpu0 = cpu_all();
        let lg0 = sys::self_cpu_secs();
        tokio::time::sleep(hold).await;
        r.server_cpu_s = cpu_all() - cpu0;
        r.loadgen_cpu_s = sys::self_cpu_secs() - lg0;
        r.window_s = hold.as_secs_f64();
    } else {
        r.rss_subscribed_kib = sys::proc_status_kib(pid, "VmRSS").unwrap_or(0);
        node_cpu0 = pids.iter().map(|&p| cpu_of(p)).collect();
        redis_cpu0 = redis_pid.map(cpu_of).unwrap_or(0.0);
        let cpu0 = cpu_all();
        let lg0 = sys::self_cpu_secs();
        let t_go = now_ns();
        std::fs::write(go, b"").map_err(|e| format!("go file: {e}"))?;
        let started = Instant::now();
        let emit = if sc.rate > 0 {
            Duration::from_secs_f64(sc.lines as f64 / sc.rate as f64)
        } else {
            Duration::ZERO
        };
        let mut last = 0;
        let mut last_change = Instant::now();
        'wait: loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if complete() >= subscribed {
                break;
            }
            let d = delivered_so_far();
            if d != last {
                last = d;
                last_change = Instant::now();
            }
            let past_emit = started.elapsed().saturating_sub(emit);
            if past_emit > Duration::from_secs(2) && last_change.elapsed() > opts.stall {
                r.ended = Some(format!("stalled: no line for {} s", opts.stall.as_secs()));
                break;
            }
            if past_emit > opts.max_wait {
                r.ended = Some(format!(
                    "gave up {} s after the source finished",
                    opts.max_wait.as_secs()
                ));
                break;
            }
            for (srv, _) in nodes.iter_mut() {
                if let Some(status) = srv.exited() {
                    r.ended = Some(format!("server exited ({status}):\n{}", srv.log_tail()));
                    break 'wait;
                }
            }
        }
        r.server_cpu_s = cpu_all() - cpu0;
        r.loadgen_cpu_s = sys::self_cpu_secs() - lg0;
        let last_rx = shareds
            .iter()
            .map(|s| s.last_rx_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        r.window_s = last_rx.saturating_sub(t_go) as f64 / 1e9;
    }
    r.peak_rss_kib = sys::proc_status_kib(pid, "VmHWM").unwrap_or(0);
    if server == Server::Buildcast {
        for (_, a) in nodes.iter() {
            if let Ok((200, body)) = load::http_once(*a, "GET", "/health", None).await
                && let Some(l) = scan::u64_after_last(&body, b"\"lagged_catch_ups\":")
            {
                *r.lagged.get_or_insert(0) += l;
            }
        }
    }

    for s in &shareds {
        s.stop();
    }
    let mut results = Vec::with_capacity(handles.len());
    for (node, h) in handles {
        if let Ok(Ok(res)) = tokio::time::timeout(Duration::from_secs(30), h).await {
            results.push((node, res));
        }
    }
    r.failed_clients =
        sc.clients - results.len() + results.iter().filter(|(_, c)| c.error.is_some()).count();
    if r.first_error.is_none() {
        r.first_error = results.iter().find_map(|(_, c)| c.error.clone());
    }
    r.failed_clients = r.failed_clients.max(failed);
    r.expected = sc.lines * sc.clients as u64;
    r.delivered = results.iter().map(|(_, c)| c.lines).sum();
    // Clients that never reported lose everything they should have had.
    let missing_clients = (sc.clients - results.len()) as u64;
    r.lost =
        results.iter().map(|(_, c)| c.anomalies.lost).sum::<u64>() + missing_clients * sc.lines;
    r.dup = results.iter().map(|(_, c)| c.anomalies.dup).sum();
    r.out_of_order = results.iter().map(|(_, c)| c.anomalies.out_of_order).sum();
    r.reconnects = shareds
        .iter()
        .map(|s| s.reconnects.load(Ordering::Relaxed))
        .sum();
    r.batches = shareds
        .iter()
        .map(|s| s.batches.load(Ordering::Relaxed))
        .sum();
    r.first_disconnect = results.iter().find_map(|(_, c)| c.first_disconnect.clone());
    let mut lat = Hist::new();
    for s in &shareds {
        lat.merge(&s.latencies());
    }
    r.p50_ms = ms(lat.quantile(0.50));
    r.p99_ms = ms(lat.quantile(0.99));
    r.max_ms = ms(lat.max());
    if !r.idle && r.window_s > 0.0 {
        r.msgs_per_s = r.delivered as f64 / r.window_s;
    }
    if r.delivered > 0 {
        r.cpu_us_per_msg = r.server_cpu_s * 1e6 / r.delivered as f64;
    }
    if sc.clients > 0 {
        r.rss_per_conn_kib =
            (r.rss_subscribed_kib as f64 - r.rss_start_kib as f64) / sc.clients as f64;
    }
    if sc.cluster {
        for (i, s) in shareds.iter().enumerate() {
            let lat = s.latencies();
            let delivered: u64 = results
                .iter()
                .filter(|(n, _)| *n == i)
                .map(|(_, c)| c.lines)
                .sum();
            r.nodes.push(NodeFigures {
                name: NODE_NAMES[i].into(),
                clients: results.iter().filter(|(n, _)| *n == i).count(),
                delivered,
                msgs_per_s: if r.window_s > 0.0 {
                    delivered as f64 / r.window_s
                } else {
                    0.0
                },
                p50_ms: ms(lat.quantile(0.50)),
                p99_ms: ms(lat.quantile(0.99)),
                cpu_s: cpu_of(pids[i]) - node_cpu0[i],
                peak_rss_kib: sys::proc_status_kib(pids[i], "VmHWM").unwrap_or(0),
            });
        }
        r.redis_cpu_s = redis_pid.map(|p| cpu_of(p) - redis_cpu0);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One row for several runs: the median of each figure; anomalies and failures summed.
pub fn combine(runs: &[RunResult]) -> RunResult {
    if runs.len() == 1 {
        return runs[0].clone();
    }
    let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    let first = &runs[0];
    RunResult {
        scenario: first.scenario.clone(),
        server: first.server.clone(),
        runs: runs.len(),
        clients: first.clients,
        failed_clients: runs.iter().map(|r| r.failed_clients).sum(),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
        expected: m(|r| r.expected as f64) as u64,
        delivered: m(|r| r.delivered as f64) as u64,
        lost: runs.iter().map(|r| r.lost).sum(),
        dup: runs.iter().map(|r| r.dup).sum(),
        out_of_order: runs.iter().map(|r| r.out_of_order).sum(),
        reconnects: runs.iter().map(|r| r.reconnects).sum(),
        batches: m(|r| r.batches as f64) as u64,
        first_disconnect: runs.iter().find_map(|r| r.first_disconnect.clone()),
        window_s: m(|r| r.window_s),
        msgs_per_s: m(|r| r.msgs_per_s),
        p50_ms: m(|r| r.p50_ms),
        p99_ms: m(|r| r.p99_ms),
        max_ms: m(|r| r.max_ms),
        connect_s: m(|r| r.connect_s),
        server_cpu_connect_s: m(|r| r.server_cpu_connect_s),
        server_cpu_s: m(|r| r.server_cpu_s),
        cpu_us_per_msg: m(|r| r.cpu_us_per_msg),
        rss_start_kib: m(|r| r.rss_start_kib as f64) as u64,
        rss_subscribed_kib: m(|r| r.rss_subscribed_kib as f64) as u64,
        peak_rss_kib: m(|r| r.peak_rss_kib as f64) as u64,
        rss_per_conn_kib: m(|r| r.rss_per_conn_kib),
        loadgen_cpu_s: m(|r| r.loadgen_cpu_s),
        lagged: first
            .lagged
            .map(|_| runs.iter().filter_map(|r| r.lagged).sum()),
        ended: runs.iter().find_map(|r| r.ended.clone()),
        idle: first.idle,
        nodes: first.nodes.clone(),
        redis_cpu_s: first.redis_cpu_s,
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn num(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

/// The Markdown table: one row per scenario and server, then the ratio rows
/// buildcast/socketioxide, buildcast/node and buildcast/raw under each scenario.
pub fn table(scenarios: &[Scenario], rows: &[RunResult]) -> String {
    let mut t = String::new();
    t.push_str("| scenario | server | clients | delivered | msgs/s | p50 ms | p99 ms | max ms | lost/dup/ooo | server CPU s | CPU µs/msg | peak RSS MiB | RSS/conn KiB | loadgen CPU s |\n");
    t.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for sc in scenarios {
        let of = |server: &str| {
            rows.iter()
                .find(|r| r.scenario == sc.name && r.server == server)
        };
        let label = if sc.repeat > 1 {
            format!("{} (median of {})", sc.name, sc.repeat)
        } else {
            sc.name.clone()
        };
        for r in rows.iter().filter(|r| r.scenario == sc.name) {
            let mut anomalies = format!("{}/{}/{}", r.lost, r.dup, r.out_of_order);
            if r.failed_clients > 0 {
                let _ = write!(anomalies, " ({} clients failed)", r.failed_clients);
            }
            if r.reconnects > 0 {
                let _ = write!(anomalies, " ({} reconnects)", r.reconnects);
            }
            if let Some(e) = &r.ended {
                // The run did not end with every client complete: see "Every run".
                let why = e.split(':').next().unwrap_or("ended early");
                let _ = write!(anomalies, " ⚠ {why}");
            }
            let (rate, p50, p99, max, per_msg, delivered) = if r.idle {
                let d = "—".to_string();
                (d.clone(), d.clone(), d.clone(), d.clone(), d.clone(), d)
            } else {
                (
                    num(r.msgs_per_s, 0),
                    num(r.p50_ms, 1),
                    num(r.p99_ms, 1),
                    num(r.max_ms, 1),
                    num(r.cpu_us_per_msg, 2),
                    format!("{}/{}", r.delivered, r.expected),
                )
            };
            let _ = writeln!(
                t,
                "| {label} | {} | {} | {delivered} | {rate} | {p50} | {p99} | {max} | {anomalies} | {} | {per_msg} | {} | {} | {} |",
                r.server,
                r.clients,
                num(r.server_cpu_s, 2),
                num(r.peak_rss_kib as f64 / 1024.0, 0),
                num(r.rss_per_conn_kib, 1),
                num(r.loadgen_cpu_s, 2),
            );
        }
        let Some(b) = of("buildcast") else { continue };
        for other in ["socketioxide", "node", "raw"] {
            let Some(o) = of(other) else { continue };
            let latency = |a: f64, b: f64| {
                if sc.idle_hold.is_some() {
                    "—".into()
                } else {
                    ratio(a, b)
                }
            };
            let _ = writeln!(
                t,
                "| {label} | *buildcast/{other}* | | | {} | {} | {} | {} | | {} | {} | {} | {} | |",
                latency(b.msgs_per_s, o.msgs_per_s),
                latency(b.p50_ms, o.p50_ms),
                latency(b.p99_ms, o.p99_ms),
                latency(b.max_ms, o.max_ms),
                ratio(b.server_cpu_s, o.server_cpu_s),
                latency(b.cpu_us_per_msg, o.cpu_us_per_msg),
                ratio(b.peak_rss_kib as f64, o.peak_rss_kib as f64),
                ratio(b.rss_per_conn_kib, o.rss_per_conn_kib),
            );
        }
    }
    t
}

/// The sections under the table: the per-line fan-out sweep, the cluster's nodes,
/// and the targets of issue #13 (ratios within this one run), each met or not.
pub fn details(rows: &[RunResult]) -> String {
    let mut t = String::new();
    let row = |sc: &str, server: &str| rows.iter().find(|r| r.scenario == sc && r.server == server);
    let servers = ["buildcast", "socketioxide", "node", "raw"];

    let sweep = ["fanout-100", "1k-100lps", "5k-100lps", "fanout-10k"];
    if sweep.iter().any(|s| rows.iter().any(|r| r.scenario == *s)) {
        t.push_str("\n## Per-line fan-out sweep (100 lines/s, one job)\n\n");
        t.push_str("CPU µs/msg · p99 ms · delivered msgs/s (offered: clients × 100/s)\n\n");
        t.push_str("| clients | offered/s |");
        for s in servers {
            let _ = write!(t, " {s} |");
        }
        t.push_str("\n|--:|--:|---|---|---|---|\n");
        for sc in sweep {
            let Some(any) = rows.iter().find(|r| r.scenario == sc) else {
                continue;
            };
            let _ = write!(t, "| {} | {} |", any.clients, any.clients * 100);
            for s in servers {
                match row(sc, s) {
                    Some(r) => {
                        let _ = write!(
                            t,
                            " {:.2} · {:.0} · {:.0} k{} |",
                            r.cpu_us_per_msg,
                            r.p99_ms,
                            r.msgs_per_s / 1e3,
                            if r.is_clean() && r.ended.is_none() {
                                ""
                            } else {
                                " ⚠"
                            }
                        );
                    }
                    None => t.push_str(" — |"),
                }
            }
            t.push('\n');
        }
    }

    if let Some(c) = rows.iter().find(|r| !r.nodes.is_empty()) {
        let _ = writeln!(t, "\n## Cluster ({})\n", c.scenario);
        t.push_str("| node | clients | delivered | msgs/s | p50 ms | p99 ms | CPU s | peak RSS MiB |\n|---|--:|--:|--:|--:|--:|--:|--:|\n");
        for n in &c.nodes {
            let _ = writeln!(
                t,
                "| {}{} | {} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} |",
                n.name,
                if n.name == "a" { " (runs the job)" } else { "" },
                n.clients,
                n.delivered,
                n.msgs_per_s,
                n.p50_ms,
                n.p99_ms,
                n.cpu_s,
                n.peak_rss_kib as f64 / 1024.0
            );
        }
        let redis = c.redis_cpu_s.unwrap_or(0.0);
        let _ = writeln!(
            t,
            "| redis-server | | | | | | {redis:.2} | |\n\nTotal server CPU {:.2} s for {} deliveries ({:.2} µs/msg).",
            c.server_cpu_s, c.delivered, c.cpu_us_per_msg
        );
        if let Some(single) = row("1k-100lps", "buildcast").filter(|s| s.expected == c.expected) {
            let lines = (c.expected / c.clients.max(1) as u64).max(1) as f64;
            let _ = writeln!(
                t,
                "Against one node with the same load (`1k-100lps`, {:.2} s): {:+.2} s, {:+.0} µs per event mirrored ({} events), {:.2} s of it Redis.",
                single.server_cpu_s,
                c.server_cpu_s - single.server_cpu_s,
                (c.server_cpu_s - single.server_cpu_s) * 1e6 / lines,
                lines,
                redis
            );
        }
    }

    t.push_str("\n## Targets (issue #13; ratios within this run)\n\n| target | figures | met |\n|---|---|---|\n");
    let mut target = |name: &str, figures: String, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(t, "| {name} | {figures} | {verdict} |");
    };
    match (
        row("5k-100lps", "buildcast"),
        row("5k-100lps", "socketioxide"),
    ) {
        (Some(b), Some(s)) => {
            let offered = (b.clients * 100) as f64;
            target(
                "5k × 100/s per line: all 500 k/s delivered",
                format!(
                    "{:.0} k/s of {:.0} k/s, {}/{}",
                    b.msgs_per_s / 1e3,
                    offered / 1e3,
                    b.delivered,
                    b.expected
                ),
                Some(b.delivered == b.expected && b.msgs_per_s >= 0.97 * offered),
            );
            target(
                "5k × 100/s per line: p99 ≤ 2× bare socketioxide's",
                format!(
                    "{:.0} ms vs {:.0} ms ({:.2}×)",
                    b.p99_ms,
                    s.p99_ms,
                    b.p99_ms / s.p99_ms.max(1e-9)
                ),
                Some(b.p99_ms <= 2.0 * s.p99_ms),
            );
            target(
                "5k × 100/s per line: 0 lost, 0 closed",
                format!("lost {}, closed and reconnected {}", b.lost, b.reconnects),
                Some(b.lost == 0 && b.reconnects == 0),
            );
        }
        _ => target("5k × 100/s per line", "—".into(), None),
    }
    match (
        row("saturation", "buildcast"),
        row("saturation", "socketioxide"),
    ) {
        (Some(b), Some(s)) => {
            target(
                "saturation per line: CPU µs/msg ≤ 1.3× bare socketioxide's",
                format!(
                    "{:.2} vs {:.2} ({:.2}×)",
                    b.cpu_us_per_msg,
                    s.cpu_us_per_msg,
                    b.cpu_us_per_msg / s.cpu_us_per_msg.max(1e-9)
                ),
                Some(b.cpu_us_per_msg <= 1.3 * s.cpu_us_per_msg),
            );
            target(
                "saturation per line: msgs/s ≥ 0.8× bare socketioxide's",
                format!(
                    "{:.0} k vs {:.0} k ({:.2}×)",
                    b.msgs_per_s / 1e3,
                    s.msgs_per_s / 1e3,
                    b.msgs_per_s / s.msgs_per_s.max(1e-9)
                ),
                Some(b.msgs_per_s >= 0.8 * s.msgs_per_s),
            );
        }
        _ => target("saturation per line", "—".into(), None),
    }
    match (
        row("saturation-batch", "buildcast"),
        row("saturation-batch", "raw"),
    ) {
        (Some(b), Some(r)) => target(
            "saturation batch: peak RSS ≤ 2× the raw floor's",
            format!(
                "{:.0} MiB vs {:.0} MiB ({:.2}×)",
                b.peak_rss_kib as f64 / 1024.0,
                r.peak_rss_kib as f64 / 1024.0,
                b.peak_rss_kib as f64 / r.peak_rss_kib.max(1) as f64
            ),
            Some(b.peak_rss_kib <= 2 * r.peak_rss_kib),
        ),
        _ => target("saturation batch: peak RSS", "—".into(), None),
    }
    match rows.iter().find(|r| r.nodes.len() == 2) {
        Some(c) => {
            let (a, b) = (&c.nodes[0], &c.nodes[1]);
            target(
                "cluster 1k × 100/s: p99 on node b ≤ p99 on node a + 10 ms",
                format!("b {:.1} ms, a {:.1} ms", b.p99_ms, a.p99_ms),
                Some(b.p99_ms <= a.p99_ms + 10.0 && c.is_clean()),
            );
        }
        None => target("cluster p99", "—".into(), None),
    }
    let dirty: Vec<String> = rows
        .iter()
        .filter(|r| !r.idle && (!r.is_clean() || r.ended.is_some()))
        .map(|r| format!("{} {}", r.scenario, r.server))
        .collect();
    target(
        "every scenario, every server: 0 lost/dup/out-of-order",
        if dirty.is_empty() {
            "all clean".into()
        } else {
            format!("not clean: {}", dirty.join(", "))
        },
        Some(dirty.is_empty()),
    );
    t
}
