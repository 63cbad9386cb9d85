//! The public facade: [`Store`].
//!
//! Owns: the open/close lifecycle (lock, recovery, clean-shutdown marker,
//! starting and stopping the sync thread) and the public methods the broker
//! calls. Does not own: byte formats, the write buffer internals, the sync
//! thread's loop or the scan; it wires those modules together.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::chunk::Chunk;
use crate::definitions::{self, Definitions};
use crate::disk::{self, DiskStatus};
use crate::error::{Result, StoreError};
use crate::fsutil::{remove_durably, write_atomic};
use crate::handle::{MsgRef, QueueId, SyncTicket};
use crate::lock::{prepare_dir, DirLock};
use crate::log::{self, Shared, State};
use crate::options::StoreOptions;
use crate::queues::QueueRegistry;
use crate::record::{
    decode_clean_marker, encode_clean_marker, encode_segment_header, CleanMarker,
    SEGMENT_HEADER_LEN,
};
use crate::recovery::{self, RecoveredQueue, RecoveryReport};
use crate::segment::SegMeta;
use crate::sync::{Counters, DurableState, SyncStats, TicketStatus};
use crate::writer;

/// Name of the clean-shutdown marker file.
pub const CLEAN_FILE: &str = "CLEAN";

/// What [`Store::open`] found on disk.
#[derive(Debug, Clone)]
pub struct RecoveredState {
    /// Every registered durable queue (also empty ones), by ascending id.
    pub queues: Vec<RecoveredQueue>,
    /// Counts and timing of the recovery scan.
    pub report: RecoveryReport,
}

/// The durable store. `Send + Sync`; share it as `Arc<Store>`.
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<DirLock>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .field("sync", &self.shared.opts.sync)
            .finish_non_exhaustive()
    }
}

fn read_clean_marker(dir: &Path) -> Result<Option<CleanMarker>> {
    let p = dir.join(CLEAN_FILE);
    match fs::read(&p) {
        Ok(b) => match decode_clean_marker(&b) {
            Ok(m) => Ok(Some(m)),
            Err(why) => {
                tracing::warn!(file = %p.display(), reason = why,
                    "invalid clean-shutdown marker; treating shutdown as unclean");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&p, e)),
    }
}

