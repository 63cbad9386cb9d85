//! A one-shot stop signal shared by the worker tasks of one run. Owns only
//! the flag and the wake-up; when to raise it is decided by the callers.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Raised once; every waiter wakes.
#[derive(Debug, Default)]
pub struct Stop {
    raised: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Raise the signal and wake all waiters.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the signal is raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolve once the signal is raised.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}
