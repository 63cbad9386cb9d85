//! Recovery on open: rebuild the live message set from the segment files.
//!
//! Owns: scanning every segment in order, verifying header and record CRCs,
//! truncating a torn or corrupt tail at the last good record, applying the
//! per-segment ack files, dropping references of deleted queues, deleting
//! segments with nothing live, and the redelivered rule. Does not own: the
//! queue registry file (`queues.rs`), locking, or the running store.
//!
//! Record payloads are never kept: each is read into one reusable scratch
//! buffer only to check its CRC. The result holds one [`MsgRef`] per live
//! (queue, message) pair, which the broker keeps as its queue index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};
use crate::fsutil::{fsync_dir, TMP_SUFFIX};
use crate::handle::{MsgRef, QueueId};
use crate::queues::QueueRegistry;
use crate::record::{
    decode_ack, decode_segment_header, parse_body, parse_prefix, parse_skip, CleanMarker,
    RecordError, ACK_ENTRY_LEN, RECORD_FIXED_BODY_LEN, RECORD_PREFIX_LEN, SEGMENT_HEADER_LEN,
};
use crate::segment::{ack_name, log_name, parse_name, SegFile, SegMeta, CORRUPT_EXT};

/// Read buffer used while scanning a segment.
const SCAN_BUFFER_LEN: usize = 4 * 1024 * 1024;

/// Which recovered messages must be delivered with `redelivered = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivered {
    /// Unclean shutdown: any message may have been delivered before the
    /// crash, so every recovered message is flagged.
    All,
    /// Clean shutdown: exactly the messages the broker reported as
    /// delivered-but-unacked in [`crate::Store::close`] (sorted ids).
    Ids(Vec<u64>),
}

impl Redelivered {
    /// Whether the message must be delivered with `redelivered = true`.
    pub fn contains(&self, r: &MsgRef) -> bool {
        match self {
            Redelivered::All => true,
            Redelivered::Ids(ids) => ids.binary_search(&r.id).is_ok(),
        }
    }
}

/// One durable queue as found on open.
#[derive(Debug, Clone)]
pub struct RecoveredQueue {
    /// The queue's id (use it for appends/acks).
    pub id: QueueId,
    /// Virtual host it was registered under.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Unacked messages in publish order.
    pub messages: Vec<MsgRef>,
    /// The redelivered flag for those messages.
    pub redelivered: Redelivered,
}

/// What recovery found and did; also logged at `info`/`warn`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A valid clean-shutdown marker was present.
    pub clean_shutdown: bool,
    /// Segment files scanned.
    pub segments_scanned: u32,
    /// Valid records read.
    pub records: u64,
    /// Live (queue, message) references recovered.
    pub live_refs: u64,
    /// References skipped because they were acked.
    pub acked_refs: u64,
    /// Runs of messages that were acked before they were written (only a
    /// head was written for each run).
    pub skipped_runs: u64,
    /// References skipped because their queue was deleted.
    pub dropped_refs: u64,
    /// Segments truncated at a torn or corrupt record.
    pub truncated_segments: u32,
    /// Bytes cut off by those truncations.
    pub truncated_bytes: u64,
    /// Torn or corrupt ack entries cut off.
    pub truncated_ack_entries: u64,
    /// Segments set aside as `.corrupt` (unreadable header).
    pub corrupt_segments: u32,
    /// Segments deleted because nothing in them was live.
    pub segments_deleted: u32,
    /// Wall time of the scan.
    pub elapsed: Duration,
}

/// Internal result of a recovery scan.
pub(crate) struct Scan {
    pub segments: BTreeMap<u32, SegMeta>,
    pub queues: HashMap<u32, Vec<MsgRef>>,
    pub next_id: u64,
    pub next_segment: u32,
    pub report: RecoveryReport,
}

