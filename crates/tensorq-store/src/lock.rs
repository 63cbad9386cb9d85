//! Exclusive lock on the data directory.
//!
//! Owns: checking that the data directory exists and is readable, and taking
//! a non-blocking exclusive `flock(2)` on `<dir>/LOCK` before anything else in
//! the directory is touched. Does not own: any other file in the directory.
//!
//! The lock belongs to the open file description, so a second `Store::open`
//! on the same directory fails even inside the same process. It is released
//! when the [`DirLock`] is dropped (or the process dies).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Held for the lifetime of an open store.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Make sure `dir` is a readable directory, creating it (and its parents) if
/// it does not exist.
pub(crate) fn prepare_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Err(source) => {
            return Err(StoreError::DataDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    // Listing proves we can read it.
    fs::read_dir(dir).map_err(|source| StoreError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(())
}

impl DirLock {
    /// Take the exclusive lock or fail with [`StoreError::Locked`] without
    /// modifying anything.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
        // SAFETY: flock on a valid, owned file descriptor has no memory
        // safety requirements.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            return Err(StoreError::DataDir {
                path: dir.to_path_buf(),
                source: err,
            });
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_and_release_allows_relock() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let a = DirLock::acquire(d.path())?;
        assert!(matches!(
            DirLock::acquire(d.path()),
            Err(StoreError::Locked { .. })
        ));
        drop(a);
        let _b = DirLock::acquire(d.path())?;
        Ok(())
    }

    #[test]
    fn file_is_not_a_directory() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let f = d.path().join("plain");
        fs::write(&f, b"x").map_err(|e| StoreError::io(&f, e))?;
        assert!(matches!(
            prepare_dir(&f),
            Err(StoreError::NotADirectory { .. })
        ));
        Ok(())
    }
}
