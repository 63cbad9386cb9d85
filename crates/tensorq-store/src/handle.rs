//! Small, copyable handles the broker keeps per message and per queue.
//!
//! Owns: [`MsgRef`] (where a message record lives), [`QueueId`] (the compact
//! id of a durable queue) and [`SyncTicket`] (what a publisher awaits).
//! Does not own: the meaning of these numbers on disk (see `record.rs`) or
//! any lookup structure (the broker keeps the handles in its own queues).

use std::fmt;

/// Location of one message record in the segment log.
///
/// 24 bytes. This is the only per-message state the broker needs to keep to
/// read the payload back ([`crate::Store::read`]) and to ack it
/// ([`crate::Store::ack`]). The store itself keeps no per-message memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgRef {
    pub(crate) id: u64,
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

impl MsgRef {
    /// Store-wide message sequence number (unique, increasing in append order).
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Segment number holding the record.
    pub fn segment(&self) -> u32 {
        self.segment
    }
    /// Byte offset of the record's first byte inside the segment file.
    pub fn offset(&self) -> u32 {
        self.offset
    }
    /// Total record length on disk (framing + queue list + payload).
    pub fn record_len(&self) -> u32 {
        self.len
    }
}

impl fmt::Display for MsgRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "msg#{} @ segment {} offset {} len {}",
            self.id, self.segment, self.offset, self.len
        )
    }
}

/// Compact, persisted id of a durable queue. Ids are never reused, so a
/// deleted queue's id never matches a newer queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub(crate) u32);

impl QueueId {
    /// The raw number as written in records.
    pub fn raw(self) -> u32 {
        self.0
    }
}

impl From<QueueId> for u32 {
    fn from(q: QueueId) -> u32 {
        q.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// Returned by [`crate::Store::append`]: the message's sequence number, to
/// await with [`crate::Store::wait_durable`] or to compare against the
/// watermark in [`crate::DurableState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncTicket(pub(crate) u64);

impl SyncTicket {
    /// The sequence number (equal to [`MsgRef::id`] of the appended message).
    pub fn seq(self) -> u64 {
        self.0
    }
}
