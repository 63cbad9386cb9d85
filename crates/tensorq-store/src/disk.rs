//! Free-space query for the filesystem holding the data directory.
//!
//! Owns: `statvfs(3)` and the [`DiskStatus`] snapshot the broker polls to
//! raise or clear its disk alarm. Does not own: the alarm itself (blocking
//! publishers is the broker's job) or the polling schedule.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Default free-space limit below which the broker should raise its disk
/// alarm (50 MB, like RabbitMQ's default `disk_free_limit`).
pub const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// Result of a free-space check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStatus {
    /// Bytes available to unprivileged users on the data dir's filesystem.
    pub free_bytes: u64,
    /// Configured limit.
    pub limit: u64,
    /// `free_bytes < limit`: the broker should block publishers.
    pub alarm: bool,
}

/// Bytes available (to non-root users) on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        StoreError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated string and `st` points to
    // writable memory of the right type; statvfs fully initialises it on
    // success (rc == 0), which we check before reading.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(StoreError::io(path, io::Error::last_os_error()));
    }
    // SAFETY: rc == 0 means the struct was filled in.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize) = (st.f_bavail as u64, st.f_frsize as u64);
    Ok(avail.saturating_mul(frsize))
}

/// Free-space check against a limit.
pub fn disk_status(path: &Path, limit: u64) -> Result<DiskStatus> {
    let free = free_bytes(path)?;
    Ok(DiskStatus {
        free_bytes: free,
        limit,
        alarm: free < limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_tmp_is_positive_and_alarm_follows_limit() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let s = disk_status(d.path(), 0)?;
        assert!(s.free_bytes > 0);
        assert!(!s.alarm);
        let s = disk_status(d.path(), u64::MAX)?;
        assert!(s.alarm);
        assert!(free_bytes(&d.path().join("missing")).is_err());
        Ok(())
    }
}