fn io_err(path: &Path, e: io::Error) -> StoreError {
    StoreError::io(path, e)
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Read a segment's ack file into a set of `(queue << 32) | offset` keys,
/// truncating a torn or corrupt tail.
fn load_acks(dir: &Path, seg: u32, report: &mut RecoveryReport) -> Result<HashSet<u64>> {
    let path = dir.join(ack_name(seg));
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(io_err(&path, e)),
    };
    let mut set = HashSet::with_capacity(bytes.len() / ACK_ENTRY_LEN);
    let mut good = 0usize;
    for e in bytes.chunks(ACK_ENTRY_LEN) {
        match decode_ack(e) {
            Some((q, off)) => {
                set.insert((u64::from(q) << 32) | u64::from(off));
                good += e.len();
            }
            None => break,
        }
    }
    if good < bytes.len() {
        let cut = (bytes.len() - good).div_ceil(ACK_ENTRY_LEN) as u64;
        report.truncated_ack_entries += cut;
        tracing::warn!(file = %path.display(), kept = good / ACK_ENTRY_LEN, cut,
            "ack file has a torn or corrupt tail; truncating");
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        f.set_len(good as u64).map_err(|e| io_err(&path, e))?;
        f.sync_all().map_err(|e| io_err(&path, e))?;
    }
    Ok(set)
}

enum Stop {
    End,
    Torn(&'static str),
    Bad(RecordError),
}

struct SegScan {
    meta: SegMeta,
    max_id: u64,
    first_id: u64,
}

fn scan_segment(
    dir: &Path,
    seg: u32,
    registry: &QueueRegistry,
    queues: &mut HashMap<u32, Vec<MsgRef>>,
    report: &mut RecoveryReport,
    scratch: &mut Vec<u8>,
) -> Result<Option<SegScan>> {
    let path = dir.join(log_name(seg));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
    report.segments_scanned += 1;
    if len < SEGMENT_HEADER_LEN as u64 {
        // Crash while the file was being created: nothing in it was ever
        // confirmed.
        tracing::warn!(file = %path.display(), len, "segment shorter than its header; removing");
        remove_if_exists(&path)?;
        remove_if_exists(&dir.join(ack_name(seg)))?;
        report.segments_deleted += 1;
        return Ok(None);
    }
    let mut hdr = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut hdr, 0)
        .map_err(|e| io_err(&path, e))?;
    let header = match decode_segment_header(&hdr) {
        Ok(h) if h.segment == seg => h,
        Ok(h) => {
            set_aside(
                dir,
                seg,
                &format!("header names segment {}", h.segment),
                report,
            )?;
            return Ok(None);
        }
        Err(why) => {
            set_aside(dir, seg, why, report)?;
            return Ok(None);
        }
    };
    let acked = load_acks(dir, seg, report)?;
    let mut meta = SegMeta::default();
    let mut rdr = BufReader::with_capacity(SCAN_BUFFER_LEN, &file);
    rdr.seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64))
        .map_err(|e| io_err(&path, e))?;
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut last_id = 0u64;
    let mut prefix = [0u8; RECORD_PREFIX_LEN];
    let stop = loop {
        if pos == len {
            break Stop::End;
        }
        if len - pos < RECORD_PREFIX_LEN as u64 {
            break Stop::Torn("partial record prefix");
        }
        if let Err(e) = rdr.read_exact(&mut prefix) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                break Stop::Torn("file shrank while scanning");
            }
            return Err(io_err(&path, e));
        }
        let (body_len, crc) = match parse_prefix(&prefix) {
            Ok(v) => v,
            Err(e) => break Stop::Bad(e),
        };
        if body_len as u64 > len - pos - RECORD_PREFIX_LEN as u64 {
            break Stop::Torn("record extends past end of file");
        }
        scratch.resize(body_len, 0);
        let (fixed, rest) = scratch.split_at_mut(RECORD_FIXED_BODY_LEN);
        if let Err(e) = rdr.read_exact(fixed) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                break Stop::Torn("file shrank while scanning");
            }
            return Err(io_err(&path, e));
        }
        if let Some(id) = parse_skip(fixed, crc) {
            // A run of messages acked before they were written: nothing to recover, and
            // the rest of the run is a hole.
            if id <= last_id || id < header.first_id {
                break Stop::Torn("message id out of order");
            }
            last_id = id;
            let hole = (body_len - RECORD_FIXED_BODY_LEN) as i64;
            rdr.seek_relative(hole).map_err(|e| io_err(&path, e))?;
            report.skipped_runs += 1;
            pos += (RECORD_PREFIX_LEN + body_len) as u64;
            continue;
        }
        if let Err(e) = rdr.read_exact(rest) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                break Stop::Torn("file shrank while scanning");
            }
            return Err(io_err(&path, e));
        }
        let view = match parse_body(scratch, crc) {
            Ok(v) => v,
            Err(e) => break Stop::Bad(e),
        };
        if view.id <= last_id || view.id < header.first_id {
            break Stop::Torn("message id out of order");
        }
        last_id = view.id;
        report.records += 1;
        let offset = pos as u32;
        let total = (RECORD_PREFIX_LEN + body_len) as u32;
        for q in view.queues() {
            if !registry.contains(q) {
                report.dropped_refs += 1;
                continue;
            }
            if acked.contains(&((u64::from(q) << 32) | u64::from(offset))) {
                report.acked_refs += 1;
                continue;
            }
            queues.entry(q).or_default().push(MsgRef {
                id: view.id,
                segment: seg,
                offset,
                len: total,
            });
            meta.add_ref(q);
            report.live_refs += 1;
        }
        pos += u64::from(total);
    };
    drop(rdr);
    if let Stop::Torn(_) | Stop::Bad(_) = stop {
        let why = match &stop {
            Stop::Torn(w) => (*w).to_string(),
            Stop::Bad(e) => format!("{e:?}"),
            Stop::End => String::new(),
        };
        let cut = len - pos;
        tracing::warn!(file = %path.display(), at = pos, cut_bytes = cut, reason = %why,
            "segment has a torn or corrupt record; truncating after the last good record");
        file.set_len(pos).map_err(|e| io_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        report.truncated_segments += 1;
        report.truncated_bytes += cut;
    }
    meta.sealed = true;
    meta.file = Some(Arc::new(file));
    Ok(Some(SegScan {
        meta,
        max_id: last_id,
        first_id: header.first_id,
    }))
}

