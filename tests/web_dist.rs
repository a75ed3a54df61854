//! `web/dist/` is committed and embedded in the binary: this checks that it is
//! exactly what `web/build.mjs` makes of `web/src/` now, so a change to the
//! dashboard's sources cannot ship without its bundle (or the other way round).
//!
//! Rebuilds into a temporary folder with the locked esbuild (installing
//! `web/`'s npm dependencies from its lock file first if they are missing) and
//! compares every file byte for byte. On failure: `cd web && npm ci && npm run
//! build`, then commit `web/dist/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file under `root`, by path relative to it, with its bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let relative = path.strip_prefix(root).expect("under root").to_path_buf();
                found.insert(relative, bytes);
            }
        }
    }
    found
}

#[test]
fn web_dist_is_what_web_build_makes_of_web_src() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    if !web.join("node_modules").is_dir() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&web)
            .status()
            .unwrap_or_else(|e| panic!("cannot run npm (install Node.js 20+ and npm): {e}"));
        assert!(installed.success(), "npm ci failed in web/");
    }
    let out = tempfile::tempdir().expect("temporary folder");
    let built = Command::new("node")
        .arg("build.mjs")
        .arg("--out")
        .arg(out.path())
        .current_dir(&web)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    assert!(
        built.status.success(),
        "web/build.mjs failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let fresh = files(out.path());
    let committed = files(&web.join("dist"));
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&fresh),
        "web/dist has other files than a build of web/src makes: run `cd web && npm ci && npm run build` and commit web/dist"
    );
    for (name, bytes) in &fresh {
        assert!(
            committed[name] == *bytes,
            "web/dist/{} differs from a build of web/src: run `cd web && npm ci && npm run build` and commit web/dist",
            name.display()
        );
    }
}
