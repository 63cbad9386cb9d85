//! Store configuration.
//!
//! Owns: [`StoreOptions`], its defaults and validation. Does not own: where
//! the options come from (the broker's config/CLI) or the data directory
//! path (passed to [`crate::Store::open`]).

use std::time::Duration;

use crate::disk::DEFAULT_DISK_FREE_LIMIT;
use crate::error::{Result, StoreError};
use crate::record::{MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN};
use crate::sync::SyncPolicy;

/// Default data directory chosen by the broker.
pub const DEFAULT_DATA_DIR: &str = "./tensorq-data";
/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024 * 1024;
/// Smallest segment size accepted (tests use small segments).
pub const MIN_SEGMENT_SIZE: u32 = 4096;
/// Largest segment size accepted. Record offsets are u32; a segment may
/// overshoot its size by one record, so keep the sum well below 4 GiB.
pub const MAX_SEGMENT_SIZE: u32 = 1024 * 1024 * 1024;
/// Default cap on bytes appended but not yet handed to write(2).
pub const DEFAULT_WRITE_BUFFER_LIMIT: usize = 16 * 1024 * 1024;
/// Default longest time a lazy record (one nobody waits on) stays in memory before it is
/// written, unless every queue acked it first (then it is never written).
pub const DEFAULT_LAZY_WRITE_DELAY: Duration = Duration::from_millis(20);
/// Longest lazy write delay accepted.
pub const MAX_LAZY_WRITE_DELAY: Duration = Duration::from_secs(1);
/// Smallest accepted write buffer limit.
pub const MIN_WRITE_BUFFER_LIMIT: usize = 64 * 1024;

// A full record must fit in a u32 offset space after a maximal segment.
const _: () = assert!(
    (MAX_SEGMENT_SIZE as u64) + (MAX_PAYLOAD_LEN as u64) + 65_536 + (SEGMENT_HEADER_LEN as u64)
        < u32::MAX as u64
);

/// Options for [`crate::Store::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Target segment file size; a new segment starts when the next record
    /// would cross it (a single larger record gets a segment of its own).
    pub segment_size: u32,
    /// When confirms are released.
    pub sync: SyncPolicy,
    /// Appenders block (backpressure) while more than this many bytes wait
    /// for the sync thread. Lazy records are written early, oldest first,
    /// once they fill half of it.
    pub write_buffer_limit: usize,
    /// How long a record appended with [`crate::Store::append_lazy`] may wait
    /// in memory before the sync thread writes it. A record acked by its
    /// queue within that time is never written. Zero writes lazy records as
    /// eagerly as the others.
    pub lazy_write_delay: Duration,
    /// Free-space threshold for [`crate::Store::disk_status`].
    pub disk_free_limit: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            sync: SyncPolicy::Always,
            write_buffer_limit: DEFAULT_WRITE_BUFFER_LIMIT,
            lazy_write_delay: DEFAULT_LAZY_WRITE_DELAY,
            disk_free_limit: DEFAULT_DISK_FREE_LIMIT,
        }
    }
}

impl StoreOptions {
    /// Check the limits.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(StoreError::InvalidOptions(format!(
                "segment_size {} must be within {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        if self.write_buffer_limit < MIN_WRITE_BUFFER_LIMIT {
            return Err(StoreError::InvalidOptions(format!(
                "write_buffer_limit {} must be at least {MIN_WRITE_BUFFER_LIMIT}",
                self.write_buffer_limit
            )));
        }
        if self.lazy_write_delay > MAX_LAZY_WRITE_DELAY {
            return Err(StoreError::InvalidOptions(format!(
                "lazy_write_delay {} ms must be at most {} ms",
                self.lazy_write_delay.as_millis(),
                MAX_LAZY_WRITE_DELAY.as_millis()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(StoreOptions::default().validate().is_ok());
        let o = StoreOptions {
            segment_size: 100,
            ..Default::default()
        };
        assert!(matches!(o.validate(), Err(StoreError::InvalidOptions(_))));
        let o = StoreOptions {
            write_buffer_limit: 10,
            ..Default::default()
        };
        assert!(matches!(o.validate(), Err(StoreError::InvalidOptions(_))));
        let o = StoreOptions {
            lazy_write_delay: Duration::from_secs(2),
            ..Default::default()
        };
        assert!(matches!(o.validate(), Err(StoreError::InvalidOptions(_))));
    }
}
