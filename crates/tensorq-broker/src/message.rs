//! A published message as the broker holds it, and its entry in a queue.
//!
//! A message is routed once and shared (`Arc`) by every queue it lands in; a queue entry adds
//! the queue's own position (`seq`) and the redelivered flag.

use std::sync::Arc;

use bytes::Bytes;
use tensorq_amqp::{AMQPProperties, ShortString};

/// An immutable published message.
#[derive(Debug)]
pub struct Message {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub properties: AMQPProperties,
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

/// A message's place in one queue.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Position in the queue: a requeued message goes back to its old position.
    pub seq: u64,
    pub msg: Arc<Message>,
    pub redelivered: bool,
}
