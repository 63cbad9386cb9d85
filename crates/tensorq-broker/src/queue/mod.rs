//! A queue: its ready messages in order, its consumers, and round-robin delivery.
//!
//! All queue state sits behind one short `parking_lot` mutex; operations run synchronously on
//! the task that causes them (the publisher's connection task delivers straight into consumer
//! connections' outboxes), so a message crosses no channel and no extra task between publish
//! and the consumer's socket. Unacked messages live in the consuming channel's
//! [`crate::delivery::DeliveryState`], not here. Storage of persistent messages slots in beneath
//! this type (issue 3); routing and bindings belong to exchanges.

pub mod args;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{FieldTable, ShortString};
use tokio::sync::Notify;

use crate::delivery::{Consumer, Refusal};
use crate::message::{Message, Payload, Queued, HOT_BACKLOG_BYTES};
use crate::outbox::Outbox;
use crate::persist::{self, Persistence};
use tensorq_store::{MsgRef, QueueId};

/// How a queue was declared.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: ShortString,
    pub durable: bool,
    /// The connection id that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Queued>,
    bytes: usize,
    next_seq: u64,
    consumers: Vec<Arc<Consumer>>,
    rr: usize,
    had_consumer: bool,
}

/// A durable queue's link to the store.
pub struct StoreLink {
    pub persistence: Arc<Persistence>,
    pub id: QueueId,
}

/// A message queue.
pub struct Queue {
    pub spec: QueueSpec,
    /// Set for durable queues when the broker has a data dir.
    pub store: Option<StoreLink>,
    vhost: String,
    state: Mutex<QueueState>,
    drained: Notify,
    /// Publishers waiting on `drained` (so the hot path skips the notify when there are none).
    drain_waiters: AtomicUsize,
    deleted: AtomicBool,
    slow_bytes: usize,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.spec.name)
            .finish()
    }
}

impl Queue {
    /// A new, empty queue. `slow_bytes` is the backlog above which publishers are slowed.
    pub fn new(
        spec: QueueSpec,
        vhost: &str,
        slow_bytes: usize,
        store: Option<StoreLink>,
    ) -> Arc<Self> {
        Arc::new(Queue {
            spec,
            store,
            vhost: vhost.to_owned(),
            state: Mutex::new(QueueState::default()),
            drained: Notify::new(),
            drain_waiters: AtomicUsize::new(0),
            deleted: AtomicBool::new(false),
            slow_bytes,
        })
    }

    pub fn name(&self) -> &ShortString {
        &self.spec.name
    }

    /// `'name' in vhost '/'`, as RabbitMQ names queues in reply texts.
    pub fn describe(&self) -> String {
        format!("queue '{}' in vhost '{}'", self.spec.name, self.vhost)
    }

