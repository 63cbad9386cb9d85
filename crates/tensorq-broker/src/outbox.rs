//! A connection's output buffer, shared by everything that sends to that client.
//!
//! Replies from the connection task, deliveries from queues (running on the publisher's task)
//! and confirms all append encoded frames here; the connection's writer task swaps the buffer
//! out and writes it with one system call. Appending never blocks on the socket. A queue that
//! finds the buffer over [`OUTBOX_HIGH`] stops delivering to this connection and registers
//! itself; the writer drives it again once the buffer has been handed to the socket. This is
//! the consumer side of flow control: a slow client never makes the broker buffer without bound.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::queue::Queue;

/// Above this many buffered bytes, queues stop delivering to the connection.
pub const OUTBOX_HIGH: usize = 1 << 20;

thread_local! {
    /// Outboxes to wake when the current batch ends (see [`batch`]).
    static DEFERRED: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// Runs `f` (one connection's batch of frames, which never awaits) with writer wake-ups
/// deferred to its end: every delivery the batch causes lands in its outbox first, and each
/// writer is woken once, so one read of many publishes becomes one write per consumer
/// connection instead of one per message.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let nested = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_some() {
            true
        } else {
            *d = Some(Vec::new());
            false
        }
    });
    let r = f();
    if !nested {
        let woken = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for o in woken {
            o.wake();
        }
    }
    r
}

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

    /// Wakes the writer at the end of the current [`batch`], or now outside one.
    pub fn wake_soon(self: &Arc<Self>) {
        let now = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
            Some(list) => {
                if !list.iter().any(|o| Arc::ptr_eq(o, self)) {
                    list.push(self.clone());
                }
                false
            }
            None => true,
        });
        if now {
            self.wake();
        }
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
