//! The delivery side of a channel, shared between the channel's connection task (acks, qos,
//! flow) and the queues that deliver to its consumers (on whatever task publishes).
//!
//! It owns delivery tags, the unacked map and the prefetch limits. Lock order is always
//! queue → [`ChannelLink::state`] → outbox; the connection task never holds this lock while it
//! locks a queue.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tensorq_amqp::amq_protocol::protocol::{basic, AMQPClass};
use tensorq_amqp::{encode, ShortString};
use tokio::sync::mpsc::UnboundedSender;

use crate::message::{Message, Queued};
use crate::outbox::Outbox;
use crate::queue::Queue;
use crate::unacked::TagQueue;

/// A consumer registered on a queue.
pub struct Consumer {
    pub tag: ShortString,
    pub channel: Arc<ChannelLink>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (basic.qos with global=false before basic.consume); 0 = unlimited.
    pub prefetch: u16,
    /// Deliveries to this consumer not yet acked.
    pub unacked: AtomicU32,
    /// The client announced `consumer_cancel_notify`: tell it when its queue goes away.
    pub cancel_notify: bool,
}

/// A delivered, not yet acknowledged message.
pub struct Unacked {
    pub queue: Weak<Queue>,
    pub entry: Queued,
    /// None for basic.get.
    pub consumer: Option<Arc<Consumer>>,
}

/// Mutable delivery state of a channel.
#[derive(Default)]
pub struct DeliveryState {
    pub next_tag: u64,
    pub unacked: TagQueue<Unacked>,
    /// Channel-wide prefetch (basic.qos global=true); 0 = unlimited.
    pub prefetch_global: u16,
    /// channel.flow active=false pauses deliveries.
    pub paused: bool,
    pub closed: bool,
}

/// A delivery handed to an in-process consumer (see `local.rs`) instead of being encoded.
pub struct LocalDelivery {
    pub tag: u64,
    pub redelivered: bool,
    pub message: Arc<Message>,
}

/// What queues see of a channel.
pub struct ChannelLink {
    pub id: u16,
    /// The connection's output buffer; for an in-process channel, only its wake-ups and closed
    /// flag are used.
    pub outbox: Arc<Outbox>,
    pub frame_max: u32,
    pub state: Mutex<DeliveryState>,
    /// Set for an in-process channel: deliveries go here as messages, not frames.
    local: Option<UnboundedSender<LocalDelivery>>,
}

/// Why a consumer could not take a message now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Prefetch reached or channel paused: wait for an ack / flow / qos.
    NoCredit,
    /// The connection's output buffer is full: wait for the writer.
    Busy,
    /// The channel is gone.
    Gone,
}

impl ChannelLink {
    pub fn new(id: u16, outbox: Arc<Outbox>, frame_max: u32) -> Arc<Self> {
        Self::with_sink(id, outbox, frame_max, None)
    }

    /// A channel of an in-process client: deliveries are sent to `sink`.
    pub fn new_local(outbox: Arc<Outbox>, sink: UnboundedSender<LocalDelivery>) -> Arc<Self> {
        Self::with_sink(1, outbox, tensorq_amqp::limits::FRAME_MAX, Some(sink))
    }

    fn with_sink(
        id: u16,
        outbox: Arc<Outbox>,
        frame_max: u32,
        local: Option<UnboundedSender<LocalDelivery>>,
    ) -> Arc<Self> {
        Arc::new(ChannelLink {
            id,
            outbox,
            frame_max,
            state: Mutex::new(DeliveryState {
                next_tag: 1,
                ..DeliveryState::default()
            }),
            local,
        })
    }

    /// Whether `consumer` may take one more message now.
    pub fn can_take(&self, consumer: &Consumer) -> Result<(), Refusal> {
        if self.outbox.is_closed() {
            return Err(Refusal::Gone);
        }
        if self.outbox.is_full() {
            return Err(Refusal::Busy);
        }
        let st = self.state.lock();
        Self::credit(&st, consumer)
    }

