//! Typed errors of the store.
//!
//! Owns: [`StoreError`], the single error type every public call returns, and
//! [`ParsePolicyError`] for sync-policy strings. Does not own: logging (each
//! module logs where the failure happens) or broker-level mapping of errors to
//! AMQP replies (the broker turns a failed confirm into `basic.nack`).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Every failure the store reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this process) holds the data
    /// directory's exclusive lock. Nothing in the directory was modified.
    #[error("data directory {path} is locked by another running process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory cannot be created, opened or listed.
    #[error("data directory {path} cannot be used: {source}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The data directory path exists but is not a directory.
    #[error("data directory path {path} exists but is not a directory")]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// An I/O error on a specific file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A file's contents failed validation (bad magic, bad CRC, bad JSON).
    #[error("corrupt {what} in {path}: {detail}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What kind of data was corrupt.
        what: &'static str,
        /// Human-readable detail.
        detail: String,
    },
    /// [`crate::StoreOptions`] failed validation.
    #[error("invalid store options: {0}")]
    InvalidOptions(String),
    /// The payload is larger than [`crate::MAX_PAYLOAD_LEN`].
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Payload length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message must name between 1 and [`crate::MAX_QUEUES_PER_MESSAGE`]
    /// distinct queues.
    #[error("a message must be routed to 1..={max} distinct queues, got {got}")]
    BadQueueList {
        /// Number of queues given (or the duplicate count).
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The queue id is not (or no longer) registered.
    #[error("unknown queue id {0}")]
    UnknownQueue(u32),
    /// A [`crate::MsgRef`] does not point at a live record of this store.
    #[error("message reference {0} does not point to a readable record")]
    BadRef(String),
    /// The write of the message with this sequence number failed (for
    /// example ENOSPC). The store keeps retrying the write, but the publisher
    /// must be told the message was not confirmed (`basic.nack`).
    #[error("message {seq} is not durable: {reason}")]
    NotDurable {
        /// Sequence number (ticket) of the message.
        seq: u64,
        /// The OS error text.
        reason: Arc<str>,
    },
    /// The write buffer is full while the sync thread's writes are failing;
    /// the append is refused instead of blocking indefinitely.
    #[error("write buffer full while writes are failing: {0}")]
    WriteStalled(Arc<str>),
    /// An fsync failed. After a failed fsync the kernel may have dropped dirty
    /// pages, so the store stops accepting writes; reopen it (recovery
    /// re-verifies every CRC).
    #[error("store is poisoned after a failed fsync: {0}")]
    Poisoned(Arc<str>),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// Definitions could not be (de)serialized.
    #[error("definitions (de)serialization failed for {path}: {source}")]
    Json {
        /// The definitions file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Error parsing a [`crate::SyncPolicy`] from a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePolicyError {
    /// The string is none of `always`, `never`, `interval=<ms>`.
    #[error("unknown sync policy {0:?}: expected `always`, `never` or `interval=<ms>`")]
    Unknown(String),
    /// `interval=` was not followed by a whole number of milliseconds.
    #[error("invalid interval {0:?}: expected a whole number of milliseconds, e.g. `interval=20`")]
    BadInterval(String),
    /// The interval is outside the accepted range.
    #[error("interval {got} ms out of range: must be {min}..={max} ms")]
    IntervalOutOfRange {
        /// Parsed value.
        got: u64,
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
    },
}
