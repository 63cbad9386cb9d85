//! A connection's output buffer, shared by everything that sends to that client.
//!
//! Replies from the connection task, deliveries from queues (running on the publisher's task)
//! and confirms all append encoded frames here; the connection's writer task swaps the buffer
//! out and writes it with one system call. Appending never blocks on the socket. A queue that
//! finds the buffer over [`OUTBOX_HIGH`] stops delivering to this connection and registers
//! itself; the writer drives it again once the buffer has been handed to the socket. This is
//! the consumer side of flow control: a slow client never makes the broker buffer without bound.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::queue::Queue;

/// Above this many buffered bytes, queues stop delivering to the connection.
pub const OUTBOX_HIGH: usize = 1 << 20;

/// The shared output buffer of one connection.
#[derive(Default)]
pub struct Outbox {
    buf: Mutex<Vec<u8>>,
    len: AtomicUsize,
    notify: Notify,
    closed: AtomicBool,
    waiting: Mutex<Vec<Weak<Queue>>>,
}

impl Outbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Outbox::default())
    }

    /// Appends frames with `write` and wakes the writer.
    pub fn push(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.buf.lock();
        write(&mut buf);
        self.len.store(buf.len(), Ordering::Release);
        drop(buf);
        self.notify.notify_one();
    }

    /// Appends frames with `write` without waking the writer (the caller wakes it once after a
    /// batch with [`Outbox::wake`]).
    pub fn push_quiet(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.buf.lock();
        write(&mut buf);
        self.len.store(buf.len(), Ordering::Release);
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// True when queues should hold back deliveries.
    pub fn is_full(&self) -> bool {
        self.len.load(Ordering::Acquire) > OUTBOX_HIGH || self.closed.load(Ordering::Acquire)
    }

    /// Registers a queue to be driven again once the buffer drains.
    pub fn wait_for_room(&self, queue: Weak<Queue>) {
        let mut waiting = self.waiting.lock();
        if !waiting.iter().any(|w| w.ptr_eq(&queue)) {
            waiting.push(queue);
        }
    }

    /// Swaps the pending bytes into `spare` (which must be empty) and returns them.
    pub fn take(&self, spare: Vec<u8>) -> Vec<u8> {
        let mut buf = self.buf.lock();
        let out = std::mem::replace(&mut *buf, spare);
        self.len.store(0, Ordering::Release);
        out
    }

    /// Queues that were held back, to be driven now that there is room.
    pub fn take_waiting(&self) -> Vec<Arc<Queue>> {
        let mut waiting = self.waiting.lock();
        waiting.drain(..).filter_map(|w| w.upgrade()).collect()
    }

    /// Waits until something was pushed.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Marks the connection gone: queues stop delivering to it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
