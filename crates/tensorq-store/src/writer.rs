//! The sync thread: group commit of the shared write buffer.
//!
//! Owns: the dedicated `std::thread` that takes everything pending, writes
//! it with pwrite(2) at the offsets the appenders assigned, fsyncs according
//! to the [`SyncPolicy`], advances the durability watermark, writes ack
//! entries, deletes garbage segments, and handles write/fsync failures.
//! Does not own: placing records (`log.rs`) or recovery.
//!
//! Group commit: every round takes *all* bytes pending at that moment, so one
//! fsync covers every append that happened while the previous fsync ran.
//!
//! Failures: a failed write(2) (ENOSPC, EIO on write) fails the tickets of
//! that round (publishers get an error, the broker nacks) and the same bytes
//! are retried at the same offsets with backoff, so the file never holds a
//! hole or a half record followed by later data. A failed fsync poisons the
//! store (the kernel may have dropped the dirty pages; retrying fsync could
//! falsely report success).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::chunk::Chunk;
use crate::fsutil::fsync_dir;
use crate::log::{Shared, CHUNK_LIMIT};
use crate::record::ACK_ENTRY_LEN;
use crate::segment::{ack_name, log_name};
use crate::sync::{Counters, SyncPolicy};

/// How long the sync thread keeps spare write buffers while no work comes.
const SPARE_IDLE: Duration = Duration::from_millis(100);
/// First retry delay after a failed write round.
const RETRY_BACKOFF_START: Duration = Duration::from_millis(10);
/// Longest retry delay.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

struct Round {
    chunks: Arc<Vec<Chunk>>,
    acks: BTreeMap<u32, Vec<u8>>,
    deletions: Vec<u32>,
    first_id: u64,
    last_id: u64,
    shutdown: bool,
}

struct Writer {
    shared: Arc<Shared>,
    seg_files: HashMap<u32, Arc<File>>,
    ack_files: HashMap<u32, (File, u64)>,
    dirty_segs: BTreeSet<u32>,
    dirty_acks: BTreeSet<u32>,
    dir_dirty: bool,
    last_sync: Instant,
    backoff: Duration,
    /// Where deferred records are encoded before they are written, and the
    /// pieces of it that go to the file.
    scratch: Vec<u8>,
    pieces: Vec<(u64, usize, usize)>,
}

/// Start the sync thread.
pub(crate) fn spawn(shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("tensorq-store-sync".to_string())
        .spawn(move || {
            let mut w = Writer {
                shared,
                seg_files: HashMap::new(),
                ack_files: HashMap::new(),
                dirty_segs: BTreeSet::new(),
                dirty_acks: BTreeSet::new(),
                dir_dirty: false,
                last_sync: Instant::now(),
                backoff: RETRY_BACKOFF_START,
                scratch: Vec::new(),
                pieces: Vec::new(),
            };
            w.run();
        })
}

fn io_reason(what: &str, e: &io::Error) -> Arc<str> {
    Arc::from(format!("{what}: {e}"))
}

impl Writer {
    fn dirty(&self) -> bool {
        !self.dirty_segs.is_empty() || !self.dirty_acks.is_empty() || self.dir_dirty
    }

    fn run(&mut self) {
        loop {
            let round = self.next_round();
            let shutdown = round.shutdown;
            let idle =
                round.chunks.is_empty() && round.acks.is_empty() && round.deletions.is_empty();
            if !self.process(round) {
                break; // poisoned, or writes failing at shutdown
            }
            if shutdown && idle {
                let st = self.shared.lock();
                let more =
                    !st.pending.is_empty() || !st.acks.is_empty() || !st.to_delete.is_empty();
                drop(st);
                if !more {
                    if let Err(why) = self.sync_all() {
                        self.poison(why);
                    }
                    break;
                }
            }
        }
        self.fail_leftovers();
    }

