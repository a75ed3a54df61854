//! What a test does when something it needs is not installed: it fails, naming
//! what is missing and how to get it (`scripts/test` installs everything), unless
//! `BUILDCAST_ALLOW_SKIP=1` is set, and then it passes with a line on the
//! terminal saying what was skipped and why.
//!
//! The line goes straight to the process's standard error, not through `eprintln!`,
//! which libtest captures (and hides) for a test that passes.

use std::io::Write;

/// Call when `what` cannot run because `missing`; returns if the skip is allowed.
pub fn missing(what: &str, missing: &str) {
    let allowed =
        std::env::var_os("BUILDCAST_ALLOW_SKIP").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        allowed,
        "{what} needs {missing}: run scripts/test, which installs what the tests need, \
         or set BUILDCAST_ALLOW_SKIP=1 to skip it"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {what}: {missing} (BUILDCAST_ALLOW_SKIP is set)"
    );
}
