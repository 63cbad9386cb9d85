//! Shutdown as a first-class concept: one signal every connection task listens to.
//!
//! The server holds the [`ShutdownSignal`]; each connection holds a [`Shutdown`] listener and a
//! clone of a completion sender, so the server knows when the last connection has finished
//! closing (each with 320 CONNECTION_FORCED).

use tokio::sync::{mpsc, watch};

/// The sending side, held by the server.
pub struct ShutdownSignal {
    tx: watch::Sender<bool>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

/// A listener held by each connection task.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        ShutdownSignal {
            tx,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A listener for a new connection.
    pub fn listener(&self) -> Option<Shutdown> {
        Some(Shutdown {
            rx: self.tx.subscribe(),
            _done: self.done_tx.clone()?,
        })
    }

    /// Tells every listener to stop, then waits until all of them are dropped.
    pub async fn trigger_and_wait(mut self) {
        let _ = self.tx.send(true);
        drop(self.done_tx.take());
        let _ = self.done_rx.recv().await;
    }
}

impl Shutdown {
    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until shutdown is requested.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}
