//! The in-memory side of the segment log: the shared write buffer, record
//! placement, reads, acks and segment reference counting.
//!
//! Owns: [`Shared`] / [`State`] (the short mutex every append takes), the
//! append path (assign id + offset, encode into the pending buffer), the read
//! path (pending buffer, in-flight buffer, or pread), ack accounting and the
//! decision that a segment is garbage. Does not own: any write(2)/fsync (the
//! sync thread in `writer.rs`), scanning files (`recovery.rs`) or the public
//! facade (`store.rs`).

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::watch;

use crate::chunk::{Chunk, Deferred, Found};
use crate::error::{Result, StoreError};
use crate::handle::{MsgRef, QueueId, SyncTicket};
use crate::options::StoreOptions;
use crate::queues::QueueRegistry;
use crate::record::{
    decode_record, encode_ack, encode_record_parts, encode_segment_header, matches_ref, record_len,
    MAX_PAYLOAD_LEN, MAX_QUEUES_PER_MESSAGE, SEGMENT_HEADER_LEN,
};
use crate::segment::{log_name, SegMeta};
use crate::sync::{Counters, DurableState};

/// When the active segment becomes fully acked and is larger than this, it
/// is sealed and deleted right away so a drained store uses ~no disk.
pub const ROLL_ON_DRAIN_BYTES: u32 = 1024 * 1024;
/// Above this many queues, duplicate detection uses a hash set.
const SMALL_QUEUE_LIST: usize = 16;

/// Room a new chunk starts with when no spare buffer is at hand: a round usually holds many
/// records, and starting small would mean several grow-and-copy steps per round.
const FIRST_CHUNK_CAPACITY: usize = 64 * 1024;
/// A chunk takes no more records once it holds this many bytes: the next record starts a new
/// chunk (one more write call in the round). Chunk buffers then stop growing after their first
/// use, so recycled ones (`State::spare`) are never reallocated into fresh pages.
pub(crate) const CHUNK_LIMIT: usize = 1024 * 1024;
/// How many written chunk buffers are kept for the appenders to reuse (`State::spare`): enough
/// for the chunks of a busy round (1 GB/s of records over a few milliseconds).
const SPARE_BUFFERS: usize = 4;

/// Everything guarded by the store mutex.
#[derive(Debug)]
pub(crate) struct State {
    /// No new appends/acks accepted.
    pub closed: bool,
    /// The sync thread should flush everything and exit.
    pub shutdown: bool,
    /// Next message id (ids start at 1).
    pub next_id: u64,
    pub active_seg: u32,
    /// Next write offset in the active segment.
    pub active_len: u32,
    /// Bytes appended, not yet taken by the sync thread.
    pub pending: Vec<Chunk>,
    pub pending_bytes: usize,
    /// Bytes taken by the sync thread and not yet written (still readable).
    pub writing: Option<Arc<Vec<Chunk>>>,
    /// Buffers of written chunks, kept for the next rounds' appends so a steady stream of
    /// persistent messages does not allocate, grow and fault in a fresh buffer every round
    /// (the sync thread drops them once it has been idle for a while).
    pub spare: Vec<Vec<u8>>,
    /// Encoded ack entries per segment, not yet written.
    pub acks: BTreeMap<u32, Vec<u8>>,
    /// Since when acks or deletions have been waiting (they are written
    /// with the next round, at the latest `lazy_write_delay` later).
    pub side_since: Option<Instant>,
    /// A deletion dropped an urgent chunk: run a round now so its confirm
    /// is not held back.
    pub side_urgent: bool,
    /// Live segments.
    pub segments: BTreeMap<u32, SegMeta>,
    /// Segments whose files the sync thread must delete.
    pub to_delete: Vec<u32>,
    pub queues: QueueRegistry,
    /// Set after a failed fsync.
    pub poisoned: Option<Arc<str>>,
    /// Set while the sync thread's writes fail (cleared on success).
    pub write_error: Option<Arc<str>>,
}