    /// 405 unless `conn` may use this queue.
    pub fn check_owner(&self, conn: u64) -> Result<(), AmqpError> {
        match self.spec.exclusive_owner {
            Some(owner) if owner != conn => Err(AmqpError::resource_locked(format!(
                "cannot obtain exclusive access to locked {}. It could be originally declared \
                 on another connection or the exclusive property value does not match that of \
                 the original declaration.",
                self.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// The store id of a durable queue.
    pub fn store_id(&self) -> Option<QueueId> {
        self.store.as_ref().map(|s| s.id)
    }

    /// Appends a routed message and delivers what consumers can take. `stored` is the message's
    /// store handle when it was written for this queue: a consumer with credit right now gets
    /// the in-memory copy without a read-back, and so does one that takes it later if the
    /// backlog was short when it arrived; behind a longer backlog the queue keeps only the
    /// handle.
    ///
    /// Returns whether the backlog is now above the slow-down threshold (read under the same
    /// lock, so the publisher's hot path does not take it twice).
    pub fn publish(self: &Arc<Self>, msg: Arc<Message>, stored: Option<MsgRef>) -> bool {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let entry = Queued {
            seq,
            payload: match stored {
                Some(r) if st.bytes < HOT_BACKLOG_BYTES => {
                    Payload::Cached(Box::new((msg.clone(), r)))
                }
                Some(r) => Payload::Stored(r),
                None => Payload::Memory(msg.clone()),
            },
            redelivered: false,
        };
        if st.ready.is_empty() {
            if let Err(entry) = self.deliver_now(&mut st, entry, &msg) {
                st.bytes += entry.weight();
                st.ready.push_back(entry);
            }
        } else {
            st.bytes += entry.weight();
            st.ready.push_back(entry);
        }
        self.drive_locked(&mut st);
        st.bytes > self.slow_bytes
    }

    /// Puts recovered messages (from the store, in order) into the queue.
    pub fn restore(self: &Arc<Self>, entries: impl IntoIterator<Item = (MsgRef, bool)>) {
        let mut st = self.state.lock();
        for (r, redelivered) in entries {
            let seq = st.next_seq;
            st.next_seq += 1;
            let e = Queued {
                seq,
                payload: Payload::Stored(r),
                redelivered,
            };
            st.bytes += e.weight();
            st.ready.push_back(e);
        }
    }

    /// Tries to hand `entry` to one consumer with credit (round-robin), using `msg` as its
    /// content. Gives the entry back when nobody can take it now.
    fn deliver_now(
        self: &Arc<Self>,
        st: &mut QueueState,
        mut entry: Queued,
        msg: &Arc<Message>,
    ) -> Result<(), Queued> {
        let n = st.consumers.len();
        for _ in 0..n {
            let idx = st.rr % n;
            st.rr = st.rr.wrapping_add(1);
            let consumer = st.consumers[idx].clone();
            let link = consumer.channel.clone();
            match link.deliver(self, &consumer, entry, msg) {
                Ok(()) => {
                    link.outbox.wake_soon();
                    return Ok(());
                }
                Err((why, back)) => {
                    if why == Refusal::Busy {
                        link.outbox.wait_for_room(Arc::downgrade(self));
                    }
                    entry = back;
                }
            }
        }
        Err(entry)
    }

    /// The content of an entry: in memory, or read back from the store.
    fn content(&self, entry: &Queued) -> Result<Arc<Message>, String> {
        match &entry.payload {
            Payload::Memory(m) => Ok(m.clone()),
            Payload::Cached(c) => Ok(c.0.clone()),
            Payload::Stored(r) => {
                let store = self
                    .store
                    .as_ref()
                    .ok_or("stored entry in a queue without a store")?;
                let bytes = store.persistence.store.read(r).map_err(|e| e.to_string())?;
                persist::decode_message(bytes).map(Arc::new)
            }
        }
    }

    /// Records in the store that these entries of this queue are done with (acked, rejected
    /// without requeue, or delivered to a no-ack consumer). Entries held only in memory need
    /// nothing.
    pub fn forget(&self, entries: &[&Queued]) {
        let Some(store) = &self.store else { return };
        let refs: Vec<MsgRef> = entries.iter().filter_map(|e| e.stored().copied()).collect();
        if refs.is_empty() {
            return;
        }
        if let Err(e) = store.persistence.store.ack_many(store.id, &refs) {
            tracing::error!(queue = %self.spec.name, "cannot record acks in the store: {e}");
        }
    }

    /// Puts messages back at their old positions, marked redelivered, and delivers again.
    pub fn requeue(self: &Arc<Self>, entries: Vec<Queued>) {
        if entries.is_empty() || self.is_deleted() {
            return;
        }
        let mut st = self.state.lock();
        for mut e in entries {
            e.redelivered = true;
            st.bytes += e.weight();
            let at = st.ready.partition_point(|q| q.seq < e.seq);
            st.ready.insert(at, e);
        }
        self.drive_locked(&mut st);
    }

    /// Delivers ready messages to consumers with credit.
    pub fn drive(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.drive_locked(&mut st);
    }

    fn drive_locked(self: &Arc<Self>, st: &mut QueueState) {
        let n = st.consumers.len();
        if n == 0 || st.ready.is_empty() {
            return;
        }
        let mut refused = 0;
        let mut last_outbox: Option<Arc<Outbox>> = None;
        while refused < n {
            let Some(entry) = st.ready.pop_front() else {
                break;
            };
            let idx = st.rr % n;
            st.rr = st.rr.wrapping_add(1);
            let consumer = st.consumers[idx].clone();
            let link = consumer.channel.clone();
            if let Err(why) = link.can_take(&consumer) {
                st.ready.push_front(entry);
                if why == Refusal::Busy {
                    link.outbox.wait_for_room(Arc::downgrade(self));
                }
                refused += 1;
                continue;
            }
            let weight = entry.weight();
            let msg = match self.content(&entry) {
                Ok(m) => m,
                Err(why) => {
                    tracing::error!(queue = %self.spec.name, "dropping a message that cannot be read back: {why}");
                    st.bytes = st.bytes.saturating_sub(weight);
                    self.forget(&[&entry]);
                    continue;
                }
            };
            match link.deliver(self, &consumer, entry, &msg) {
                Ok(()) => {
                    st.bytes = st.bytes.saturating_sub(weight);
                    refused = 0;
                    match &last_outbox {
                        Some(o) if Arc::ptr_eq(o, &link.outbox) => {}
                        _ => {
                            if let Some(o) = last_outbox.replace(link.outbox.clone()) {
                                o.wake_soon();
                            }
                        }
                    }
                }
                Err((_, entry)) => {
                    st.ready.push_front(entry);
                    refused += 1;
                }
            }
        }
        if let Some(o) = last_outbox {
            o.wake_soon();
        }
        if st.bytes <= self.slow_bytes / 2 {
            self.notify_drained();
        }
    }

    /// basic.get: the next ready message, its content and how many remain.
    pub fn get(&self) -> Option<(Queued, Arc<Message>, u32)> {
        let mut st = self.state.lock();
        loop {
            let e = st.ready.pop_front()?;
            st.bytes = st.bytes.saturating_sub(e.weight());
            if st.bytes <= self.slow_bytes / 2 {
                self.notify_drained();
            }
            match self.content(&e) {
                Ok(msg) => return Some((e, msg, st.ready.len() as u32)),
                Err(why) => {
                    tracing::error!(queue = %self.spec.name, "dropping a message that cannot be read back: {why}");
                    self.forget(&[&e]);
                }
            }
        }
    }

    /// Adds a consumer, enforcing exclusive-consumer rules (403), calls `accepted` (which sends
    /// consume-ok, so it precedes every delivery), then delivers.
    pub fn add_consumer(
        self: &Arc<Self>,
        consumer: Arc<Consumer>,
        accepted: impl FnOnce(),
    ) -> Result<(), AmqpError> {
        let mut st = self.state.lock();
        if st.consumers.iter().any(|c| c.exclusive) {
            return Err(AmqpError::access_refused(format!(
                "{} in exclusive use",
                self.describe()
            )));
        }
        if consumer.exclusive && !st.consumers.is_empty() {
            return Err(AmqpError::access_refused(format!(
                "cannot obtain exclusive access to {}: it has consumers",
                self.describe()
            )));
        }
        accepted();
        st.consumers.push(consumer);
        st.had_consumer = true;
        self.drive_locked(&mut st);
        Ok(())
    }

    /// Removes a consumer. Returns true when the queue should now be auto-deleted.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        let mut st = self.state.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.spec.auto_delete && st.had_consumer && st.consumers.is_empty()
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.state.lock();
        let n = st.ready.len() as u32;
        let gone: Vec<Queued> = st.ready.drain(..).collect();
        st.bytes = 0;
        self.drained.notify_waiters();
        drop(st);
        self.forget(&gone.iter().collect::<Vec<_>>());
        n
    }

    /// Stored entries that are ready and were delivered before (for the clean-shutdown marker,
    /// so they come back redelivered).
    pub fn redelivered_refs(&self) -> Vec<MsgRef> {
        let st = self.state.lock();
        st.ready
            .iter()
            .filter(|e| e.redelivered)
            .filter_map(|e| e.stored().copied())
            .collect()
    }

    pub fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    /// Marks the queue deleted and empties it. Returns the ready count and the consumers,
    /// which the caller cancels.
    pub fn delete(&self) -> (u32, Vec<Arc<Consumer>>) {
        self.deleted.store(true, Ordering::Release);
        let mut st = self.state.lock();
        let n = st.ready.len() as u32;
        st.ready.clear();
        st.bytes = 0;
        self.drained.notify_waiters();
        let consumers = std::mem::take(&mut st.consumers);
        drop(st);
        if let Some(store) = &self.store {
            if let Err(e) = store.persistence.store.delete_queue(store.id) {
                tracing::error!(queue = %self.spec.name, "cannot delete the queue's messages from the store: {e}");
            }
        }
        (n, consumers)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// True when the backlog is above the slow-down threshold.
    pub fn is_over_threshold(&self) -> bool {
        self.state.lock().bytes > self.slow_bytes
    }

    fn notify_drained(&self) {
        if self.drain_waiters.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Waits (at most `limit`) for the backlog to fall to half the threshold.
    pub async fn wait_drained(&self, limit: Duration) {
        self.drain_waiters.fetch_add(1, Ordering::AcqRel);
        let notified = self.drained.notified();
        if self.is_over_threshold() {
            let _ = tokio::time::timeout(limit, notified).await;
        }
        self.drain_waiters.fetch_sub(1, Ordering::AcqRel);
    }
}
