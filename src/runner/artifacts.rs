//! Artifact collection: after the last step, the files matching the pipeline's
//! globs are copied out of the working directory into the job's artifacts folder,
//! under their file names, where the REST API serves them from.

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
