//! The load generator and runner. See bench/README.md.
//!
//!     bench suite [--only a,b] [--servers buildcast,socketioxide,node,raw] [--scale F] [--repeat N] [--out FILE]
//!     bench run --server buildcast|socketioxide|node|raw [--scenario NAME | --clients N --jobs J
//!               --lines C --rate R --transport ws|polling|mixed [--idle SECS]] [--check]
//!     bench scenarios
//!
//! Common options: --buildcast PATH, --node-dir DIR, --raw PATH, --socketioxide PATH,
//! --linegen PATH,
//! --log-batch (subscribe with batch: true, accept job:logs), --drop-after N (each
//! client drops its connection once after N lines, then reconnects and resumes),
//! --batch N (clients connecting at once), --stall SECS, --max-wait SECS,
//! --rust-log FILTER (buildcast's RUST_LOG), --ping-interval-ms N (every server),
//! --keep (keep each run's directory: server log, data), --threads N, --quiet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use buildcast_bench::run::{self, Mix, Options, Paths, RunResult, Scenario, Server};
use buildcast_bench::sys;

struct Cli {
    cmd: String,
    flags: HashMap<String, String>,
    switches: Vec<String>,
}

const SWITCHES: &[&str] = &[
    "--check",
    "--quiet",
    "--keep",
    "--log-batch",
    "--no-resume",
    "--cluster",
];

fn parse_cli() -> Result<Cli, String> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().ok_or("no command (suite, run, scenarios)")?;
    let mut flags = HashMap::new();
    let mut switches = Vec::new();
    while let Some(a) = args.next() {
        if SWITCHES.contains(&a.as_str()) {
            switches.push(a);
        } else if a.starts_with("--") {
            let v = args.next().ok_or(format!("{a} needs a value"))?;
            flags.insert(a, v);
        } else {
            return Err(format!("unexpected argument {a}"));
        }
    }
    Ok(Cli {
        cmd,
        flags,
        switches,
    })
}

impl Cli {
    fn get(&self, k: &str) -> Option<&str> {
        self.flags.get(k).map(String::as_str)
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{k}: not a number: {v}")),
        }
    }

    fn has(&self, k: &str) -> bool {
        self.switches.iter().any(|s| s == k)
    }

    fn paths(&self) -> Paths {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_default();
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // Absolute: servers run in their own working directory.
        let path = |flag: &str, env: &str, default: PathBuf| {
            let p = self
                .get(flag)
                .map(PathBuf::from)
                .or_else(|| std::env::var_os(env).map(PathBuf::from))
                .unwrap_or(default);
            std::fs::canonicalize(&p).unwrap_or(p)
        };
        Paths {
            buildcast: path(
                "--buildcast",
                "BUILDCAST_BIN",
                manifest.join("../target/release/buildcast"),
            ),
            node_dir: path(
                "--node-dir",
                "BENCH_NODE_DIR",
                manifest.join("reference-node"),
            ),
            raw: path("--raw", "BENCH_RAW_BIN", exe_dir.join("raw-floor")),
            socketioxide: path(
                "--socketioxide",
                "BENCH_SOCKETIOXIDE_BIN",
                exe_dir.join("socketioxide-ref"),
            ),
            linegen: path("--linegen", "BENCH_LINEGEN_BIN", exe_dir.join("linegen")),
        }
    }

    fn options(&self) -> Result<Options, String> {
        let d = Options::default();
        Ok(Options {
            batch: self.num("--batch", d.batch)?,
            stall: Duration::from_secs(self.num("--stall", d.stall.as_secs())?),
            max_wait: Duration::from_secs(self.num("--max-wait", d.max_wait.as_secs())?),
            rust_log: self.get("--rust-log").map(String::from),
            buffer: match self.num("--buffer", 0usize)? {
                0 => None,
                n => Some(n),
            },
            ping_interval_ms: self.num("--ping-interval-ms", d.ping_interval_ms)?,
            keep: self.has("--keep"),
            drop_after: match self.num("--drop-after", 0u64)? {
                0 => None,
                n => Some(n),
            },
            no_resume: self.has("--no-resume"),
            stall_read: match self.num("--stall-read-ms", 0u64)? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            slow_read: match self.num("--slow-read-ms", 0u64)? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            verbose: !self.has("--quiet"),
        })
    }
}