    /// Wait until something is due (an urgent record, a lazy one or an ack
    /// `lazy_write_delay` old, a filling buffer, the interval timer) and take
    /// it: the due prefix of the pending chunks, with every ack and deletion.
    fn next_round(&mut self) -> Round {
        let shared = self.shared.clone();
        let delay = shared.opts.lazy_write_delay;
        let limit = shared.opts.write_buffer_limit;
        let mut st = shared.lock();
        let take = loop {
            if st.shutdown {
                break st.pending.len();
            }
            let now = Instant::now();
            let k = st.chunks_due(now, delay, limit);
            if k > 0 || st.side_due(now, delay) {
                break k;
            }
            let interval = match shared.opts.sync {
                SyncPolicy::Interval(d) if self.dirty() => Some(self.last_sync + d),
                _ => None,
            };
            if interval.is_some_and(|d| now >= d) {
                break 0;
            }
            match st.next_due(delay).into_iter().chain(interval).min() {
                Some(deadline) => {
                    shared.work_cv.wait_until(&mut st, deadline);
                }
                None if st.spare.is_empty() => shared.work_cv.wait(&mut st),
                None => {
                    // Idle for a while: give the kept buffers back to the allocator.
                    if shared.work_cv.wait_for(&mut st, SPARE_IDLE).timed_out() {
                        st.spare = Vec::new();
                    }
                }
            }
        };
        let rest = st.pending.split_off(take);
        let taken = mem::replace(&mut st.pending, rest);
        for c in &taken {
            st.pending_bytes -= c.mem;
        }
        let chunks = Arc::new(taken);
        st.writing = Some(chunks.clone());
        let acks = mem::take(&mut st.acks);
        let deletions = mem::take(&mut st.to_delete);
        st.side_since = None;
        st.side_urgent = false;
        // Every id below the first one still pending is written by this round (or was acked
        // and dropped with its segment).
        let last_id = match st.pending.iter().map(|c| c.first_id).find(|&f| f != 0) {
            Some(first_pending) => first_pending - 1,
            None => st.next_id.saturating_sub(1),
        };
        let shutdown = st.shutdown;
        drop(st);
        shared.space_cv.notify_all();
        let first_id = chunks
            .iter()
            .map(|c| c.first_id)
            .find(|&f| f != 0)
            .unwrap_or(0);
        Round {
            chunks,
            acks,
            deletions,
            first_id,
            last_id,
            shutdown,
        }
    }

