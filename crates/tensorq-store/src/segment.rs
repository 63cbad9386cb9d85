//! Segment files: naming and the per-segment reference counts that drive
//! garbage collection.
//!
//! Owns: file names (`<n>.log`, `<n>.ack`), parsing them back, and
//! [`SegMeta`], the only per-segment memory the store keeps (live reference
//! count per queue). Does not own: record bytes (`record.rs`), writing
//! (`writer.rs`) or scanning (`recovery.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

/// Extension of segment (message log) files.
pub const LOG_EXT: &str = "log";
/// Extension of per-segment ack files.
pub const ACK_EXT: &str = "ack";
/// Extension given to a segment whose header is unreadable (kept for
/// inspection, never read again).
pub const CORRUPT_EXT: &str = "corrupt";
/// Width of the zero-padded decimal segment number in file names.
const NAME_DIGITS: usize = 10;

/// File name of segment `n`'s log.
pub fn log_name(n: u32) -> String {
    format!("{n:0width$}.{LOG_EXT}", width = NAME_DIGITS)
}

/// File name of segment `n`'s ack file.
pub fn ack_name(n: u32) -> String {
    format!("{n:0width$}.{ACK_EXT}", width = NAME_DIGITS)
}

/// What a directory entry is, if it belongs to the segment log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegFile {
    /// `<n>.log`
    Log(u32),
    /// `<n>.ack`
    Ack(u32),
}

/// Parse a file name produced by [`log_name`] / [`ack_name`].
pub fn parse_name(name: &str) -> Option<SegFile> {
    let (num, ext) = name.split_once('.')?;
    if num.len() != NAME_DIGITS || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = num.parse().ok()?;
    match ext {
        LOG_EXT => Some(SegFile::Log(n)),
        ACK_EXT => Some(SegFile::Ack(n)),
        _ => None,
    }
}

/// In-memory state of one segment: how many (queue, message) references
/// in it are still unacked. A few dozen bytes per segment; nothing per
/// message.
#[derive(Debug, Default)]
pub(crate) struct SegMeta {
    /// Total live references (sum of `per_queue`).
    pub live: u64,
    /// Live references per queue id.
    pub per_queue: HashMap<u32, u64>,
    /// No more records will be appended.
    pub sealed: bool,
    /// Read handle, set once the file exists on disk.
    pub file: Option<Arc<File>>,
}

impl SegMeta {
    pub(crate) fn add_ref(&mut self, q: u32) {
        *self.per_queue.entry(q).or_insert(0) += 1;
        self.live += 1;
    }

    /// Drop one reference of `q`; false if `q` has none here (duplicate ack,
    /// or the queue was deleted).
    pub(crate) fn remove_ref(&mut self, q: u32) -> bool {
        match self.per_queue.get_mut(&q) {
            Some(c) if *c > 0 => {
                *c -= 1;
                if *c == 0 {
                    self.per_queue.remove(&q);
                }
                self.live = self.live.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Drop every reference of `q`; returns how many there were.
    pub(crate) fn drop_queue(&mut self, q: u32) -> u64 {
        let c = self.per_queue.remove(&q).unwrap_or(0);
        self.live = self.live.saturating_sub(c);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&log_name(7)), Some(SegFile::Log(7)));
        assert_eq!(
            parse_name(&ack_name(u32::MAX)),
            Some(SegFile::Ack(u32::MAX))
        );
        assert_eq!(parse_name("0000000007.log.corrupt"), None);
        assert_eq!(parse_name("7.log"), None);
        assert_eq!(parse_name("queues.json"), None);
        assert_eq!(parse_name("LOCK"), None);
    }

    #[test]
    fn ref_counts() {
        let mut m = SegMeta::default();
        m.add_ref(1);
        m.add_ref(1);
        m.add_ref(2);
        assert_eq!(m.live, 3);
        assert!(m.remove_ref(1));
        assert!(!m.remove_ref(3));
        assert_eq!(m.drop_queue(1), 1);
        assert_eq!(m.live, 1);
        assert!(m.remove_ref(2));
        assert!(!m.remove_ref(2));
        assert_eq!(m.live, 0);
    }
}