fn check_paths(p: &Paths, servers: &[Server]) -> Result<(), String> {
    let need = |path: &PathBuf, what: &str, hint: &str| {
        if path.exists() {
            Ok(())
        } else {
            Err(format!("{what} not found at {} ({hint})", path.display()))
        }
    };
    need(
        &p.linegen,
        "linegen",
        "cargo build --release --manifest-path bench/Cargo.toml",
    )?;
    for s in servers {
        match s {
            Server::Buildcast => need(
                &p.buildcast,
                "buildcast",
                "cargo build --release, or --buildcast PATH",
            )?,
            Server::Raw => need(
                &p.raw,
                "raw-floor",
                "cargo build --release --manifest-path bench/Cargo.toml",
            )?,
            Server::Socketioxide => need(
                &p.socketioxide,
                "socketioxide-ref",
                "cargo build --release --manifest-path bench/Cargo.toml",
            )?,
            Server::Node => need(
                &p.node_dir.join("node_modules/socket.io"),
                "the reference server's socket.io",
                "npm ci in bench/reference-node",
            )?,
        }
    }
    Ok(())
}

fn servers(cli: &Cli) -> Result<Vec<Server>, String> {
    match cli.get("--servers") {
        None => Ok(Server::ALL.to_vec()),
        Some(list) => list.split(',').map(Server::parse).collect(),
    }
}

fn scenario_from_flags(cli: &Cli) -> Result<Scenario, String> {
    if let Some(name) = cli.get("--scenario") {
        let scale = cli.num("--scale", 1.0)?;
        let mut sc = run::suite(scale, 1)
            .into_iter()
            .find(|s| s.name == name)
            .ok_or(format!(
                "unknown scenario {name} (bench scenarios lists them)"
            ))?;
        sc.log_batch |= cli.has("--log-batch");
        return Ok(sc);
    }
    let clients = cli.num("--clients", 50usize)?;
    let jobs = cli.num("--jobs", 1usize)?.clamp(1, clients.max(1));
    let idle: u64 = cli.num("--idle", 0)?;
    Ok(Scenario {
        name: cli.get("--name").unwrap_or("custom").into(),
        clients,
        jobs,
        lines: if idle > 0 {
            0
        } else {
            cli.num("--lines", 100)?
        },
        rate: cli.num("--rate", 20)?,
        mix: Mix::parse(cli.get("--transport").unwrap_or("ws"))?,
        idle_hold: (idle > 0).then(|| Duration::from_secs(idle)),
        repeat: 1,
        log_batch: cli.has("--log-batch"),
        cluster: cli.has("--cluster"),
    })
}

