//! Artifact names and the files they name: the rule every name must follow,
//! whoever reports it (an external worker's `complete` event, a pipeline's
//! collection), and opening a job's artifact confined to its artifacts folder.
//!
//! A name is a relative path inside `<DATA_DIR>/jobs/<id>/artifacts/`. The rule is
//! checked where names come in (refused with a reason), and again when a file is
//! served, which is the real guard: names recorded before the rule existed, or a
//! symlink inside the folder, must not lead anywhere else. Serving opens the file
//! through [`cap_std`], whose lookups cannot leave the directory they start from
//! (`..`, absolute paths and symlinks pointing outside all fail), so there is no
//! window between checking a path and opening it.

use std::io;
use std::path::{Component, Path};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::job::JobId;

/// Why a string cannot name an artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is absolute (it starts with '/')")]
    Absolute,
    #[error("the name starts with a drive letter")]
    Drive,
    #[error("the name contains a backslash")]
    Backslash,
    #[error("the name contains a control character")]
    Control,
    #[error("the name has an empty, '.' or '..' part")]
    BadComponent,
}

/// Checks an artifact name: a relative, normalized path of `/`-separated parts,
/// none of them empty, `.` or `..`; no drive prefix, no backslash, no control
/// characters (NUL included).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.chars().any(char::is_control) {
        Err(NameError::Control)
    } else if name.contains('\\') {
        Err(NameError::Backslash)
    } else if name.starts_with('/') {
        Err(NameError::Absolute)
    } else if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        Err(NameError::Drive)
    } else if name.split('/').any(|part| matches!(part, "" | "." | ".."))
        || !Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        Err(NameError::BadComponent)
    } else {
        Ok(())
    }
}

/// Opens the artifact `name` of job `id` for reading, from `jobs_dir` (the folder
/// holding every job's folder). Fails unless `name` follows [`validate_name`] and
/// resolves, symlinks included, to a regular file inside the job's artifacts
/// folder.
///
/// Blocking: call it from a blocking task.
pub fn open(jobs_dir: &Path, id: &JobId, name: &str) -> io::Result<std::fs::File> {
    validate_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let jobs = Dir::open_ambient_dir(jobs_dir, ambient_authority())?;
    let folder = jobs.open_dir(Path::new(id.as_str()).join("artifacts"))?;
    let file = folder.open(name)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file.into_std())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_normalized_names_pass() {
        for good in [
            "result.txt",
            "out/app.tar.gz",
            "a b/c-d_e.f",
            "..x",
            "x..",
            ".env-copy",
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for (bad, why) in [
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("//server/share", NameError::Absolute),
            ("C:\\x", NameError::Backslash),
            ("C:x", NameError::Drive),
            ("c:/x", NameError::Drive),
            ("\\\\server\\share", NameError::Backslash),
            ("..\\x", NameError::Backslash),
            ("a\0b", NameError::Control),
            ("a\nb", NameError::Control),
            ("..", NameError::BadComponent),
            ("../../x", NameError::BadComponent),
            ("a/../../b", NameError::BadComponent),
            ("./a", NameError::BadComponent),
            ("a/./b", NameError::BadComponent),
            ("a//b", NameError::BadComponent),
            ("a/", NameError::BadComponent),
            (".", NameError::BadComponent),
        ] {
            assert_eq!(validate_name(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn open_stays_inside_the_artifacts_folder() {
        let root = tempfile::tempdir().unwrap();
        let jobs = root.path().join("jobs");
        let id = JobId::parse("j1").unwrap();
        let folder = jobs.join("j1").join("artifacts");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::write(folder.join("ok.txt"), "ok").unwrap();
        std::fs::write(folder.join("sub/deep.txt"), "deep").unwrap();
        std::fs::write(root.path().join("secret"), "secret").unwrap();
        std::fs::write(jobs.join("j1").join("beside"), "beside").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), folder.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../beside", folder.join("rel-link")).unwrap();
        std::os::unix::fs::symlink("ok.txt", folder.join("inner-link")).unwrap();

        let read = |name: &str| open(&jobs, &id, name).map(|f| std::io::read_to_string(f).unwrap());
        assert_eq!(read("ok.txt").unwrap(), "ok");
        assert_eq!(read("sub/deep.txt").unwrap(), "deep");
        assert_eq!(read("inner-link").unwrap(), "ok");
        for escape in [
            "abs-link",
            "rel-link",
            "../beside",
            "/etc/passwd",
            "sub",
            "missing",
        ] {
            assert!(read(escape).is_err(), "{escape} must not be served");
        }
    }
}
