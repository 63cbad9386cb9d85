//! Sync policy, durability watermark and group-commit counters.
//!
//! Owns: [`SyncPolicy`] (and its string form), [`DurableState`] (the
//! watermark publishers wait on, plus failed ranges), [`TicketStatus`] and
//! [`SyncStats`]. Does not own: the sync thread itself (`writer.rs`) or the
//! waiting API (`store.rs`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ParsePolicyError;
use crate::handle::SyncTicket;

/// Smallest accepted `interval=<ms>`.
pub const MIN_SYNC_INTERVAL_MS: u64 = 1;
/// Largest accepted `interval=<ms>`.
pub const MAX_SYNC_INTERVAL_MS: u64 = 60_000;

/// When a publish counts as durable (when its confirm may be sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Confirm only after the record is fsynced (group commit: one fsync
    /// covers every write pending at that moment). Survives power loss.
    #[default]
    Always,
    /// Confirm after write(2); fsync every interval. A process crash
    /// (kill -9) loses nothing confirmed; an OS crash or power loss can lose
    /// up to the last interval of confirmed messages.
    Interval(Duration),
    /// Confirm after write(2); never fsync except on clean close. A process
    /// crash loses nothing confirmed; an OS crash can lose whatever the kernel
    /// had not yet written back (typically up to ~30 s).
    Never,
}

impl SyncPolicy {
    /// True when confirms wait for fsync.
    pub fn confirms_after_fsync(&self) -> bool {
        matches!(self, SyncPolicy::Always)
    }
}

impl FromStr for SyncPolicy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("always") {
            return Ok(SyncPolicy::Always);
        }
        if t.eq_ignore_ascii_case("never") {
            return Ok(SyncPolicy::Never);
        }
        let lower = t.to_ascii_lowercase();
        if let Some(ms) = lower.strip_prefix("interval=") {
            let ms = ms.trim();
            let v: u64 = ms
                .parse()
                .map_err(|_| ParsePolicyError::BadInterval(ms.to_string()))?;
            if !(MIN_SYNC_INTERVAL_MS..=MAX_SYNC_INTERVAL_MS).contains(&v) {
                return Err(ParsePolicyError::IntervalOutOfRange {
                    got: v,
                    min: MIN_SYNC_INTERVAL_MS,
                    max: MAX_SYNC_INTERVAL_MS,
                });
            }
            return Ok(SyncPolicy::Interval(Duration::from_millis(v)));
        }
        Err(ParsePolicyError::Unknown(s.to_string()))
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Never => f.write_str("never"),
            SyncPolicy::Interval(d) => write!(f, "interval={}", d.as_millis()),
        }
    }
}

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketStatus {
    /// Not yet durable under the store's policy.
    Pending,
    /// Durable: the confirm may be sent.
    Durable,
    /// The write failed (or the store is poisoned): send `basic.nack`.
    Failed(Arc<str>),
}

/// Snapshot of the durability watermark, published by the sync thread after
/// every round (see [`crate::Store::subscribe_durable`]).
#[derive(Debug, Clone, Default)]
pub struct DurableState {
    /// Every sequence number `<= confirmed` that is not inside a failed range
    /// is durable under the configured policy.
    pub confirmed: u64,
    /// Inclusive ranges of sequence numbers whose write failed (coalesced).
    pub failed: Arc<Vec<(u64, u64, Arc<str>)>>,
    /// Set once an fsync fails; every unconfirmed ticket is then failed.
    pub poisoned: Option<Arc<str>>,
}

impl DurableState {
    /// Status of one ticket.
    pub fn status(&self, t: SyncTicket) -> TicketStatus {
        let seq = t.0;
        if let Some((_, _, why)) = self
            .failed
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&seq))
        {
            return TicketStatus::Failed(why.clone());
        }
        if seq <= self.confirmed {
            return TicketStatus::Durable;
        }
        match &self.poisoned {
            Some(why) => TicketStatus::Failed(why.clone()),
            None => TicketStatus::Pending,
        }
    }

    /// Record a failed range, merging with an overlapping or adjacent one.
    pub(crate) fn add_failed(&mut self, first: u64, last: u64, why: Arc<str>) {
        let mut v: Vec<(u64, u64, Arc<str>)> = self.failed.as_ref().clone();
        if let Some(r) = v
            .iter_mut()
            .find(|(a, b, _)| first <= b.saturating_add(1) && last.saturating_add(1) >= *a)
        {
            r.0 = r.0.min(first);
            r.1 = r.1.max(last);
            r.2 = why;
        } else {
            v.push((first, last, why));
        }
        self.failed = Arc::new(v);
    }
}