    fn seg_file(&mut self, seg: u32, created: &mut Vec<(u32, Arc<File>)>) -> io::Result<Arc<File>> {
        if let Some(f) = self.seg_files.get(&seg) {
            return Ok(f.clone());
        }
        let path = self.shared.dir.join(log_name(seg));
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?,
        );
        self.dir_dirty = true;
        self.seg_files.insert(seg, f.clone());
        created.push((seg, f.clone()));
        Ok(f)
    }

    fn write_chunks(
        &mut self,
        chunks: &[Chunk],
        deleted: &HashSet<u32>,
        created: &mut Vec<(u32, Arc<File>)>,
    ) -> Result<u64, Arc<str>> {
        let mut bytes = 0u64;
        for c in chunks.iter().filter(|c| !deleted.contains(&c.seg)) {
            let f = self
                .seg_file(c.seg, created)
                .map_err(|e| io_reason(&format!("create segment {}", c.seg), &e))?;
            let write_err = |e: io::Error| io_reason(&format!("write segment {}", c.seg), &e);
            if c.is_deferred {
                c.encode_deferred(&mut self.scratch, &mut self.pieces);
                for &(at, start, end) in &self.pieces {
                    f.write_all_at(&self.scratch[start..end], at)
                        .map_err(write_err)?;
                    bytes += (end - start) as u64;
                }
                if self.scratch.capacity() > CHUNK_LIMIT {
                    self.scratch = Vec::new();
                }
                // A chunk ending in a skipped run: the file must still reach the run's end, so
                // that recovery finds the whole run (a hole) and what follows it.
                let end = u64::from(c.offset) + c.span as u64;
                if c.ends_in_hole() && f.metadata().map_err(write_err)?.len() < end {
                    f.set_len(end).map_err(write_err)?;
                }
            } else {
                f.write_all_at(&c.data, u64::from(c.offset))
                    .map_err(write_err)?;
                bytes += c.data.len() as u64;
            }
            self.dirty_segs.insert(c.seg);
        }
        Ok(bytes)
    }

    /// Write ack entries; returns those that could not be written.
    fn write_acks(
        &mut self,
        acks: BTreeMap<u32, Vec<u8>>,
        deleted: &HashSet<u32>,
    ) -> (u64, BTreeMap<u32, Vec<u8>>, Option<Arc<str>>) {
        let mut failed = BTreeMap::new();
        let mut err = None;
        let mut bytes = 0u64;
        for (seg, data) in acks {
            if deleted.contains(&seg) {
                continue;
            }
            if err.is_some() {
                failed.insert(seg, data);
                continue;
            }
            match self.write_ack(seg, &data) {
                Ok(()) => bytes += data.len() as u64,
                Err(e) => {
                    err = Some(io_reason(&format!("write acks of segment {seg}"), &e));
                    failed.insert(seg, data);
                }
            }
        }
        (bytes, failed, err)
    }

    fn write_ack(&mut self, seg: u32, data: &[u8]) -> io::Result<()> {
        if !self.ack_files.contains_key(&seg) {
            let path = self.shared.dir.join(ack_name(seg));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let len = f.metadata()?.len();
            // Recovery truncated any torn entry; stay aligned regardless.
            let aligned = len - len % ACK_ENTRY_LEN as u64;
            self.ack_files.insert(seg, (f, aligned));
            self.dir_dirty = true;
        }
        if let Some((f, len)) = self.ack_files.get_mut(&seg) {
            f.write_all_at(data, *len)?;
            *len += data.len() as u64;
        }
        self.dirty_acks.insert(seg);
        Ok(())
    }

    fn sync_all(&mut self) -> Result<(), Arc<str>> {
        if !self.dirty() {
            return Ok(());
        }
        let counters = &self.shared.counters;
        for seg in mem::take(&mut self.dirty_segs) {
            if let Some(f) = self.seg_files.get(&seg) {
                f.sync_data()
                    .map_err(|e| io_reason(&format!("fsync segment {seg}"), &e))?;
                Counters::add(&counters.fsyncs, 1);
            }
        }
        for seg in mem::take(&mut self.dirty_acks) {
            if let Some((f, _)) = self.ack_files.get(&seg) {
                f.sync_data()
                    .map_err(|e| io_reason(&format!("fsync acks of segment {seg}"), &e))?;
                Counters::add(&counters.fsyncs, 1);
            }
        }
        if self.dir_dirty {
            fsync_dir(&self.shared.dir).map_err(|e| Arc::from(e.to_string()))?;
            Counters::add(&counters.fsyncs, 1);
            self.dir_dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn poison(&self, why: Arc<str>) {
        tracing::error!(reason = %why, "fsync failed: store poisoned, no further writes accepted");
        {
            let mut st = self.shared.lock();
            st.poisoned = Some(why.clone());
        }
        self.shared.space_cv.notify_all();
        self.shared.publish(|d| d.poisoned = Some(why));
    }

    /// On exit, any appended-but-unwritten message must not leave a waiter
    /// hanging.
    fn fail_leftovers(&self) {
        let st = self.shared.lock();
        let last = st.next_id.saturating_sub(1);
        drop(st);
        let confirmed = self.shared.durable_tx.borrow().confirmed;
        if confirmed < last && self.shared.durable_tx.borrow().poisoned.is_none() {
            self.shared.publish(|d| {
                d.poisoned = Some(Arc::from("store closed before the write completed"))
            });
        }
    }

    /// Execute one round. Returns false if the thread must stop: the store
    /// is poisoned, or writes fail while shutting down.
    fn process(&mut self, round: Round) -> bool {
        let shared = self.shared.clone();
        let deleted: HashSet<u32> = round.deletions.iter().copied().collect();
        let mut created = Vec::new();
        let has_records = round.first_id != 0;
        let chunk_result = self.write_chunks(&round.chunks, &deleted, &mut created);
        let (ack_bytes, failed_acks, ack_err) = match chunk_result {
            Ok(_) => self.write_acks(round.acks, &deleted),
            // Chunks failed: do not write acks this round, keep them all.
            Err(_) => (0, round.acks, None),
        };
        // Hand results back under the lock.
        {
            let mut st = shared.lock();
            for (seg, f) in created {
                if let Some(m) = st.segments.get_mut(&seg) {
                    m.file = Some(f);
                }
            }
            st.writing = None;
            if chunk_result.is_err() {
                // Deletions are not processed this round; keep them.
                st.to_delete.extend(round.deletions.iter().copied());
                let mut back = Arc::try_unwrap(round.chunks).unwrap_or_else(|a| (*a).clone());
                back.retain(|c| st.segments.contains_key(&c.seg));
                let back_bytes: usize = back.iter().map(|c| c.mem).sum();
                back.append(&mut st.pending);
                st.pending = back;
                st.pending_bytes += back_bytes;
            } else if let Ok(written) = Arc::try_unwrap(round.chunks) {
                // Readers copy out under the lock, so nothing else holds the round now.
                for c in written {
                    st.recycle(c.data);
                }
            }
            for (seg, mut data) in failed_acks {
                if st.segments.contains_key(&seg) {
                    let entry = st.acks.entry(seg).or_default();
                    data.extend_from_slice(entry);
                    *entry = data;
                }
            }
            st.write_error = match (&chunk_result, &ack_err) {
                (Err(e), _) => Some(e.clone()),
                (_, Some(e)) => Some(e.clone()),
                _ => None,
            };
        }
        let counters = &shared.counters;
        match &chunk_result {
            Ok(b) => Counters::add(&counters.bytes_written, b + ack_bytes),
            Err(why) => {
                Counters::add(&counters.write_errors, 1);
                tracing::error!(reason = %why, first = round.first_id, last = round.last_id,
                    "segment write failed; failing these confirms and retrying");
                if has_records {
                    let why = why.clone();
                    shared.publish(|d| d.add_failed(round.first_id, round.last_id, why));
                }
                if round.shutdown {
                    // Closing: do not retry forever; unwritten messages stay
                    // unconfirmed (their waiters already got the error).
                    tracing::error!("giving up on unwritten data at shutdown");
                    return false;
                }
                thread::sleep(self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_BACKOFF_MAX);
                return true;
            }
        }
        if let Some(why) = &ack_err {
            Counters::add(&counters.write_errors, 1);
            tracing::error!(reason = %why, "ack write failed; retrying");
        }
        self.backoff = RETRY_BACKOFF_START;
        // Durability.
        let must_sync = match shared.opts.sync {
            SyncPolicy::Always => true,
            SyncPolicy::Interval(d) => round.shutdown || self.last_sync.elapsed() >= d,
            SyncPolicy::Never => round.shutdown,
        };
        if must_sync {
            if let Err(why) = self.sync_all() {
                self.poison(why);
                return false;
            }
        }
        if has_records {
            Counters::add(&counters.sync_rounds, 1);
        }
        let last = round.last_id;
        if shared.durable_tx.borrow().confirmed < last {
            shared.publish(|d| d.confirmed = d.confirmed.max(last));
        }
        // Garbage segments.
        if !round.deletions.is_empty() {
            for seg in &round.deletions {
                self.delete_files(*seg);
            }
        }
        if ack_err.is_some() {
            thread::sleep(self.backoff);
        }
        true
    }

    fn delete_files(&mut self, seg: u32) {
        self.seg_files.remove(&seg);
        self.ack_files.remove(&seg);
        self.dirty_segs.remove(&seg);
        self.dirty_acks.remove(&seg);
        let mut removed = false;
        for name in [log_name(seg), ack_name(seg)] {
            let p = self.shared.dir.join(&name);
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "could not delete acked segment")
                }
            }
        }
        if removed {
            Counters::add(&self.shared.counters.segments_deleted, 1);
            tracing::debug!(segment = seg, "deleted fully acked segment");
        }
    }
}
