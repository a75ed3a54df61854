//! Tracing set-up: one subscriber for the whole process, writing to standard
//! output, filtered by `RUST_LOG` (default: `buildcast=info,tower_http=info`),
//! human-readable text, or JSON lines when `LOG_FORMAT=json`. Text has colours
//! only when standard output is a terminal and `NO_COLOR` is unset, so a log
//! redirected to a file or a pipe holds no escape codes. The settings come from
//! [`crate::config`], which reads and checks them with every other variable.

use std::io::IsTerminal;

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
        let colours = log.ansi && std::io::stdout().is_terminal();
        builder.with_ansi(colours).init();
    }
}
