//! The container image's build, checked without a container engine.
//!
//! `docker/Dockerfile` builds the binary from the files it copies out of the build
//! context (the repository root, less what `.dockerignore` excludes). These tests
//! find every file the crate reads at build time (the manifest, lock file, build
//! script, `src/`, and whatever `include_str!`, `include_bytes!`, `include_dir!` and
//! `cargo:rerun-if-changed` name) and assert that the build stage copies each one
//! and that `.dockerignore` lets it through; and that the build is `--locked`.
//!
//! `docker_build_stage_compiles_from_the_copied_files` (ignored: a release build
//! takes minutes; `scripts/docker-build-check` and `scripts/fresh-machine-check` run
//! it) lays out exactly what the build stage would see, builds it with the
//! Dockerfile's command in a target directory of its own, and starts the binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// --- .dockerignore, with Docker's rules --------------------------------------------

struct Pattern {
    glob: String,
    exclusion: bool,
}

/// The patterns of `.dockerignore`, cleaned as Docker cleans them.
fn dockerignore() -> Vec<Pattern> {
    let text = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore exists");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (exclusion, glob) = match l.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, l),
            };
            let glob = glob
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_owned();
            assert!(
                !glob.contains('['),
                "character classes in .dockerignore are not supported by this check: {l}"
            );
            Pattern { glob, exclusion }
        })
        .collect()
}

/// `filepath.Match` with Docker's `**`: `*` and `?` stay within one path part.
fn glob_match(glob: &[u8], path: &[u8]) -> bool {
    match glob {
        [] => path.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=path.len()).any(|i| glob_match(rest, &path[i..]))
        }
        [b'*', rest @ ..] => (0..=path.len())
            .take_while(|&i| i == 0 || path[i - 1] != b'/')
            .any(|i| glob_match(rest, &path[i..])),
        [b'?', rest @ ..] => !path.is_empty() && path[0] != b'/' && glob_match(rest, &path[1..]),
        [c, rest @ ..] => path.first() == Some(c) && glob_match(rest, &path[1..]),
    }
}

/// Whether Docker leaves `path` (relative, `/`-separated) out of the context: the
/// last pattern that matches the path or one of its parent folders decides.
fn ignored(patterns: &[Pattern], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for p in patterns {
        let hit = glob_match(p.glob.as_bytes(), path.as_bytes())
            || (1..parts.len())
                .any(|n| glob_match(p.glob.as_bytes(), parts[..n].join("/").as_bytes()));
        if hit {
            excluded = !p.exclusion;
        }
    }
    excluded
}

// --- docker/Dockerfile --------------------------------------------------------------

/// One `COPY` from the build context.
#[derive(Debug)]
struct Copy {
    stage: usize,
    sources: Vec<String>,
    dest: String,
}

struct Dockerfile {
    copies: Vec<Copy>,
    /// The `RUN` lines of the first stage.
    build_runs: Vec<String>,
    /// The first stage's `WORKDIR`.
    build_workdir: String,
}

fn dockerfile() -> Dockerfile {
    let text =
        std::fs::read_to_string(root().join("docker/Dockerfile")).expect("docker/Dockerfile");
    let joined = text.replace("\\\n", " ");
    let mut stage = 0;
    let mut copies = Vec::new();
    let mut build_runs = Vec::new();
    let mut build_workdir = "/".to_owned();
    for line in joined.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => stage += 1,
            "WORKDIR" if stage == 1 => build_workdir = args.trim().to_owned(),
            "RUN" if stage == 1 => build_runs.push(args.trim().to_owned()),
            "COPY" | "ADD" => {
                let words: Vec<&str> = args.split_whitespace().collect();
                if words.iter().any(|w| w.starts_with("--from")) {
                    continue;
                }
                let words: Vec<String> = words
                    .into_iter()
                    .filter(|w| !w.starts_with("--"))
                    .map(str::to_owned)
                    .collect();
                assert!(
                    words.len() >= 2 && !words[0].starts_with('['),
                    "COPY in a form this check does not read: {line}"
                );
                let (dest, sources) = words.split_last().expect("two words");
                copies.push(Copy {
                    stage,
                    sources: sources
                        .iter()
                        .map(|s| s.trim_end_matches('/').to_owned())
                        .collect(),
                    dest: dest.clone(),
                });
            }
            _ => {}
        }
    }
    Dockerfile {
        copies,
        build_runs,
        build_workdir,
    }
}

