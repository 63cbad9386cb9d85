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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{FieldTable, ShortString};
use tokio::sync::Notify;

use crate::delivery::{Consumer, Refusal};
use crate::message::{Message, Queued};
use crate::outbox::Outbox;

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

/// A message queue.
pub struct Queue {
    pub spec: QueueSpec,
    vhost: String,
    state: Mutex<QueueState>,
    drained: Notify,
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
    pub fn new(spec: QueueSpec, vhost: &str, slow_bytes: usize) -> Arc<Self> {
        Arc::new(Queue {
            spec,
            vhost: vhost.to_owned(),
            state: Mutex::new(QueueState::default()),
            drained: Notify::new(),
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

    /// Appends a routed message and delivers what consumers can take.
    pub fn publish(self: &Arc<Self>, msg: Arc<Message>) {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.bytes += msg.weight();
        st.ready.push_back(Queued {
            seq,
            msg,
            redelivered: false,
        });
        self.drive_locked(&mut st);
    }

    /// Puts messages back at their old positions, marked redelivered, and delivers again.
    pub fn requeue(self: &Arc<Self>, entries: Vec<Queued>) {
        if entries.is_empty() || self.is_deleted() {
            return;
        }
        let mut st = self.state.lock();
        for mut e in entries {
            e.redelivered = true;
            st.bytes += e.msg.weight();
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
            let weight = entry.msg.weight();
            match link.deliver(self, &consumer, entry) {
                Ok(()) => {
                    st.bytes = st.bytes.saturating_sub(weight);
                    refused = 0;
                    match &last_outbox {
                        Some(o) if Arc::ptr_eq(o, &link.outbox) => {}
                        _ => {
                            if let Some(o) = last_outbox.replace(link.outbox.clone()) {
                                o.wake();
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
            o.wake();
        }
        if st.bytes <= self.slow_bytes / 2 {
            self.drained.notify_waiters();
        }
    }

    /// basic.get: the next ready message and how many remain.
    pub fn get(&self) -> Option<(Queued, u32)> {
        let mut st = self.state.lock();
        let e = st.ready.pop_front()?;
        st.bytes = st.bytes.saturating_sub(e.msg.weight());
        let left = st.ready.len() as u32;
        if st.bytes <= self.slow_bytes / 2 {
            self.drained.notify_waiters();
        }
        Some((e, left))
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
        st.ready.clear();
        st.bytes = 0;
        self.drained.notify_waiters();
        n
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
        (n, std::mem::take(&mut st.consumers))
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// True when the backlog is above the slow-down threshold.
    pub fn is_over_threshold(&self) -> bool {
        self.state.lock().bytes > self.slow_bytes
    }

    /// Waits (at most `limit`) for the backlog to fall to half the threshold.
    pub async fn wait_drained(&self, limit: Duration) {
        let notified = self.drained.notified();
        if !self.is_over_threshold() {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}