impl Store {
    /// Open (creating if needed) the data directory, take its exclusive
    /// lock, recover, and start the sync thread.
    ///
    /// Fails with [`StoreError::Locked`] (directory untouched) if another
    /// process holds it, [`StoreError::NotADirectory`] / [`StoreError::DataDir`]
    /// if it cannot be used.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<(Store, RecoveredState)> {
        opts.validate()?;
        let dir: PathBuf = dir.as_ref().to_path_buf();
        prepare_dir(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        let registry = QueueRegistry::load(&dir)?;
        let clean = read_clean_marker(&dir)?;
        let scan = recovery::recover(&dir, &registry, clean.as_ref())?;
        // From here on a crash is an unclean shutdown.
        remove_durably(&dir, CLEAN_FILE)?;
        let report = scan.report.clone();
        let queues = recovery::into_queues(&registry, scan.queues, clean.as_ref());
        let msgs: usize = queues.iter().map(|q| q.messages.len()).sum();
        tracing::info!(
            dir = %dir.display(),
            clean = report.clean_shutdown,
            queues = queues.len(),
            messages = msgs,
            records = report.records,
            segments = scan.segments.len(),
            truncated_bytes = report.truncated_bytes,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "store recovered"
        );
        let mut segments = scan.segments;
        let active = scan.next_segment;
        segments.insert(active, SegMeta::default());
        let header = Chunk::new(
            active,
            0,
            encode_segment_header(active, scan.next_id).to_vec(),
            false,
        );
        let state = State {
            closed: false,
            shutdown: false,
            next_id: scan.next_id,
            active_seg: active,
            active_len: SEGMENT_HEADER_LEN as u32,
            pending: vec![header],
            pending_bytes: SEGMENT_HEADER_LEN,
            writing: None,
            spare: Vec::new(),
            acks: Default::default(),
            side_since: None,
            side_urgent: false,
            segments,
            to_delete: Vec::new(),
            queues: registry,
            poisoned: None,
            write_error: None,
        };
        let (durable_tx, _) = watch::channel(DurableState {
            confirmed: scan.next_id.saturating_sub(1),
            ..Default::default()
        });
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            opts,
            state: Mutex::new(state),
            work_cv: Condvar::new(),
            space_cv: Condvar::new(),
            durable_tx,
            durable_lock: Mutex::new(()),
            durable_cv: Condvar::new(),
            counters: Counters::default(),
            registry_lock: Mutex::new(()),
            definitions_lock: Mutex::new(()),
        });
        let handle = writer::spawn(shared.clone()).map_err(|e| StoreError::io(&dir, e))?;
        Ok((
            Store {
                shared,
                writer: Mutex::new(Some(handle)),
                lock: Mutex::new(Some(lock)),
            },
            RecoveredState { queues, report },
        ))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.shared.opts
    }

    /// Id of a registered durable queue.
    pub fn queue_id(&self, vhost: &str, name: &str) -> Option<QueueId> {
        self.shared.lock().queues.get(vhost, name)
    }

    /// Register a durable queue (idempotent) and return its id. The registry
    /// is fsynced before this returns, so records may reference the id.
    pub fn declare_queue(&self, vhost: &str, name: &str) -> Result<QueueId> {
        let _g = self.shared.registry_lock.lock();
        let mut reg = {
            let st = self.shared.lock();
            if st.closed {
                return Err(StoreError::Closed);
            }
            if let Some(id) = st.queues.get(vhost, name) {
                return Ok(id);
            }
            st.queues.clone()
        };
        let id = reg.insert(vhost, name)?;
        reg.save(&self.shared.dir)?;
        self.shared.lock().queues = reg;
        Ok(id)
    }

    /// Delete a durable queue: every reference it holds is dropped (segments
    /// that become garbage are deleted) and its id is retired. Outstanding
    /// [`MsgRef`]s of the queue become unreadable once their segment goes;
    /// acks for them are ignored. Returns false if the id was unknown.
    pub fn delete_queue(&self, q: QueueId) -> Result<bool> {
        let _g = self.shared.registry_lock.lock();
        let threshold = self.shared.roll_threshold_for_drop();
        let snapshot = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(StoreError::Closed);
            }
            if !log::drop_queue_refs(&mut st, q.0, threshold) {
                return Ok(false);
            }
            st.queues.clone()
        };
        self.shared.work_cv.notify_one();
        snapshot.save(&self.shared.dir)?;
        Ok(true)
    }

    /// Purge: drop the queue's *ready* messages (the broker passes their
    /// refs; delivered-but-unacked messages stay until acked, as AMQP
    /// requires). Equivalent to [`Store::ack_many`].
    pub fn purge_queue(&self, q: QueueId, ready: &[MsgRef]) -> Result<()> {
        log::ack(&self.shared, q, ready)
    }

    /// Append one persistent message routed to `queues` (written once, however
    /// many queues). Cheap: encodes into the shared buffer under a short
    /// mutex and returns. Blocks only if more than
    /// [`StoreOptions::write_buffer_limit`] bytes are waiting for the sync
    /// thread. Await the ticket with [`Store::wait_durable`] (or watch
    /// [`Store::subscribe_durable`]) before confirming.
    pub fn append(&self, queues: &[QueueId], payload: &[u8]) -> Result<(MsgRef, SyncTicket)> {
        log::append(&self.shared, queues, payload, Bytes::new(), false)
    }

    /// Append a persistent message that nobody waits on (its publisher asked
    /// for no confirm); its payload is `head` followed by `body`. Its record
    /// may stay in memory for up to [`StoreOptions::lazy_write_delay`] before
    /// it is written; if its only queue acks it before then, it is never
    /// written (RabbitMQ's message store does the same). A single-queue record
    /// is kept as `head` and a reference to `body` until then, and encoded only
    /// if it is written. Until it is written, a crash loses it. The ticket
    /// works as for [`Store::append`].
    pub fn append_lazy(
        &self,
        queues: &[QueueId],
        head: &[u8],
        body: Bytes,
    ) -> Result<(MsgRef, SyncTicket)> {
        log::append(&self.shared, queues, head, body, true)
    }

    /// Read a message payload (pread, or from the write buffer if it has not
    /// been written yet). The record's CRC is verified.
    pub fn read(&self, r: &MsgRef) -> Result<Bytes> {
        log::read(&self.shared, r)
    }

    /// Record that queue `q` acked the message. Each (queue, message) must be
    /// acked at most once; repeats for a fully acked segment are ignored.
    pub fn ack(&self, q: QueueId, r: &MsgRef) -> Result<()> {
        log::ack(&self.shared, q, std::slice::from_ref(r))
    }

    /// Ack many messages of one queue under one lock acquisition.
    pub fn ack_many(&self, q: QueueId, refs: &[MsgRef]) -> Result<()> {
        log::ack(&self.shared, q, refs)
    }

    /// Current status of a ticket.
    pub fn ticket_status(&self, t: SyncTicket) -> TicketStatus {
        self.shared.durable_tx.borrow().status(t)
    }

    /// A receiver of the durability watermark, updated after every sync
    /// round: the broker can confirm every outstanding publish whose ticket
    /// is `<= confirmed` in one batch (checking `failed` ranges for nacks).
    pub fn subscribe_durable(&self) -> watch::Receiver<DurableState> {
        self.shared.durable_tx.subscribe()
    }

    fn status_to_result(t: SyncTicket, s: TicketStatus) -> Option<Result<()>> {
        match s {
            TicketStatus::Durable => Some(Ok(())),
            TicketStatus::Failed(reason) => Some(Err(StoreError::NotDurable { seq: t.0, reason })),
            TicketStatus::Pending => None,
        }
    }

    /// Wait until the message is durable under the sync policy, or its write
    /// failed (then send `basic.nack`).
    pub async fn wait_durable(&self, t: SyncTicket) -> Result<()> {
        let mut rx = self.shared.durable_tx.subscribe();
        loop {
            let s = rx.borrow_and_update().status(t);
            if let Some(r) = Self::status_to_result(t, s) {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Blocking variant of [`Store::wait_durable`] for non-async callers.
    pub fn wait_durable_blocking(&self, t: SyncTicket) -> Result<()> {
        let mut g = self.shared.durable_lock.lock();
        loop {
            let s = self.shared.durable_tx.borrow().status(t);
            if let Some(r) = Self::status_to_result(t, s) {
                return r;
            }
            self.shared.durable_cv.wait(&mut g);
        }
    }

    /// Counters (appends, fsyncs, sync rounds, ...).
    pub fn stats(&self) -> SyncStats {
        self.shared.counters.snapshot()
    }

    /// Free space on the data dir's filesystem versus
    /// [`StoreOptions::disk_free_limit`].
    pub fn disk_status(&self) -> Result<DiskStatus> {
        disk::disk_status(&self.shared.dir, self.shared.opts.disk_free_limit)
    }

    /// Atomically replace the stored durable definitions.
    pub fn save_definitions(&self, defs: &Definitions) -> Result<()> {
        let _g = self.shared.definitions_lock.lock();
        definitions::save(&self.shared.dir, defs)
    }

    /// Load the stored durable definitions (empty if none were saved).
    pub fn load_definitions(&self) -> Result<Definitions> {
        let _g = self.shared.definitions_lock.lock();
        definitions::load(&self.shared.dir)
    }

    /// Total bytes of segment and ack files currently on disk.
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        for e in fs::read_dir(&self.shared.dir).map_err(|e| StoreError::io(&self.shared.dir, e))? {
            let e = e.map_err(|e| StoreError::io(&self.shared.dir, e))?;
            let name = e.file_name();
            if name.to_str().and_then(crate::segment::parse_name).is_some() {
                total += e
                    .metadata()
                    .map_err(|err| StoreError::io(e.path(), err))?
                    .len();
            }
        }
        Ok(total)
    }

    fn stop_writer(&self) -> bool {
        let Some(h) = self.writer.lock().take() else {
            return false;
        };
        {
            let mut st = self.shared.lock();
            st.closed = true;
            st.shutdown = true;
        }
        self.shared.work_cv.notify_all();
        self.shared.space_cv.notify_all();
        if h.join().is_err() {
            tracing::error!("store sync thread panicked");
        }
        true
    }

    /// Clean shutdown: flush and fsync everything, write the clean-shutdown
    /// marker, release the directory lock. `delivered_unacked` lists the
    /// messages that were delivered to consumers and not acked; on the next
    /// open exactly those come back with `redelivered = true`. Without a
    /// successful `close` (crash, kill -9, plain drop) every recovered message
    /// is flagged redelivered.
    pub fn close(&self, delivered_unacked: &[(QueueId, MsgRef)]) -> Result<()> {
        if !self.stop_writer() {
            return Err(StoreError::Closed);
        }
        let (next_id, poisoned) = {
            let st = self.shared.lock();
            (st.next_id, st.poisoned.clone())
        };
        let leftover = self.shared.durable_tx.borrow().poisoned.clone();
        if let Some(p) = poisoned.or(leftover) {
            self.lock.lock().take();
            return Err(StoreError::Poisoned(p));
        }
        let list: Vec<(u32, u64)> = delivered_unacked.iter().map(|(q, r)| (q.0, r.id)).collect();
        let res = write_atomic(
            &self.shared.dir,
            CLEAN_FILE,
            &encode_clean_marker(next_id, &list),
        );
        self.lock.lock().take();
        tracing::info!(dir = %self.shared.dir.display(), "store closed cleanly");
        res
    }
}

impl Drop for Store {
    /// Dropping without [`Store::close`] flushes pending writes and stops the
    /// sync thread but writes no clean marker: the next open treats it as a
    /// crash (all recovered messages redelivered).
    fn drop(&mut self) {
        self.stop_writer();
    }
}