// --- what the crate reads at build time -------------------------------------------

fn files_under(dir: &Path, out: &mut BTreeSet<String>) {
    let meta = std::fs::metadata(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    if meta.is_file() {
        let rel = dir.strip_prefix(root()).expect("inside the repository");
        out.insert(rel.to_string_lossy().replace('\\', "/"));
        return;
    }
    for entry in std::fs::read_dir(dir).expect("a readable folder") {
        files_under(&entry.expect("a folder entry").path(), out);
    }
}

/// The `"…"` arguments of `name!(` in `text`.
fn macro_paths<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!("{name}!(\"");
    text.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// Every file of the repository that `cargo build --release --bin buildcast` reads.
fn build_inputs() -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for f in ["Cargo.toml", "Cargo.lock", "build.rs"] {
        files_under(&root().join(f), &mut files);
    }
    files_under(&root().join("src"), &mut files);
    let sources: Vec<String> = files
        .iter()
        .filter(|f| f.ends_with(".rs"))
        .cloned()
        .collect();
    for source in sources {
        let path = root().join(&source);
        let text = std::fs::read_to_string(&path).expect("a source file");
        let dir = path.parent().expect("a folder");
        for name in ["include_str", "include_bytes", "include_dir"] {
            for p in macro_paths(&text, name) {
                let target = match p.strip_prefix("$CARGO_MANIFEST_DIR/") {
                    Some(rel) => root().join(rel),
                    None if name == "include_dir" => root().join(p),
                    None => dir.join(p),
                };
                let target = target
                    .canonicalize()
                    .unwrap_or_else(|e| panic!("{source}: {name}!(\"{p}\"): {e}"));
                files_under(&target, &mut files);
            }
        }
        for p in text
            .match_indices("cargo:rerun-if-changed=")
            .map(|(at, m)| &text[at + m.len()..])
            .filter_map(|rest| rest.split(['"', '\n']).next())
        {
            files_under(&root().join(p), &mut files);
        }
    }
    files
}

/// Where the build stage puts context file `file`, if a `COPY` takes it.
fn copied_to(copies: &[Copy], workdir: &str, file: &str) -> Option<String> {
    copies.iter().filter(|c| c.stage == 1).find_map(|c| {
        c.sources.iter().find_map(|s| {
            let inside = if file == s {
                // A file copied into a folder keeps its name.
                if c.dest.ends_with('/') || c.sources.len() > 1 {
                    Path::new(file).file_name()?.to_string_lossy().into_owned()
                } else {
                    String::new()
                }
            } else {
                file.strip_prefix(s)?.strip_prefix('/')?.to_owned()
            };
            let dest = Path::new(workdir).join(&c.dest).join(inside);
            Some(dest.to_string_lossy().into_owned())
        })
    })
}