/// State shared by the facade and the sync thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: StoreOptions,
    pub state: Mutex<State>,
    /// Wakes the sync thread.
    pub work_cv: Condvar,
    /// Wakes appenders blocked on a full write buffer.
    pub space_cv: Condvar,
    pub durable_tx: watch::Sender<DurableState>,
    /// Paired with `durable_cv` for blocking waiters.
    pub durable_lock: Mutex<()>,
    pub durable_cv: Condvar,
    pub counters: Counters,
    /// Serialises writes of the queue registry file.
    pub registry_lock: Mutex<()>,
    /// Serialises writes of the definitions file.
    pub definitions_lock: Mutex<()>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Update the durability watermark and wake every kind of waiter.
    pub(crate) fn publish(&self, f: impl FnOnce(&mut DurableState)) {
        let _g = self.durable_lock.lock();
        self.durable_tx.send_modify(f);
        self.durable_cv.notify_all();
    }

    fn roll_threshold(&self) -> u32 {
        ROLL_ON_DRAIN_BYTES.min(self.opts.segment_size / 4)
    }
}

impl State {
    /// Seal the active segment and start the next one.
    pub(crate) fn roll(&mut self) {
        let old = self.active_seg;
        let new = old.wrapping_add(1).max(1);
        let mut delete_old = false;
        if let Some(m) = self.segments.get_mut(&old) {
            m.sealed = true;
            delete_old = m.live == 0;
        }
        if delete_old {
            self.delete_segment(old);
        }
        self.segments.insert(new, SegMeta::default());
        let hdr = encode_segment_header(new, self.next_id);
        self.pending.push(Chunk::new(new, 0, hdr.to_vec(), false));
        self.pending_bytes += SEGMENT_HEADER_LEN;
        self.active_seg = new;
        self.active_len = SEGMENT_HEADER_LEN as u32;
    }

    fn delete_segment(&mut self, seg: u32) {
        self.segments.remove(&seg);
        self.acks.remove(&seg);
        self.to_delete.push(seg);
        self.side_since.get_or_insert_with(Instant::now);
        // Its unwritten chunks hold only acked records: never write them.
        let dropped: Vec<Chunk> = self.pending.extract_if(.., |c| c.seg == seg).collect();
        for c in dropped {
            self.pending_bytes -= c.mem;
            self.side_urgent |= c.urgent;
            self.recycle(c.data);
        }
    }

    /// Keep a chunk buffer for the next appends, if there is room for it.
    pub(crate) fn recycle(&mut self, data: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && data.capacity() > 0 && data.capacity() <= CHUNK_LIMIT
        {
            self.spare.push(data);
        }
    }

    /// How many leading pending chunks the sync thread should write now:
    /// everything up to the last urgent chunk, lazy chunks `delay` old, and
    /// the oldest lazy chunks while they fill more than half of `limit`
    /// (until a quarter is left).
    pub(crate) fn chunks_due(&self, now: Instant, delay: Duration, limit: usize) -> usize {
        let n = self.pending.len();
        let mut k = self
            .pending
            .iter()
            .rposition(|c| c.urgent)
            .map_or(0, |i| i + 1);
        while k < n && self.pending[k].opened + delay <= now {
            k += 1;
        }
        if self.pending_bytes >= limit / 2 {
            let mut rest: usize = self.pending[k..].iter().map(|c| c.mem).sum();
            while k < n && rest > limit / 4 {
                rest -= self.pending[k].mem;
                k += 1;
            }
        }
        k
    }

    /// True when waiting acks or deletions should be written now.
    pub(crate) fn side_due(&self, now: Instant, delay: Duration) -> bool {
        self.side_urgent || self.side_since.is_some_and(|t| t + delay <= now)
    }

    /// When the next lazy chunk, ack or deletion falls due.
    pub(crate) fn next_due(&self, delay: Duration) -> Option<Instant> {
        let chunk = self.pending.first().map(|c| c.opened + delay);
        let side = self.side_since.map(|t| t + delay);
        chunk.into_iter().chain(side).min()
    }

    /// Called after references in `seg` were dropped.
    fn after_release(&mut self, seg: u32, roll_threshold: u32) {
        let Some(m) = self.segments.get(&seg) else {
            return;
        };
        if m.live != 0 {
            return;
        }
        if m.sealed {
            self.delete_segment(seg);
        } else if seg == self.active_seg && self.active_len > roll_threshold {
            self.roll();
        }
    }
}

fn check_queue_list(queues: &[QueueId]) -> Result<()> {
    let n = queues.len();
    if n == 0 || n > MAX_QUEUES_PER_MESSAGE {
        return Err(StoreError::BadQueueList {
            got: n,
            max: MAX_QUEUES_PER_MESSAGE,
        });
    }
    let dup = if n <= SMALL_QUEUE_LIST {
        queues
            .iter()
            .enumerate()
            .any(|(i, q)| queues[..i].contains(q))
    } else {
        let mut seen = HashSet::with_capacity(n);
        !queues.iter().all(|q| seen.insert(*q))
    };
    if dup {
        return Err(StoreError::BadQueueList {
            got: n,
            max: MAX_QUEUES_PER_MESSAGE,
        });
    }
    Ok(())
}