    fn credit(st: &DeliveryState, consumer: &Consumer) -> Result<(), Refusal> {
        if st.closed {
            return Err(Refusal::Gone);
        }
        if st.paused {
            return Err(Refusal::NoCredit);
        }
        if consumer.no_ack {
            return Ok(());
        }
        if consumer.prefetch > 0
            && consumer.unacked.load(Ordering::Relaxed) >= consumer.prefetch as u32
        {
            return Err(Refusal::NoCredit);
        }
        if st.prefetch_global > 0 && st.unacked.len() >= st.prefetch_global as usize {
            return Err(Refusal::NoCredit);
        }
        Ok(())
    }

    /// Delivers `entry` (whose content is `msg`) to `consumer`: assigns a tag, records it
    /// unacked (unless no-ack, when the queue forgets it at once) and encodes `basic.deliver` +
    /// content into the outbox. Gives the entry back on refusal.
    pub fn deliver(
        &self,
        queue: &Arc<Queue>,
        consumer: &Arc<Consumer>,
        entry: Queued,
        msg: &Arc<Message>,
    ) -> Result<(), (Refusal, Queued)> {
        if self.outbox.is_full() {
            let why = if self.outbox.is_closed() {
                Refusal::Gone
            } else {
                Refusal::Busy
            };
            return Err((why, entry));
        }
        let mut st = self.state.lock();
        if let Err(r) = Self::credit(&st, consumer) {
            return Err((r, entry));
        }
        let tag = st.next_tag;
        st.next_tag += 1;
        match &self.local {
            Some(sink) => {
                let sent = sink.send(LocalDelivery {
                    tag,
                    redelivered: entry.redelivered,
                    message: Arc::clone(msg),
                });
                if sent.is_err() {
                    st.next_tag -= 1;
                    st.closed = true;
                    return Err((Refusal::Gone, entry));
                }
            }
            None => {
                let deliver = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: consumer.tag.clone(),
                    delivery_tag: tag,
                    redelivered: entry.redelivered,
                    exchange: msg.exchange.clone(),
                    routing_key: msg.routing_key.clone(),
                }));
                let frame_max = self.frame_max;
                let channel = self.id;
                self.outbox.push_quiet(|out| {
                    encode::method_owned(out, channel, deliver);
                    encode::content_raw(out, channel, &msg.header, &msg.body, frame_max);
                });
            }
        }
        if consumer.no_ack {
            drop(st);
            queue.forget(&[&entry]);
        } else {
            consumer.unacked.fetch_add(1, Ordering::Relaxed);
            st.unacked.insert(
                tag,
                Unacked {
                    queue: Arc::downgrade(queue),
                    entry,
                    consumer: Some(consumer.clone()),
                },
            );
        }
        Ok(())
    }

    /// Records a basic.get delivery and returns its tag.
    pub fn record_get(&self, queue: &Arc<Queue>, entry: &Queued, no_ack: bool) -> u64 {
        let mut st = self.state.lock();
        let tag = st.next_tag;
        st.next_tag += 1;
        if !no_ack {
            st.unacked.insert(
                tag,
                Unacked {
                    queue: Arc::downgrade(queue),
                    entry: entry.clone(),
                    consumer: None,
                },
            );
        }
        tag
    }

    /// Removes the unacked deliveries named by an ack/nack/reject. `tag == 0 && multiple`
    /// means all of them. Returns None for an unknown tag.
    pub fn settle(&self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let mut st = self.state.lock();
        let taken: Vec<Unacked> = if multiple {
            if tag == 0 {
                st.unacked.take_all()
            } else if st.unacked.contains(tag) {
                st.unacked.take_through(tag)
            } else {
                return None;
            }
        } else {
            vec![st.unacked.remove(tag)?]
        };
        drop(st);
        for u in &taken {
            if let Some(c) = &u.consumer {
                c.unacked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Some(taken)
    }

    /// Takes every unacked delivery (channel close, basic.recover).
    pub fn take_all_unacked(&self) -> Vec<Unacked> {
        self.settle(0, true).unwrap_or_default()
    }
}
