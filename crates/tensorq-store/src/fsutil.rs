//! Small durable-filesystem helpers.
//!
//! Owns: atomic replacement of a small file (write tmp, fsync, rename, fsync
//! directory) and directory fsync. Does not own: file formats or naming
//! beyond the `.tmp` suffix used here.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Suffix of temporary files; leftovers are removed on open.
pub const TMP_SUFFIX: &str = ".tmp";

/// fsync a directory so that creations, renames and unlinks in it persist.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Atomically replace `dir/name` with `bytes`: after a crash either the old
/// or the new content is present, never a mix.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| StoreError::io(&dst, e))?;
    fsync_dir(dir)
}

/// Remove `dir/name` if present and fsync the directory.
pub fn remove_durably(dir: &Path, name: &str) -> Result<()> {
    let p = dir.join(name);
    match fs::remove_file(&p) {
        Ok(()) => fsync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(&p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_tmp() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        write_atomic(d.path(), "f", b"one")?;
        write_atomic(d.path(), "f", b"two")?;
        let got = fs::read(d.path().join("f")).map_err(|e| StoreError::io("f", e))?;
        assert_eq!(got, b"two");
        assert!(!d.path().join("f.tmp").exists());
        remove_durably(d.path(), "f")?;
        assert!(!d.path().join("f").exists());
        remove_durably(d.path(), "f")?;
        Ok(())
    }
}