/// Append one message routed to `queues`. A `lazy` record (nobody waits for
/// its ticket) may stay in memory for up to `lazy_write_delay`, and is never
/// written if its queue acks it before that.
pub(crate) fn append(
    shared: &Shared,
    queues: &[QueueId],
    head: &[u8],
    body: Bytes,
    lazy: bool,
) -> Result<(MsgRef, SyncTicket)> {
    let urgent = !lazy || shared.opts.lazy_write_delay.is_zero();
    let payload_len = head.len() + body.len();
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(StoreError::PayloadTooLarge {
            len: payload_len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    check_queue_list(queues)?;
    // A lazy single-queue record is kept unencoded until it is written (if ever).
    let defer = !urgent && queues.len() == 1;
    let rec_len = record_len(queues.len(), payload_len);
    let mut st = shared.lock();
    loop {
        if st.closed {
            return Err(StoreError::Closed);
        }
        if let Some(p) = &st.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        if st.pending_bytes < shared.opts.write_buffer_limit {
            break;
        }
        if let Some(e) = &st.write_error {
            return Err(StoreError::WriteStalled(e.clone()));
        }
        shared.work_cv.notify_one();
        shared.space_cv.wait(&mut st);
    }
    if let Some(q) = queues.iter().find(|q| !st.queues.contains(q.0)) {
        return Err(StoreError::UnknownQueue(q.0));
    }
    let seg_size = shared.opts.segment_size as usize;
    if st.active_len as usize > SEGMENT_HEADER_LEN && st.active_len as usize + rec_len > seg_size {
        st.roll();
    }
    let id = st.next_id;
    st.next_id += 1;
    let seg = st.active_seg;
    let offset = st.active_len;
    let was_empty = st.pending.is_empty();
    let contiguous = st.pending.last().is_some_and(|c| {
        c.seg == seg
            && c.is_deferred == defer
            && c.offset as usize + c.span == offset as usize
            && c.span + rec_len <= CHUNK_LIMIT
    });
    if !contiguous {
        let chunk = if defer {
            Chunk::new_deferred(seg, offset)
        } else {
            let mut data = st.spare.pop().unwrap_or_default();
            data.clear();
            data.reserve(rec_len.max(FIRST_CHUNK_CAPACITY));
            Chunk::new(seg, offset, data, urgent)
        };
        st.pending.push(chunk);
    }
    if let Some(c) = st.pending.last_mut() {
        if defer {
            c.deferred.push(Deferred {
                rel: c.span as u32,
                len: rec_len as u32,
                id,
                queue: queues[0].0,
                head: (c.heads.len() as u32, head.len() as u32),
                body,
                skipped: false,
            });
            c.heads.extend_from_slice(head);
        } else {
            encode_record_parts(&mut c.data, id, queues, &[head, &body[..]]);
        }
        c.span += rec_len;
        c.mem += rec_len;
        if c.first_id == 0 {
            c.first_id = id;
        }
        c.last_id = id;
        c.urgent |= urgent;
    }
    st.active_len += rec_len as u32;
    st.pending_bytes += rec_len;
    let meta = st.segments.entry(seg).or_default();
    for q in queues {
        meta.add_ref(q.0);
    }
    // A lazy append wakes the sync thread only when it has to plan a new deadline or the
    // buffer is filling up; otherwise it is already waiting for an earlier one.
    let wake = urgent || was_empty || st.pending_bytes >= shared.opts.write_buffer_limit / 2;
    drop(st);
    Counters::add(&shared.counters.appends, 1);
    if wake {
        shared.work_cv.notify_one();
    }
    Ok((
        MsgRef {
            id,
            segment: seg,
            offset,
            len: rec_len as u32,
        },
        SyncTicket(id),
    ))
}

fn bad_ref(r: &MsgRef) -> StoreError {
    StoreError::BadRef(r.to_string())
}

fn to_payload(shared: &Shared, buf: Vec<u8>, r: &MsgRef) -> Result<Bytes> {
    let (start, end) = {
        let v = decode_record(&buf).map_err(|e| StoreError::Corrupt {
            path: shared.dir.join(log_name(r.segment)),
            what: "message record",
            detail: format!("{e:?} reading {r}"),
        })?;
        if !matches_ref(&v, r) {
            return Err(bad_ref(r));
        }
        (v.payload_offset, v.payload_offset + v.payload.len())
    };
    Ok(Bytes::from(buf).slice(start..end))
}

/// Read a message payload back (from memory if not yet written).
pub(crate) fn read(shared: &Shared, r: &MsgRef) -> Result<Bytes> {
    if r.len as usize > record_len(MAX_QUEUES_PER_MESSAGE, MAX_PAYLOAD_LEN) {
        return Err(bad_ref(r));
    }
    let file = {
        let st = shared.lock();
        let in_mem = st.pending.iter().find_map(|c| c.find(r)).or_else(|| {
            st.writing
                .as_ref()
                .and_then(|w| w.iter().find_map(|c| c.find(r)))
        });
        match in_mem {
            Some(Found::Payload(p)) => return Ok(p),
            Some(Found::Encoded(bytes)) => {
                let buf = bytes.to_vec();
                drop(st);
                return to_payload(shared, buf, r);
            }
            None => {}
        }
        st.segments
            .get(&r.segment)
            .and_then(|m| m.file.clone())
            .ok_or_else(|| bad_ref(r))?
    };
    let mut buf = vec![0u8; r.len as usize];
    file.read_exact_at(&mut buf, u64::from(r.offset))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad_ref(r),
            _ => StoreError::io(shared.dir.join(log_name(r.segment)), e),
        })?;
    to_payload(shared, buf, r)
}

