//! The `buildcast` binary: load `.env`, set up logging, read the configuration,
//! then build and run the server until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use buildcast::config::Config;
use buildcast::startup::{Application, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let dotenv = dotenvy::dotenv();
    buildcast::telemetry::init();
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
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("buildcast: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("buildcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}