fn set_aside(dir: &Path, seg: u32, why: &str, report: &mut RecoveryReport) -> Result<()> {
    let from = dir.join(log_name(seg));
    let to = dir.join(format!("{}.{CORRUPT_EXT}", log_name(seg)));
    tracing::error!(file = %from.display(), reason = why,
        "segment header unreadable; moving it aside, its messages are not recovered");
    fs::rename(&from, &to).map_err(|e| io_err(&from, e))?;
    remove_if_exists(&dir.join(ack_name(seg)))?;
    report.corrupt_segments += 1;
    Ok(())
}

/// Scan the data directory. `clean` is the clean-shutdown marker, if valid.
pub(crate) fn recover(
    dir: &Path,
    registry: &QueueRegistry,
    clean: Option<&CleanMarker>,
) -> Result<Scan> {
    let started = Instant::now();
    let mut report = RecoveryReport {
        clean_shutdown: clean.is_some(),
        ..Default::default()
    };
    let mut logs = Vec::new();
    let mut acks = Vec::new();
    let mut max_seen = 0u32;
    let mut dir_changed = false;
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            dir_changed |= remove_if_exists(&entry.path())?;
            continue;
        }
        match parse_name(name) {
            Some(SegFile::Log(n)) => logs.push(n),
            Some(SegFile::Ack(n)) => acks.push(n),
            None => {}
        }
        if let Some(SegFile::Log(n) | SegFile::Ack(n)) = parse_name(name) {
            max_seen = max_seen.max(n);
        }
        if let Some(n) = name
            .strip_suffix(&format!(".{CORRUPT_EXT}"))
            .and_then(parse_name)
            .map(|f| match f {
                SegFile::Log(n) | SegFile::Ack(n) => n,
            })
        {
            max_seen = max_seen.max(n);
        }
    }
    logs.sort_unstable();
    let log_set: HashSet<u32> = logs.iter().copied().collect();
    for a in acks.iter().filter(|a| !log_set.contains(a)) {
        dir_changed |= remove_if_exists(&dir.join(ack_name(*a)))?;
    }
    let mut segments = BTreeMap::new();
    let mut queues: HashMap<u32, Vec<MsgRef>> = HashMap::new();
    let mut scratch = Vec::new();
    let mut next_id = clean.map_or(1, |c| c.next_id).max(1);
    for seg in logs {
        let before = (
            report.segments_deleted,
            report.corrupt_segments,
            report.truncated_segments,
        );
        let scanned = scan_segment(dir, seg, registry, &mut queues, &mut report, &mut scratch)?;
        if before
            != (
                report.segments_deleted,
                report.corrupt_segments,
                report.truncated_segments,
            )
        {
            dir_changed = true;
        }
        let Some(s) = scanned else { continue };
        next_id = next_id.max(s.first_id).max(s.max_id.saturating_add(1));
        if s.meta.live == 0 {
            remove_if_exists(&dir.join(log_name(seg)))?;
            remove_if_exists(&dir.join(ack_name(seg)))?;
            report.segments_deleted += 1;
            dir_changed = true;
        } else {
            segments.insert(seg, s.meta);
        }
    }
    if dir_changed {
        fsync_dir(dir)?;
    }
    for v in queues.values_mut() {
        v.shrink_to_fit();
    }
    report.elapsed = started.elapsed();
    Ok(Scan {
        segments,
        queues,
        next_id,
        next_segment: max_seen.saturating_add(1).max(1),
        report,
    })
}

