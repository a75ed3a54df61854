//! Tracing set-up: one subscriber for the whole process, filtered by `RUST_LOG`
//! (default: `buildcast=info,tower_http=info`), human-readable on a terminal and
//! JSON lines when `LOG_FORMAT=json`. The settings come from [`crate::config`],
//! which reads and checks them with every other variable.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber. Call once, right after reading the config.
pub fn init(log: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&log.filter))
        .with_writer(std::io::stdout);
    if log.json {
        builder.json().init();
    } else {
        builder.with_ansi(log.ansi).init();
    }
}
