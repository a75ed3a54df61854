//! Start-up configuration: bad settings are refused with a message naming them.

use std::collections::HashMap;
use std::process::Command;

use buildcast::config::Config;

use crate::helpers::{TestOptions, try_spawn_app};

fn config(vars: &[(&str, &str)]) -> Result<Config, buildcast::config::ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|k| vars.get(k).cloned())
}

#[test]
fn invalid_settings_are_refused_naming_the_variable() {
    // Arrange
    let missing = tempfile::tempdir().expect("a temporary folder");
    let missing = missing.path().join("missing.toml");
    let missing = missing.to_str().expect("a UTF-8 path");
    let cases = [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("WEBSOCKET_CORS_ORIGIN", "not a url"),
        ("PIPELINES_FILE", missing),
        ("MAX_CONCURRENT_JOBS", "0"),
        ("RETENTION_DAYS", "-1"),
        ("WEBSOCKET_ENABLED", "maybe"),
    ];

    for (variable, value) in cases {
        // Act
        let error = config(&[(variable, value)]).expect_err(variable);

        // Assert
        let message = error.to_string();
        assert!(
            message.contains(variable),
            "{variable}={value:?}: {message}"
        );
        assert_eq!(error.variable, variable);
    }
}

#[test]
fn valid_settings_are_read() {
    // Act
    let config = config(&[
        ("PORT", "0"),
        ("HOST", "localhost"),
        ("MAX_CONCURRENT_JOBS", "3"),
        ("WEBSOCKET_CORS_ORIGIN", "https://app.example.com"),
        ("RETENTION_DAYS", "0"),
    ])
    .expect("a valid configuration");

    // Assert
    assert_eq!(config.port, 0);
    assert_eq!(config.host.to_string(), "127.0.0.1");
    assert_eq!(config.max_concurrent_jobs, 3);
    assert_eq!(config.retention, None);
}

#[test]
fn binary_with_a_bad_port_exits_with_a_message_and_no_panic() {
    // Arrange
    let dir = tempfile::tempdir().expect("a temporary folder");

    // Act
    let output = Command::new(env!("CARGO_BIN_EXE_buildcast"))
        .current_dir(dir.path())
        .env("PORT", "abc")
        .env("DATA_DIR", dir.path().join("data"))
        .env_remove("PIPELINES_FILE")
        .output()
        .expect("the binary runs");

    // Assert
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    assert!(stderr.contains("PORT"), "stderr: {stderr}");
    assert!(stderr.contains("abc"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[tokio::test]
async fn pipelines_file_with_a_syntax_error_stops_start_up_naming_the_file() {
    // Arrange
    let options = TestOptions::default().pipelines("[pipelines.broken\nbuild = \"echo\"\n");

    // Act
    let error = match try_spawn_app(options).await {
        Ok(_) => panic!("a server started with a broken pipelines file"),
        Err(e) => format!("{e:#}"),
    };

    // Assert
    assert!(error.contains("pipelines.toml"), "{error}");
}

#[tokio::test]
async fn pipelines_file_with_an_unknown_step_stops_start_up() {
    // Arrange
    let options = TestOptions::default().pipelines("[pipelines.x.steps]\ncompile = \"echo\"\n");

    // Act
    let error = match try_spawn_app(options).await {
        Ok(_) => panic!("a server started with an unknown step"),
        Err(e) => format!("{e:#}"),
    };

    // Assert
    assert!(error.contains("pipelines.toml"), "{error}");
    assert!(error.contains("compile"), "{error}");
}
