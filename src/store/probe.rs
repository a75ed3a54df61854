//! The write probe of readiness: proves the data folder takes a write now.
//!
//! A small file is created next to the database, filled, flushed to the disk and
//! removed. A full disk, a read-only mount or a folder the server may no longer
//! write all fail it, as they would fail the next history batch.

use std::io::Write;
use std::path::Path;

/// Bytes written by the probe: one page, so a full filesystem refuses it.
const PROBE_BYTES: usize = 4096;

/// Writes, flushes and removes a probe file in `dir`.
pub fn write_probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".ready-probe");
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    result?;
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_folder_passes_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_folder_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_probe(&dir.path().join("gone")).is_err());
    }
}