/// Turn a scan into the per-queue view the broker consumes.
pub(crate) fn into_queues(
    registry: &QueueRegistry,
    mut found: HashMap<u32, Vec<MsgRef>>,
    clean: Option<&CleanMarker>,
) -> Vec<RecoveredQueue> {
    let mut delivered: HashMap<u32, Vec<u64>> = HashMap::new();
    if let Some(c) = clean {
        for (q, id) in &c.delivered {
            delivered.entry(*q).or_default().push(*id);
        }
    }
    let mut ids: Vec<u32> = registry.ids().collect();
    ids.sort_unstable();
    ids.into_iter()
        .filter_map(|id| {
            let (vhost, name) = registry.name_of(id)?.clone();
            let redelivered = match clean {
                None => Redelivered::All,
                Some(_) => {
                    let mut v = delivered.remove(&id).unwrap_or_default();
                    v.sort_unstable();
                    v.dedup();
                    Redelivered::Ids(v)
                }
            };
            Some(RecoveredQueue {
                id: QueueId(id),
                vhost,
                name,
                messages: found.remove(&id).unwrap_or_default(),
                redelivered,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dir_recovers_nothing() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let reg = QueueRegistry::load(d.path())?;
        let s = recover(d.path(), &reg, None)?;
        assert!(s.segments.is_empty());
        assert_eq!(s.next_id, 1);
        assert_eq!(s.next_segment, 1);
        Ok(())
    }

    #[test]
    fn short_segment_and_orphan_ack_and_tmp_are_removed() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let p = d.path();
        fs::write(p.join(log_name(3)), [1u8; 10]).map_err(|e| StoreError::io("w", e))?;
        fs::write(p.join(ack_name(9)), [0u8; 12]).map_err(|e| StoreError::io("w", e))?;
        fs::write(p.join("queues.json.tmp"), b"x").map_err(|e| StoreError::io("w", e))?;
        let reg = QueueRegistry::load(p)?;
        let s = recover(p, &reg, None)?;
        assert_eq!(s.report.segments_deleted, 1);
        assert!(!p.join(log_name(3)).exists());
        assert!(!p.join(ack_name(9)).exists());
        assert!(!p.join("queues.json.tmp").exists());
        assert_eq!(s.next_segment, 10);
        Ok(())
    }

    #[test]
    fn bad_header_is_set_aside() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let p = d.path();
        fs::write(p.join(log_name(2)), [7u8; 100]).map_err(|e| StoreError::io("w", e))?;
        let reg = QueueRegistry::load(p)?;
        let s = recover(p, &reg, None)?;
        assert_eq!(s.report.corrupt_segments, 1);
        assert!(p.join(format!("{}.corrupt", log_name(2))).exists());
        assert_eq!(s.next_segment, 3);
        Ok(())
    }

    #[test]
    fn redelivered_rule() {
        let r = MsgRef {
            id: 5,
            segment: 1,
            offset: 32,
            len: 40,
        };
        assert!(Redelivered::All.contains(&r));
        assert!(Redelivered::Ids(vec![1, 5, 9]).contains(&r));
        assert!(!Redelivered::Ids(vec![1, 9]).contains(&r));
    }
}
