//! A published message as the broker holds it, and its entry in a queue.
//!
//! A message is routed once and shared (`Arc`) by every queue it lands in; a queue entry adds
//! the queue's own position (`seq`) and the redelivered flag. A persistent message in a durable
//! queue is held by its store handle ([`Payload::Stored`]), so a backlog costs a few dozen bytes
//! per message in RAM and its body is read back from the store on delivery; while the backlog
//! is short the message is kept in memory as well ([`Payload::Cached`]).

use std::sync::Arc;

use bytes::Bytes;
use tensorq_amqp::{AMQPProperties, ShortString};
use tensorq_store::MsgRef;

/// An immutable published message.
#[derive(Debug)]
pub struct Message {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub properties: AMQPProperties,
    /// The encoded content-header payload (as the publisher sent it, or encoded once from
    /// `properties` for a message read back from the store): every delivery forwards these
    /// bytes instead of re-encoding the properties.
    pub header: Bytes,
    pub body: Bytes,
}

/// Fixed bookkeeping cost counted per queued message on top of its body, used for the
/// per-queue slow-down threshold.
pub const MESSAGE_OVERHEAD: usize = 256;

impl Message {
    /// delivery_mode 2.
    pub fn persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// Bytes counted against queue thresholds.
    pub fn weight(&self) -> usize {
        self.body.len() + MESSAGE_OVERHEAD
    }
}

/// Where a queued message's content is.
#[derive(Debug, Clone)]
pub enum Payload {
    /// In memory (transient messages, or any message in a transient queue).
    Memory(Arc<Message>),
    /// In the durable store; read back on delivery.
    Stored(MsgRef),
    /// In the durable store, and kept in memory too because the queue's backlog was short when
    /// it arrived (below [`HOT_BACKLOG_BYTES`]): delivered without a read-back. Boxed so that
    /// every queue entry stays as small as a stored one (a long backlog is all `Stored`).
    Cached(Box<(Arc<Message>, MsgRef)>),
}

/// A stored message that arrives while its queue's backlog weighs less than this stays in
/// memory as well, so a queue that keeps up with its publishers never reads its own messages
/// back from disk; a longer backlog costs only its store handles.
pub const HOT_BACKLOG_BYTES: usize = 1 << 20;

/// A message's place in one queue.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Position in the queue: a requeued message goes back to its old position.
    pub seq: u64,
    pub payload: Payload,
    pub redelivered: bool,
}

/// Bytes counted for a stored entry (its handle and queue slot).
pub const STORED_WEIGHT: usize = 48;

impl Queued {
    /// Bytes counted against the queue's slow-down threshold.
    pub fn weight(&self) -> usize {
        match &self.payload {
            Payload::Memory(m) => m.weight(),
            Payload::Cached(c) => c.0.weight(),
            Payload::Stored(_) => STORED_WEIGHT,
        }
    }

    /// The store handle of a stored entry.
    pub fn stored(&self) -> Option<&MsgRef> {
        match &self.payload {
            Payload::Stored(r) => Some(r),
            Payload::Cached(c) => Some(&c.1),
            Payload::Memory(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long durable backlog is one `Queued` per message: keep it at the size of a seq, a
    /// store handle and a flag (the 1M-message RSS budget of docs/BENCHMARKS.md counts on it).
    #[test]
    fn queue_entries_stay_small() {
        assert!(std::mem::size_of::<Queued>() <= 48);
    }
}
