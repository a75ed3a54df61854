//! Artifact collection: after the last step, the files matching the pipeline's
//! globs are copied out of the working directory into the job's artifacts folder,
//! under their file names, where the REST API serves them from. A match whose
//! file name breaks [`crate::artifact::validate_name`], or that resolves (through
//! symlinks) outside the working directory, is skipped with a note.

use std::collections::BTreeSet;
use std::path::Path;

/// What collection kept, and anything worth telling the user about it.
#[derive(Debug, Default)]
pub struct Collected {
    /// File names, in the order found.
    pub names: Vec<String>,
    /// System log lines: globs that matched nothing, skipped duplicates, copy errors.
    pub notes: Vec<String>,
}

/// Copies the files under `workdir` matching `globs` into `dest`.
pub async fn collect(workdir: &Path, globs: &[String], dest: &Path) -> Collected {
    let mut out = Collected::default();
    if globs.is_empty() {
        return out;
    }
    if let Err(e) = tokio::fs::create_dir_all(dest).await {
        out.notes
            .push(format!("Could not create the artifacts folder: {e}"));
        return out;
    }
    let mut seen = BTreeSet::new();
    for pattern in globs {
        let full = workdir.join(pattern);
        let Some(full) = full.to_str() else { continue };
        let matches: Vec<_> = match glob::glob(full) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect(),
            Err(e) => {
                out.notes.push(format!("Artifact glob {pattern:?}: {e}"));
                continue;
            }
        };
        if matches.is_empty() {
            out.notes
                .push(format!("Artifact glob {pattern:?} matched no files"));
        }
        for path in matches {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if let Err(e) = crate::artifact::validate_name(&name) {
                out.notes
                    .push(format!("Artifact {} skipped: {e}", path.display()));
                continue;
            }
            if !inside(&path, workdir).await {
                out.notes.push(format!(
                    "Artifact {} skipped: it leads outside the working directory",
                    path.display()
                ));
                continue;
            }
            if !seen.insert(name.clone()) {
                out.notes.push(format!(
                    "Artifact {} skipped: another artifact is already named {name}",
                    path.display()
                ));
                continue;
            }
            match tokio::fs::copy(&path, dest.join(&name)).await {
                Ok(_) => out.names.push(name),
                Err(e) => out.notes.push(format!("Artifact {name} not kept: {e}")),
            }
        }
    }
    out
}

/// Whether `path`, symlinks resolved, is inside `dir` (symlinks resolved too).
async fn inside(path: &Path, dir: &Path) -> bool {
    match (
        tokio::fs::canonicalize(path).await,
        tokio::fs::canonicalize(dir).await,
    ) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn matches_leading_outside_the_workdir_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        let dest = root.path().join("artifacts");
        std::fs::create_dir_all(work.join("out")).unwrap();
        std::fs::write(work.join("out/ok.txt"), "ok").unwrap();
        std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.txt"), work.join("out/link.txt"))
            .unwrap();
        std::fs::write(work.join("out/a\\b.txt"), "backslash").unwrap();

        let out = collect(&work, &["out/*.txt".to_owned()], &dest).await;

        assert_eq!(out.names, ["ok.txt"]);
        assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
        assert!(!dest.join("link.txt").exists());
    }
}