/// Counters exposed for monitoring and for tests that prove batching.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appends: AtomicU64,
    pub acks: AtomicU64,
    pub skipped: AtomicU64,
    pub sync_rounds: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub segments_deleted: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SyncStats {
        SyncStats {
            appends: self.appends.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            records_skipped: self.skipped.load(Ordering::Relaxed),
            sync_rounds: self.sync_rounds.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            segments_deleted: self.segments_deleted.load(Ordering::Relaxed),
        }
    }
}

/// Snapshot of the store's counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Messages appended.
    pub appends: u64,
    /// Acks recorded.
    pub acks: u64,
    /// Messages acked while their record still waited in the write buffer,
    /// so it was never written (only a 20-byte head per run of them).
    pub records_skipped: u64,
    /// Write rounds of the sync thread that wrote new message records.
    pub sync_rounds: u64,
    /// fsync/fdatasync calls (files and directory).
    pub fsyncs: u64,
    /// Bytes written to segment and ack files.
    pub bytes_written: u64,
    /// Failed write rounds (each retried).
    pub write_errors: u64,
    /// Segment files deleted because every message in them was acked.
    pub segments_deleted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_policies() {
        assert_eq!("always".parse::<SyncPolicy>(), Ok(SyncPolicy::Always));
        assert_eq!(" NEVER ".parse::<SyncPolicy>(), Ok(SyncPolicy::Never));
        assert_eq!(
            "interval=20".parse::<SyncPolicy>(),
            Ok(SyncPolicy::Interval(Duration::from_millis(20)))
        );
        assert_eq!(
            "interval=abc".parse::<SyncPolicy>(),
            Err(ParsePolicyError::BadInterval("abc".into()))
        );
        assert_eq!(
            "interval=".parse::<SyncPolicy>(),
            Err(ParsePolicyError::BadInterval("".into()))
        );
        assert!(matches!(
            "interval=0".parse::<SyncPolicy>(),
            Err(ParsePolicyError::IntervalOutOfRange { got: 0, .. })
        ));
        assert!(matches!(
            "interval=60001".parse::<SyncPolicy>(),
            Err(ParsePolicyError::IntervalOutOfRange { got: 60001, .. })
        ));
        assert_eq!(
            "sometimes".parse::<SyncPolicy>(),
            Err(ParsePolicyError::Unknown("sometimes".into()))
        );
        for p in [
            SyncPolicy::Always,
            SyncPolicy::Never,
            SyncPolicy::Interval(Duration::from_millis(250)),
        ] {
            assert_eq!(p.to_string().parse::<SyncPolicy>(), Ok(p));
        }
        let msg = "bogus".parse::<SyncPolicy>().err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("always") && m.contains("interval=<ms>")));
    }

    #[test]
    fn status_and_failed_ranges() {
        let mut s = DurableState {
            confirmed: 10,
            ..Default::default()
        };
        assert_eq!(s.status(SyncTicket(10)), TicketStatus::Durable);
        assert_eq!(s.status(SyncTicket(11)), TicketStatus::Pending);
        s.add_failed(5, 6, "enospc".into());
        s.add_failed(7, 9, "enospc".into());
        assert_eq!(s.failed.len(), 1);
        assert!(matches!(s.status(SyncTicket(8)), TicketStatus::Failed(_)));
        assert_eq!(s.status(SyncTicket(4)), TicketStatus::Durable);
        s.poisoned = Some("eio".into());
        assert!(matches!(s.status(SyncTicket(11)), TicketStatus::Failed(_)));
        assert_eq!(s.status(SyncTicket(3)), TicketStatus::Durable);
    }
}
