//! The `buildcast` binary: load `.env`, set up logging, read the configuration,
//! then build and run the server until Ctrl-C or SIGTERM. `buildcast token` prints
//! a signed test token instead; `buildcast watch` follows a build.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use buildcast::auth::{NewToken, mint};
use buildcast::config::Config;
use buildcast::startup::{Application, shutdown_signal};
use clap::{Parser, Subcommand};

/// The end of `--help`: the server is configured through its environment.
const ENVIRONMENT_HELP: &str = "\
Configuration: environment variables, or a .env file in the working directory.
Every one is in .env.example with its default, and in the README's
Configuration table. A bad value stops start-up with one line naming it.
The most used:
  HOST, PORT               where to listen (default 127.0.0.1, 3001; PORT=0: any free port)
  DATA_DIR                 database, workspaces and artifacts (default ./data)
  PIPELINES_FILE           pipeline definitions (default ./pipelines.toml, else built-in)
  MAX_CONCURRENT_JOBS      builds running at once (default 2)
  AUTH_MODE                none (the default on loopback only) or jwt (the default elsewhere)
  JWT_SECRET               HS256 secret, at least 32 bytes (or JWT_PUBLIC_KEY_FILE)
  WEBSOCKET_PATH           the Socket.IO path (default /ws)
  WEBSOCKET_CORS_ORIGIN    allowed origins: *, one, or a comma-separated list (default *)
  RETENTION_DAYS           finished jobs kept this long (default 30; 0: forever)
  RUST_LOG, LOG_FORMAT     log filter (default buildcast=info,tower_http=info); json or text
  WORKER_TOKEN             bearer token of external workers (unset: no ingest route)
  REDIS_URL, NODE_ID       several nodes sharing events through Redis
  COMPAT_GATEWAYS          other systems' WebSocket/REST endpoints: all (default), none,
                           or a subset of build,jobs,builds,projects
  COMPAT_GENERATE_PIPELINE pipeline of POST /api/projects/{id}/generate when none is named
  METRICS_ENABLED          Prometheus metrics at /metrics (default true)
  METRICS_TOKEN            bearer token /metrics asks for (unset: none)
  ADMIN_UI_USERNAME        Socket.IO Admin UI on /admin (with ADMIN_UI_PASSWORD_HASH, bcrypt)
  ADMIN_UI_READONLY        the Admin UI only watches (default false)
  ADMIN_UI_DIR             a local copy of the Admin UI served at /admin-ui/";

#[derive(Parser)]
#[command(
    name = "buildcast",
    version,
    about = "Runs builds and streams their progress and logs over Socket.IO",
    after_help = ENVIRONMENT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Once the server listens, write its port (one line) to this file, for
    /// scripts and tests that start it with PORT=0. The file is replaced whole,
    /// so a reader never sees part of it.
    #[arg(long, global = true, env = "BUILDCAST_PORT_FILE", value_name = "PATH")]
    port_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print an HS256 token signed with JWT_SECRET, to try AUTH_MODE=jwt out.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// viewer, builder or admin.
        #[arg(long, default_value = "viewer", value_parser = ["viewer", "builder", "admin"])]
        role: String,
        /// Projects the user may see, comma-separated; all when left out.
        #[arg(long, value_delimiter = ',')]
        projects: Option<Vec<String>>,
        /// How long the token is valid (e.g. 30m, 12h).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// `iss` claim (set it when JWT_ISSUER is set).
        #[arg(long, env = "JWT_ISSUER")]
        issuer: Option<String>,
        /// `aud` claim (set it when JWT_AUDIENCE is set).
        #[arg(long, env = "JWT_AUDIENCE")]
        audience: Option<String>,
        /// The HS256 secret, checked as the server checks it (at least 32 bytes).
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        secret: String,
    },
    /// Follow a build (or a project) live from the terminal.
    Watch(buildcast::watch::WatchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Some(Command::Watch(args)) = cli.command {
        return buildcast::watch::run(args).await;
    }
    if let Some(Command::Token {
        sub,
        role,
        projects,
        ttl,
        issuer,
        audience,
        secret,
    }) = cli.command
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = NewToken {
            sub,
            role,
            projects,
            exp: now + ttl.as_secs(),
            iss: issuer,
            aud: audience,
        };
        // The check the server makes at start-up, with the same message.
        let secret = match buildcast::config::auth::hs256_secret(&secret) {
            Ok(secret) => secret,
            Err(e) => {
                eprintln!("buildcast: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match mint(&claims, &secret) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("buildcast: cannot sign the token: {e}");
                ExitCode::FAILURE
            }
        };
    }

    if let Err(e) = &dotenv
        && !e.not_found()
    {
        eprintln!("buildcast: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("buildcast: {e}");
            return ExitCode::FAILURE;
        }
    };
    buildcast::telemetry::init(&config.log);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("buildcast: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &cli.port_file
        && let Err(e) = write_port_file(path, app.port())
    {
        eprintln!(
            "buildcast: cannot write --port-file {}: {e}",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("buildcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `port` and a newline to `path` through a temporary file and a rename.
fn write_port_file(path: &std::path::Path, port: u16) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_points_to_the_environment_settings() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains(".env.example"), "{help}");
        for variable in [
            "HOST",
            "PORT",
            "DATA_DIR",
            "AUTH_MODE",
            "JWT_SECRET",
            "RUST_LOG",
        ] {
            assert!(help.contains(variable), "{variable} in {help}");
        }
    }

    #[test]
    fn help_names_only_variables_the_example_file_has() {
        // Read at run time, not embedded: the file is no input of the build.
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
            .expect(".env.example beside Cargo.toml");
        // A variable's line starts with two spaces and its name; a wrapped
        // description goes on with more.
        for line in ENVIRONMENT_HELP
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        {
            // "A, B  description": the names run until one without a comma.
            let mut names = Vec::new();
            for word in line.split_whitespace() {
                names.push(word.trim_end_matches(','));
                if !word.ends_with(',') {
                    break;
                }
            }
            for name in names {
                assert!(
                    example.contains(&format!("{name}=")),
                    "{name} is not in .env.example"
                );
            }
        }
    }
}