/// Machine paths are not written into results: the repository is shown as `<repo>`,
/// the temp dir as `$TMPDIR`.
fn scrub(s: &str) -> String {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = repo
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let tmp = std::env::temp_dir().display().to_string();
    let mut s = s.to_owned();
    if repo.len() > 1 {
        s = s.replace(&repo, "<repo>");
    }
    s.replace(tmp.trim_end_matches('/'), "$TMPDIR")
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = sys::proc_status_kib(std::process::id(), "VmRSS")
        .map(|_| ())
        .and_then(|()| {
            std::fs::read_to_string("/proc/meminfo")
                .ok()?
                .lines()
                .find_map(|l| {
                    let kib: u64 = l
                        .strip_prefix("MemTotal:")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()?;
                    Some(kib / 1024 / 1024)
                })
        });
    format!("{cores} cores ({model}), {} GiB", mem.unwrap_or(0))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn suite(cli: &Cli) -> Result<bool, String> {
    let paths = cli.paths();
    let opts = cli.options()?;
    let servers = servers(cli)?;
    check_paths(&paths, &servers)?;
    let scale = cli.num("--scale", 1.0)?;
    let repeat = cli.num("--repeat", 3usize)?.max(1);
    let mut scenarios = run::suite(scale, repeat);
    if let Some(only) = cli.get("--only") {
        let names: Vec<&str> = only.split(',').collect();
        scenarios.retain(|s| names.contains(&s.name.as_str()));
        if scenarios.is_empty() {
            return Err(format!("--only {only}: no such scenario"));
        }
    }
    if cli.has("--log-batch") {
        scenarios.iter_mut().for_each(|s| s.log_batch = true);
    }
    let started = std::time::Instant::now();
    let started_at = sys::iso8601_millis(sys::now_ns());
    let load_start = loadavg();
    let mut all: Vec<RunResult> = Vec::new();
    for sc in &scenarios {
        eprintln!("== {}: {}", sc.name, sc.describe());
        for rep in 0..sc.repeat {
            for &server in servers.iter().filter(|&&s| sc.runs_on(s)) {
                let r = run::run_once(server, sc, &paths, &opts).await;
                eprintln!("   [{}/{}] {}", rep + 1, sc.repeat, r.summary());
                all.push(r);
            }
        }
    }
    let mut rows = Vec::new();
    for sc in &scenarios {
        for server in &servers {
            let runs: Vec<RunResult> = all
                .iter()
                .filter(|r| r.scenario == sc.name && r.server == server.name())
                .cloned()
                .collect();
            if !runs.is_empty() {
                rows.push(run::combine(&runs));
            }
        }
    }
    let table = run::table(&scenarios, &rows);
    println!("\n{table}{}", run::details(&rows));
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(out) = cli.get("--out") {
        let mut md = String::new();
        md.push_str(&format!(
            "# buildcast benchmark, {} UTC\n\n",
            &started_at[..16].replace('T', " ")
        ));
        md.push_str(&format!(
            "- machine: {}; load average {} at the start, {} at the end\n",
            machine(),
            load_start,
            loadavg()
        ));
        if let Some(note) = cli.get("--note") {
            md.push_str(&format!("- {}\n", scrub(note)));
        }
        md.push_str(&format!(
            "- {} scenario(s) × {} server(s) in {:.0} s; `bench/run.sh` (see bench/README.md for the columns)\n\n",
            scenarios.len(),
            servers.len(),
            elapsed
        ));
        for sc in &scenarios {
            md.push_str(&format!("- **{}**: {}\n", sc.name, sc.describe()));
        }
        md.push('\n');
        md.push_str(&table);
        md.push_str(&run::details(&rows));
        md.push_str("\n## Every run\n\n```text\n");
        for r in &all {
            md.push_str(&scrub(&r.summary()));
            md.push('\n');
        }
        md.push_str("```\n");
        let tmp = format!("{out}.tmp");
        std::fs::write(&tmp, md).map_err(|e| format!("{tmp}: {e}"))?;
        std::fs::rename(&tmp, out).map_err(|e| format!("{out}: {e}"))?;
        eprintln!("results written to {out}");
    }
    eprintln!("suite took {elapsed:.0} s");
    // Exit 1 when a run lost, duplicated or reordered lines, or was cut short.
    Ok(all
        .iter()
        .all(|r| r.ended.is_none() && (r.idle || r.is_clean())))
}

async fn run_one(cli: &Cli) -> Result<bool, String> {
    let paths = cli.paths();
    let opts = cli.options()?;
    let server = Server::parse(cli.get("--server").ok_or("--server is required")?)?;
    check_paths(&paths, &[server])?;
    let sc = scenario_from_flags(cli)?;
    if !sc.runs_on(server) {
        return Err(format!(
            "{}: the cluster scenario runs on buildcast only",
            sc.name
        ));
    }
    eprintln!("== {} on {}: {}", sc.name, server.name(), sc.describe());
    let r = run::run_once(server, &sc, &paths, &opts).await;
    println!("RESULT {}", r.summary());
    let clean = r.ended.is_none() && (r.idle || r.is_clean());
    if cli.has("--check") && !clean {
        eprintln!(
            "CHECK FAILED on {}: expected every client to get every line exactly once, in order",
            server.name()
        );
        return Ok(false);
    }
    Ok(true)
}

fn main() {
    let cli = match parse_cli() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}\n(see bench/README.md)");
            std::process::exit(2);
        }
    };
    let nofile = sys::raise_nofile();
    let threads = cli.num("--threads", 2usize).unwrap_or(2).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = rt.block_on(async {
        match cli.cmd.as_str() {
            "suite" => suite(&cli).await,
            "run" => run_one(&cli).await,
            "scenarios" => {
                for s in run::suite(cli.num("--scale", 1.0)?, cli.num("--repeat", 3)?) {
                    println!("{:<19} {}", s.name, s.describe());
                }
                Ok(true)
            }
            other => Err(format!("unknown command {other} (suite, run, scenarios)")),
        }
    });
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench: {e}");
            if nofile < 1024 {
                eprintln!("(open files limit is {nofile})");
            }
            std::process::exit(2);
        }
    }
}
