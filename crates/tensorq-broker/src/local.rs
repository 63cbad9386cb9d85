//! In-process clients: code running inside the broker process (the embedded serving workers of
//! `tensorq server --serve`) consumes, publishes and acks through the broker's queues directly,
//! with the same guarantees an AMQP client gets, but without sockets, frames or a client
//! library in between.
//!
//! A [`LocalClient`] is one channel: its deliveries arrive as `Arc<Message>`s on a tokio
//! channel (the queue hands them over under its own lock, exactly where it would otherwise
//! encode `basic.deliver` into a connection's output buffer), prefetch bounds them as it bounds
//! an AMQP consumer, and acks, nacks and requeues go through the same channel-delivery state.
//! A publish is routed like `basic.publish`; its [`Confirm`] resolves when a publisher confirm
//! would be sent (at once for transient messages, after the fsync for persistent messages in
//! durable queues). Dropping the client requeues whatever it had not acked, as closing a channel
//! does. Not owned here: routing rules, queue behaviour and the store (their own modules).
//!
//! Publishers here are not subject to the memory alarm or the slow-queue brake of socket
//! publishers: the only in-process publisher is the serving worker, whose replies are bounded
//! by the requests it holds (its prefetch).

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tensorq_amqp::amq_protocol::protocol::queue as qu;
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{encode, AMQPProperties, FieldTable};
use tensorq_store::{Store, SyncTicket};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::broker::Broker;
use crate::channel::{close_link, enqueue, forget_all, requeue_all, unknown_tag, Awaiting};
use crate::delivery::{ChannelLink, Consumer, LocalDelivery};
use crate::message::Message;
use crate::outbox::Outbox;
use crate::queue::Queue;
use crate::vhost::{self, VHost};

/// One in-process channel on a vhost.
pub struct LocalClient {
    vhost: Arc<VHost>,
    conn_id: u64,
    link: Arc<ChannelLink>,
    consumers: Mutex<Vec<(Arc<Queue>, Arc<Consumer>)>>,
}

/// Resolves when the broker would confirm a publish.
pub enum Confirm {
    /// Decided at publish time: routed in memory (true), or its store write failed (false).
    Done(bool),
    /// Waits for the fsync of the message's record.
    Durable(SyncTicket, Arc<Store>),
}

impl Confirm {
    /// True once the message is safe (routed in memory, or fsync'd for durable queues); false
    /// when its store write failed, as a `basic.nack` would say.
    pub async fn wait(self) -> bool {
        match self {
            Confirm::Done(ok) => ok,
            Confirm::Durable(t, store) => match store.wait_durable(t).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("in-process publish not stored: {e}");
                    false
                }
            },
        }
    }
}

impl LocalClient {
    /// Opens a channel on `vhost`; deliveries to its consumers arrive on the returned receiver.
    pub fn open(
        broker: &Broker,
        vhost: &str,
    ) -> Result<(LocalClient, UnboundedReceiver<LocalDelivery>), AmqpError> {
        let vhost = broker.vhost(vhost)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let client = LocalClient {
            vhost,
            conn_id: broker.connection_id(),
            link: ChannelLink::new_local(Outbox::new(), tx),
            consumers: Mutex::new(Vec::new()),
        };
        Ok((client, rx))
    }

    /// queue.declare (not passive, not exclusive, not auto-delete), with the same equivalence
    /// checks as over AMQP.
    pub fn declare_queue(
        &self,
        name: &str,
        durable: bool,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        let d = qu::Declare {
            queue: name.into(),
            passive: false,
            durable,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        };
        self.vhost.declare_queue(&d, self.conn_id).map(|_| ())
    }

    /// basic.consume (not exclusive, acks required) with per-consumer `prefetch` (0 = none).
    pub fn consume(&self, queue: &str, prefetch: u16) -> Result<(), AmqpError> {
        let q = self.vhost.queue(queue)?;
        q.check_owner(self.conn_id)?;
        let consumer = Arc::new(Consumer {
            tag: vhost::consumer_tag(),
            channel: self.link.clone(),
            no_ack: false,
            exclusive: false,
            prefetch,
            unacked: Default::default(),
            cancel_notify: false,
        });
        // Registered first: the queue delivers from inside add_consumer.
        self.consumers.lock().push((q.clone(), consumer.clone()));
        if let Err(e) = q.add_consumer(consumer.clone(), || {}) {
            self.consumers
                .lock()
                .retain(|(_, c)| !Arc::ptr_eq(c, &consumer));
            return Err(e);
        }
        Ok(())
    }

    /// basic.publish (not mandatory): routes the message and returns its confirm.
    pub fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: AMQPProperties,
        body: Bytes,
    ) -> Result<Confirm, AmqpError> {
        let x = self.vhost.exchange(exchange)?;
        if x.spec.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                x.spec.name, self.vhost.name
            )));
        }
        let header = encode::header_payload(&properties, body.len() as u64);
        let msg = Arc::new(Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            properties,
            header: header.into(),
            body,
        });
        let mut targets = Vec::new();
        self.vhost.route(
            &x,
            routing_key,
            msg.properties.headers().as_ref(),
            &mut targets,
        );
        let persistence = self.vhost.persistence();
        let awaiting = crate::outbox::batch(|| {
            enqueue(persistence, &mut targets, &msg, &mut Vec::new(), false)
        });
        Ok(match (awaiting, persistence) {
            (None, _) => Confirm::Done(true),
            (Some(Awaiting::Ticket(t)), Some(p)) => Confirm::Durable(t, p.store.clone()),
            (Some(_), _) => Confirm::Done(false),
        })
    }

    /// basic.ack; `multiple` settles every delivery up to `tag`.
    pub fn ack(&self, tag: u64, multiple: bool) -> Result<(), AmqpError> {
        let taken = self
            .link
            .settle(tag, multiple)
            .ok_or_else(|| unknown_tag(tag))?;
        forget_all(&taken);
        self.drive();
        Ok(())
    }

    /// basic.nack of one delivery: back to its queue (at its old position, redelivered) or, with
    /// `requeue` false, dropped.
    pub fn nack(&self, tag: u64, requeue: bool) -> Result<(), AmqpError> {
        let taken = self
            .link
            .settle(tag, false)
            .ok_or_else(|| unknown_tag(tag))?;
        if requeue {
            requeue_all(taken);
        } else {
            forget_all(&taken);
        }
        self.drive();
        Ok(())
    }

    /// Credit was freed: let the consumed queues deliver again.
    fn drive(&self) {
        let queues: Vec<Arc<Queue>> = self
            .consumers
            .lock()
            .iter()
            .map(|(q, _)| q.clone())
            .collect();
        crate::outbox::batch(|| {
            for q in queues {
                q.drive();
            }
        });
    }

    /// True when a queue this client consumes from was deleted (its consumer went with it).
    pub fn lost_a_queue(&self) -> bool {
        self.consumers.lock().iter().any(|(q, _)| q.is_deleted())
    }

    /// Closes the channel: consumers are removed and unacked deliveries requeued.
    pub fn close(&self) {
        self.link.outbox.close();
        let consumers = std::mem::take(&mut *self.consumers.lock());
        close_link(&self.link, &self.vhost, consumers);
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        self.close();
    }
}
