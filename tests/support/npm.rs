//! Installing a Node suite's npm packages from its lock file, for the Rust tests
//! that run Node code (`tests/node_e2e.rs`, `tests/metrics.rs`): on a fresh clone
//! nothing is installed yet, and after a pull the lock file may be newer than what
//! is.

use std::path::Path;
use std::process::Command;

/// Whether `dir/node_modules` was installed from the current `package-lock.json`:
/// npm records what it installed in `node_modules/.package-lock.json`, so a lock
/// file changed since (a pull that added a package) means installing again.
fn installed_from_lock(dir: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(&dir.join("package-lock.json")),
        modified(&dir.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(installed)) => installed >= lock,
        _ => false,
    }
}

/// Runs `npm ci` in `dir` unless its packages are installed from its lock file;
/// false if npm is missing or fails.
pub fn ensure_installed(dir: &Path) -> bool {
    installed_from_lock(dir)
        || Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success())
}
