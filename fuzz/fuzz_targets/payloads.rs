//! Feeds arbitrary bytes to every parser of untrusted input: Socket.IO payloads,
//! ids, tokens, origins and pipeline files. None may panic; whatever they accept
//! must be valid.
#![no_main]

use buildcast::auth::Authenticator;
use buildcast::config::{AuthMode, JwtConfig, JwtKey};
use buildcast::job::{JobId, validate_id};
use buildcast::runner::pipeline::Pipelines;
use buildcast::socket::subscriptions::parse_job_request;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(&AuthMode::Jwt(JwtConfig {
            key: JwtKey::Secret("fuzzing-secret-that-is-32-bytes-long".into()),
            issuer: None,
            audience: None,
            leeway_secs: 0,
        }))
        .expect("valid fuzz configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(request) = parse_job_request(&value)
    {
        assert!(validate_id(request.job_id.as_str()).is_ok());
        assert!(JobId::parse(request.job_id.as_str()).is_ok());
    }
    let text = String::from_utf8_lossy(data);
    let _ = validate_id(&text);
    let _ = buildcast::config::parse_origins(&text);
    let _ = authenticator().verify(Some(&text));
    let _ = Pipelines::parse(&text, "fuzz", None);
});