#[test]
fn every_build_input_is_copied_by_the_build_stage_and_sent_in_the_context() {
    let patterns = dockerignore();
    let file = dockerfile();
    let inputs = build_inputs();
    for must in [
        "web/dist/index.html",
        "pipelines.toml",
        "migrations/0001_init.sql",
        "build.rs",
    ] {
        assert!(inputs.contains(must), "the build reads {must}: {inputs:?}");
    }
    let mut problems = Vec::new();
    for input in &inputs {
        if ignored(&patterns, input) {
            problems.push(format!(
                "{input}: left out of the build context by .dockerignore"
            ));
        }
        match copied_to(&file.copies, &file.build_workdir, input) {
            None => problems.push(format!(
                "{input}: not copied by docker/Dockerfile's build stage"
            )),
            Some(dest) => {
                let want = Path::new(&file.build_workdir).join(input);
                if Path::new(&dest) != want {
                    problems.push(format!(
                        "{input}: copied to {dest}, where the build reads {}",
                        want.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_copied_path_exists_and_is_in_the_context() {
    let patterns = dockerignore();
    for copy in dockerfile().copies {
        for source in &copy.sources {
            assert!(root().join(source).exists(), "COPY {source}: no such file");
            let mut files = BTreeSet::new();
            files_under(&root().join(source), &mut files);
            for f in files {
                assert!(
                    !ignored(&patterns, &f),
                    "COPY {source}: {f} is left out by .dockerignore"
                );
            }
        }
    }
}

#[test]
fn the_build_is_locked_and_builds_the_binary_the_image_runs() {
    let file = dockerfile();
    assert!(
        file.build_runs.iter().any(|r| r.contains("cargo build")
            && r.contains("--release")
            && r.contains("--locked")),
        "the build stage runs cargo build --release --locked: {:?}",
        file.build_runs
    );
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("--from=build /src/target/release/buildcast"));
}

#[test]
fn the_context_leaves_out_builds_dependencies_and_secrets() {
    let patterns = dockerignore();
    for path in [
        "target/debug/buildcast",
        "tests/e2e/node_modules/ws/package.json",
        "web/node_modules/esbuild/package.json",
        "data/buildcast.db",
        ".env",
        ".git/config",
        "bench/target/release/bench",
        "fuzz/target/x",
    ] {
        assert!(
            ignored(&patterns, path),
            "{path} would be sent in the build context"
        );
    }
}

#[test]
fn the_dockerignore_matcher_follows_dockers_rules() {
    let p = |lines: &[&str]| {
        lines
            .iter()
            .map(|l| match l.strip_prefix('!') {
                Some(g) => Pattern {
                    glob: g.into(),
                    exclusion: true,
                },
                None => Pattern {
                    glob: (*l).into(),
                    exclusion: false,
                },
            })
            .collect::<Vec<_>>()
    };
    let all_but_src = p(&["*", "!src", "!web/dist"]);
    assert!(ignored(&all_but_src, "README.md"));
    assert!(!ignored(&all_but_src, "src/main.rs"));
    assert!(ignored(&all_but_src, "web/src/app.js"));
    assert!(!ignored(&all_but_src, "web/dist/assets/app.js"));
    let deep = p(&["**/node_modules", "target"]);
    assert!(ignored(&deep, "tests/e2e/node_modules/ws/index.js"));
    assert!(ignored(&deep, "node_modules/x"));
    assert!(ignored(&deep, "target/debug/x"));
    assert!(!ignored(&deep, "bench/target/x"));
    assert!(glob_match(b"*.md", b"README.md"));
    assert!(!glob_match(b"*.md", b"docs/README.md"));
    assert!(glob_match(b"docs/?.md", b"docs/a.md"));
}

/// Copies what the build stage sees into a fresh folder, builds it with the
/// Dockerfile's command, and starts the binary: it serves `/health` and the
/// embedded dashboard.
#[test]
#[ignore = "a release build from scratch takes minutes: scripts/docker-build-check runs it"]
fn docker_build_stage_compiles_from_the_copied_files() {
    let patterns = dockerignore();
    let file = dockerfile();
    let stage = tempfile::tempdir().expect("a temporary folder");
    let mut count = 0;
    for copy in file.copies.iter().filter(|c| c.stage == 1) {
        for source in &copy.sources {
            let mut files = BTreeSet::new();
            files_under(&root().join(source), &mut files);
            for f in files.into_iter().filter(|f| !ignored(&patterns, f)) {
                let dest = copied_to(&file.copies, &file.build_workdir, &f).expect("copied");
                let rel = Path::new(&dest)
                    .strip_prefix(&file.build_workdir)
                    .expect("inside WORKDIR");
                let to = stage.path().join(rel);
                std::fs::create_dir_all(to.parent().expect("a folder")).expect("mkdir");
                std::fs::copy(root().join(&f), &to).expect("copy");
                count += 1;
            }
        }
    }
    eprintln!("build stage: {count} files from the context");
    let run = file
        .build_runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    let status = Command::new("sh")
        .args(["-c", run])
        .current_dir(stage.path())
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run the build");
    assert!(status.success(), "`{run}` failed from the copied files");
    let bin: PathBuf = stage.path().join("target/release/buildcast");
    assert!(bin.is_file(), "{} was built", bin.display());

    // Start it as the image would, from a folder with nothing else in it.
    let data = tempfile::tempdir().expect("a temporary folder");
    let port_file = data.path().join("port");
    let mut child = Command::new(&bin)
        .arg("--port-file")
        .arg(&port_file)
        .current_dir(data.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATA_DIR", data.path().join("data"))
        .spawn()
        .expect("the built binary starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let port: u16 = loop {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the built binary did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("response");
        body
    };
    let health = get("/health");
    let page = get("/");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(
        page.contains("<html") || page.contains("<!doctype html"),
        "the dashboard: {page}"
    );
}