/// Ack `refs` for queue `q`. Unknown or already-acked references are
/// ignored (they belong to a deleted queue or a deleted segment).
pub(crate) fn ack(shared: &Shared, q: QueueId, refs: &[MsgRef]) -> Result<()> {
    let threshold = shared.roll_threshold();
    let mut st = shared.lock();
    if st.closed {
        return Err(StoreError::Closed);
    }
    let mut n = 0u64;
    let mut skipped = 0u64;
    let side_was_idle = st.side_since.is_none();
    let bytes_before = st.pending_bytes;
    for r in refs {
        let Some(meta) = st.segments.get_mut(&r.segment) else {
            continue;
        };
        if !meta.remove_ref(q.0) {
            continue;
        }
        n += 1;
        if let Some(freed) = skip_unwritten(&mut st, q.0, r) {
            st.pending_bytes -= freed;
            skipped += 1;
        } else {
            st.acks
                .entry(r.segment)
                .or_default()
                .extend_from_slice(&encode_ack(q.0, r.offset));
            st.side_since.get_or_insert_with(Instant::now);
        }
        st.after_release(r.segment, threshold);
    }
    let wake = (side_was_idle && st.side_since.is_some()) || st.side_urgent;
    let freed = st.pending_bytes < bytes_before;
    drop(st);
    if n > 0 {
        Counters::add(&shared.counters.acks, n);
        Counters::add(&shared.counters.skipped, skipped);
    }
    if wake {
        shared.work_cv.notify_one();
    }
    if freed {
        shared.space_cv.notify_all();
    }
    Ok(())
}

/// A message acked by its only queue while its record still waits in the
/// write buffer is never written: mark it skipped (no ack entry needed).
/// Returns the bytes of write buffer it freed, or `None` if the record was not skipped.
fn skip_unwritten(st: &mut State, q: u32, r: &MsgRef) -> Option<usize> {
    let first = st.pending.first()?;
    if (r.segment, r.offset) < (first.seg, first.offset) {
        return None; // written already (or being written)
    }
    st.pending.iter_mut().find(|c| c.holds(r))?.skip(q, r)
}

/// Drop every reference held by queue `q` (in memory; the caller persists
/// the registry). Returns false if the queue was unknown.
pub(crate) fn drop_queue_refs(st: &mut State, q: u32, roll_threshold: u32) -> bool {
    if !st.queues.remove(q) {
        return false;
    }
    let segs: Vec<u32> = st
        .segments
        .iter_mut()
        .filter_map(|(n, m)| (m.drop_queue(q) > 0).then_some(*n))
        .collect();
    for s in segs {
        st.after_release(s, roll_threshold);
    }
    true
}

impl Shared {
    pub(crate) fn roll_threshold_for_drop(&self) -> u32 {
        self.roll_threshold()
    }
}
