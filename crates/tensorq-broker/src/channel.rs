//! One AMQP channel of a connection: its methods, publishing, consumers, confirms and
//! transactions.
//!
//! The connection task owns each [`Channel`] and calls [`Channel::handle`] for every method and
//! [`Channel::content`] for each assembled message. The part of a channel that queues touch
//! (delivery tags, unacked messages, prefetch) is its [`ChannelLink`], shared with them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tensorq_amqp::amq_protocol::protocol::{
    basic, channel as ch, confirm, exchange as ex, queue as qu, tx, AMQPClass,
};
use tensorq_amqp::assembler::{Assembler, Content};
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{encode, ShortString};

use crate::delivery::{ChannelLink, Consumer, Unacked};
use crate::exchange::Exchange;
use crate::message::{Message, Queued};
use crate::outbox::Outbox;
use crate::persist::{self, Persistence};
use crate::queue::Queue;
use crate::vhost::{self, VHost};
use tensorq_store::{SyncTicket, TicketStatus};

/// What a channel needs from its connection while handling a method.
pub struct ConnCtx<'a> {
    pub conn_id: u64,
    pub vhost: &'a Arc<VHost>,
    pub outbox: &'a Arc<Outbox>,
    pub cancel_notify: bool,
    pub exclusive_queues: &'a mut Vec<Arc<Queue>>,
    /// Queues over their backlog threshold that this connection published to in this batch.
    pub slow: &'a mut Vec<Arc<Queue>>,
    pub published: &'a mut bool,
    pub persistence: Option<&'a Arc<Persistence>>,
}

/// A publish whose confirm waits for the store.
pub(crate) enum Awaiting {
    /// Confirm once the ticket is durable (nack if its write failed).
    Ticket(SyncTicket),
    /// The write failed at append time: nack.
    Failed,
}

/// A settlement buffered by a transaction.
enum Settle {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

#[derive(Default)]
struct TxBuffer {
    publishes: Vec<(Arc<Exchange>, Arc<Message>, bool)>,
    settles: Vec<Settle>,
}

/// One open channel.
pub struct Channel {
    pub link: Arc<ChannelLink>,
    pub assembler: Assembler,
    consumers: HashMap<ShortString, (Arc<Queue>, Arc<Consumer>)>,
    /// Prefetch for consumers created from now on (basic.qos global=false).
    consumer_prefetch: u16,
    /// Some(next publish sequence number) once confirm.select was seen.
    confirm_next: Option<u64>,
    /// Highest sequence number already confirmed (acked or nacked) to the client.
    confirm_done: u64,
    /// Publishes whose confirm waits for the store, in sequence order.
    confirm_waiting: VecDeque<(u64, Awaiting)>,
    tx: Option<TxBuffer>,
    /// The last queue declared on this channel, used when a method names the queue "".
    last_queue: Option<ShortString>,
    cached_exchange: Option<Arc<Exchange>>,
    cached_queue: Option<Arc<Queue>>,
    route_buf: Vec<Arc<Queue>>,
}

fn reply(ctx: &ConnCtx<'_>, channel: u16, method: AMQPClass) {
    ctx.outbox
        .push(|out| encode::method_owned(out, channel, method));
}

impl Channel {
    pub fn new(link: Arc<ChannelLink>, max_body: u64) -> Self {
        Channel {
            link,
            assembler: Assembler::new(max_body),
            consumers: HashMap::new(),
            consumer_prefetch: 0,
            confirm_next: None,
            confirm_done: 0,
            confirm_waiting: VecDeque::new(),
            tx: None,
            last_queue: None,
            cached_exchange: None,
            cached_queue: None,
            route_buf: Vec::new(),
        }
    }

    fn id(&self) -> u16 {
        self.link.id
    }

    fn queue_name(&self, given: &ShortString) -> Result<ShortString, AmqpError> {
        if !given.as_str().is_empty() {
            return Ok(given.clone());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue").on_method(50, 0))
    }

    /// Handles a method other than channel.open / channel.close(-ok) and basic.publish.
    pub fn handle(&mut self, ctx: &mut ConnCtx<'_>, method: AMQPClass) -> Result<(), AmqpError> {
        let id = self.id();
        match method {
            AMQPClass::Channel(ch::AMQPMethod::Flow(f)) => {
                self.link.state.lock().paused = !f.active;
                reply(
                    ctx,
                    id,
                    AMQPClass::Channel(ch::AMQPMethod::FlowOk(ch::FlowOk { active: f.active })),
                );
                if f.active {
                    self.drive_consumers();
                }
            }
            AMQPClass::Channel(ch::AMQPMethod::FlowOk(_)) => {}
            AMQPClass::Exchange(ex::AMQPMethod::Declare(d)) => {
                ctx.vhost.declare_exchange(&d)?;
                if !d.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Exchange(ex::AMQPMethod::DeclareOk(ex::DeclareOk {})),
                    );
                }
            }
            AMQPClass::Exchange(ex::AMQPMethod::Delete(d)) => {
                ctx.vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                self.cached_exchange = None;
                if !d.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Exchange(ex::AMQPMethod::DeleteOk(ex::DeleteOk {})),
                    );
                }
            }
            AMQPClass::Exchange(ex::AMQPMethod::Bind(b)) => {
                ctx.vhost.bind_exchange(&b)?;
                if !b.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Exchange(ex::AMQPMethod::BindOk(ex::BindOk {})),
                    );
                }
            }
            AMQPClass::Exchange(ex::AMQPMethod::Unbind(b)) => {
                ctx.vhost.unbind_exchange(&b)?;
                if !b.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Exchange(ex::AMQPMethod::UnbindOk(ex::UnbindOk {})),
                    );
                }
            }
            AMQPClass::Queue(qu::AMQPMethod::Declare(d)) => {
                let declared = ctx.vhost.declare_queue(&d, ctx.conn_id)?;
                let name = declared.queue.name().clone();
                if declared.queue.spec.exclusive_owner.is_some()
                    && !ctx
                        .exclusive_queues
                        .iter()
                        .any(|q| Arc::ptr_eq(q, &declared.queue))
                {
                    ctx.exclusive_queues.push(declared.queue.clone());
                }
                self.last_queue = Some(name.clone());
                if !d.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Queue(qu::AMQPMethod::DeclareOk(qu::DeclareOk {
                            queue: name,
                            message_count: declared.message_count,
                            consumer_count: declared.consumer_count,
                        })),
                    );
                }
            }
            AMQPClass::Queue(qu::AMQPMethod::Bind(mut b)) => {
                b.queue = self.queue_name(&b.queue)?;
                ctx.vhost.bind_queue(&b, ctx.conn_id)?;
                if !b.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Queue(qu::AMQPMethod::BindOk(qu::BindOk {})),
                    );
                }
            }
            AMQPClass::Queue(qu::AMQPMethod::Unbind(mut b)) => {
                b.queue = self.queue_name(&b.queue)?;
                ctx.vhost.unbind_queue(&b, ctx.conn_id)?;
                reply(
                    ctx,
                    id,
                    AMQPClass::Queue(qu::AMQPMethod::UnbindOk(qu::UnbindOk {})),
                );
            }
            AMQPClass::Queue(qu::AMQPMethod::Purge(p)) => {
                let q = ctx.vhost.queue(self.queue_name(&p.queue)?.as_str())?;
                q.check_owner(ctx.conn_id)?;
                let n = q.purge();
                if !p.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Queue(qu::AMQPMethod::PurgeOk(qu::PurgeOk { message_count: n })),
                    );
                }
            }
            AMQPClass::Queue(qu::AMQPMethod::Delete(d)) => {
                let name = self.queue_name(&d.queue)?;
                let (n, consumers) =
                    ctx.vhost
                        .delete_queue(name.as_str(), d.if_unused, d.if_empty, ctx.conn_id)?;
                notify_cancelled(&consumers);
                self.cached_queue = None;
                if !d.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Queue(qu::AMQPMethod::DeleteOk(qu::DeleteOk {
                            message_count: n,
                        })),
                    );
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                if q.prefetch_count == 0 && q.global {
                    self.link.state.lock().prefetch_global = 0;
                } else if q.global {
                    self.link.state.lock().prefetch_global = q.prefetch_count;
                } else {
                    self.consumer_prefetch = q.prefetch_count;
                }
                reply(
                    ctx,
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                self.drive_consumers();
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => self.consume(ctx, c)?,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                if let Some((q, consumer)) = self.consumers.remove(&c.consumer_tag) {
                    if q.remove_consumer(&consumer) {
                        let (_, others) = ctx.vhost.remove_queue(&q);
                        notify_cancelled(&others);
                    }
                }
                if !c.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                let q = ctx.vhost.queue(self.queue_name(&g.queue)?.as_str())?;
                q.check_owner(ctx.conn_id)?;
                match q.get() {
                    Some((entry, msg, left)) => {
                        let tag = self.link.record_get(&q, &entry, g.no_ack);
                        if g.no_ack {
                            q.forget(&[&entry]);
                        }
                        let ok = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                            delivery_tag: tag,
                            redelivered: entry.redelivered,
                            exchange: msg.exchange.clone(),
                            routing_key: msg.routing_key.clone(),
                            message_count: left,
                        }));
                        let frame_max = self.link.frame_max;
                        ctx.outbox.push(|out| {
                            encode::method_owned(out, id, ok);
                            encode::content_raw(out, id, &msg.header, &msg.body, frame_max);
                        });
                    }
                    None => reply(
                        ctx,
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                    ),
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => self.settle_or_buffer(Settle::Ack {
                tag: a.delivery_tag,
                multiple: a.multiple,
            })?,
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                self.settle_or_buffer(Settle::Nack {
                    tag: n.delivery_tag,
                    multiple: n.multiple,
                    requeue: n.requeue,
                })?
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                self.settle_or_buffer(Settle::Nack {
                    tag: r.delivery_tag,
                    multiple: false,
                    requeue: r.requeue,
                })?
            }
            AMQPClass::Basic(basic::AMQPMethod::Recover(_)) => {
                self.recover();
                reply(
                    ctx,
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(_)) => self.recover(),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                if self.confirm_next.is_none() {
                    self.confirm_next = Some(1);
                }
                if !s.nowait {
                    reply(
                        ctx,
                        id,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                if self.confirm_next.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.tx = Some(TxBuffer::default());
                }
                reply(
                    ctx,
                    id,
                    AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
                );
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => {
                let buffer = self.tx.replace(TxBuffer::default()).ok_or_else(|| {
                    AmqpError::precondition_failed("channel is not transactional")
                })?;
                for (x, msg, mandatory) in buffer.publishes {
                    self.route(ctx, &x, msg, mandatory);
                }
                for s in buffer.settles {
                    self.settle(s)?;
                }
                reply(
                    ctx,
                    id,
                    AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                );
            }
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => {
                if self.tx.replace(TxBuffer::default()).is_none() {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                }
                reply(
                    ctx,
                    id,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "method {}.{} is not allowed on a channel",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                )))
            }
        }
        Ok(())
    }

    fn consume(&mut self, ctx: &mut ConnCtx<'_>, c: basic::Consume) -> Result<(), AmqpError> {
        let q = ctx.vhost.queue(self.queue_name(&c.queue)?.as_str())?;
        q.check_owner(ctx.conn_id)?;
        let tag = if c.consumer_tag.as_str().is_empty() {
            vhost::consumer_tag()
        } else {
            c.consumer_tag.clone()
        };
        if let Some((old, _)) = self.consumers.get(&tag) {
            if !old.is_deleted() {
                return Err(AmqpError::not_allowed(format!(
                    "attempt to reuse consumer tag '{tag}'"
                )));
            }
        }
        let consumer = Arc::new(Consumer {
            tag: tag.clone(),
            channel: self.link.clone(),
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch: self.consumer_prefetch,
            unacked: Default::default(),
            cancel_notify: ctx.cancel_notify,
        });
        let id = self.id();
        let nowait = c.nowait;
        let outbox = ctx.outbox.clone();
        q.add_consumer(consumer.clone(), move || {
            if !nowait {
                outbox.push(|out| {
                    encode::method_owned(
                        out,
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                            consumer_tag: tag,
                        })),
                    )
                });
            }
        })?;
        self.consumers.insert(consumer.tag.clone(), (q, consumer));
        Ok(())
    }

    /// basic.publish arrived: `immediate` is refused with 540, as RabbitMQ does.
    pub fn publish(&mut self, p: basic::Publish) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true").on_method(60, 40));
        }
        self.assembler.publish(p)
    }

    /// A message was assembled: route it (or buffer it in a transaction).
    pub fn content(&mut self, ctx: &mut ConnCtx<'_>, c: Content) -> Result<(), AmqpError> {
        let x = self.exchange(ctx.vhost, c.publish.exchange.as_str())?;
        if x.spec.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                x.spec.name, ctx.vhost.name
            ))
            .on_method(60, 40));
        }
        *ctx.published = true;
        let msg = Arc::new(Message {
            exchange: c.publish.exchange,
            routing_key: c.publish.routing_key,
            properties: c.properties,
            header: c.header_payload,
            body: c.body,
        });
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((x, msg, c.publish.mandatory));
            return Ok(());
        }
        self.route(ctx, &x, msg, c.publish.mandatory);
        Ok(())
    }

    fn exchange(&mut self, vhost: &VHost, name: &str) -> Result<Arc<Exchange>, AmqpError> {
        if let Some(x) = &self.cached_exchange {
            if x.spec.name.as_str() == name && !x.is_deleted() {
                return Ok(x.clone());
            }
        }
        let x = vhost.exchange(name).map_err(|e| e.on_method(60, 40))?;
        self.cached_exchange = Some(x.clone());
        Ok(x)
    }

    fn route(
        &mut self,
        ctx: &mut ConnCtx<'_>,
        x: &Arc<Exchange>,
        msg: Arc<Message>,
        mandatory: bool,
    ) {
        let mut targets = std::mem::take(&mut self.route_buf);
        targets.clear();
        let direct_hit = match &self.cached_queue {
            Some(q)
                if x.spec.name.as_str().is_empty()
                    && q.name() == &msg.routing_key
                    && !q.is_deleted() =>
            {
                Some(q.clone())
            }
            _ => None,
        };
        match direct_hit {
            Some(q) => targets.push(q),
            None => {
                let headers = msg.properties.headers().as_ref();
                ctx.vhost
                    .route(x, msg.routing_key.as_str(), headers, &mut targets);
                if x.spec.name.as_str().is_empty() {
                    self.cached_queue = targets.first().cloned();
                }
            }
        }
        if targets.is_empty() && mandatory {
            let id = self.id();
            let ret = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: tensorq_amqp::error::code::NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
                exchange: msg.exchange.clone(),
                routing_key: msg.routing_key.clone(),
            }));
            let frame_max = self.link.frame_max;
            ctx.outbox.push(|out| {
                encode::method_owned(out, id, ret);
                encode::content_raw(out, id, &msg.header, &msg.body, frame_max);
            });
        }
        // Nobody waits for the store when the publisher asked for neither confirms nor a
        // transaction: its record may then be written lazily (and never, if acked first).
        let lazy = self.confirm_next.is_none() && self.tx.is_none();
        let awaiting = enqueue(ctx.persistence, &mut targets, &msg, ctx.slow, lazy);
        self.route_buf = targets;
        if let Some(next) = self.confirm_next.as_mut() {
            let seq = *next;
            *next += 1;
            if let Some(a) = awaiting {
                self.confirm_waiting.push_back((seq, a));
            }
        }
    }

    /// True while some confirm waits for the store.
    pub fn awaits_store(&self) -> bool {
        !self.confirm_waiting.is_empty()
    }

    /// Sends every confirm that can go now: one `multiple` ack up to the first publish still
    /// waiting for the store, and a nack for each publish whose write failed.
    pub fn flush_confirms(&mut self, outbox: &Outbox, persistence: Option<&Arc<Persistence>>) {
        let Some(next) = self.confirm_next else {
            return;
        };
        let id = self.id();
        let send = |method: basic::AMQPMethod| {
            outbox.push_quiet(|out| encode::method_owned(out, id, AMQPClass::Basic(method)))
        };
        while let Some((seq, a)) = self.confirm_waiting.front() {
            let seq = *seq;
            let status = match a {
                Awaiting::Failed => TicketStatus::Failed("write failed".into()),
                Awaiting::Ticket(t) => match persistence {
                    Some(p) => p.store.ticket_status(*t),
                    None => TicketStatus::Durable,
                },
            };
            match status {
                TicketStatus::Pending => break,
                TicketStatus::Durable => {
                    self.confirm_waiting.pop_front();
                }
                TicketStatus::Failed(why) => {
                    tracing::warn!(channel = id, seq, "nacking a publish: {why}");
                    if seq > self.confirm_done + 1 {
                        send(basic::AMQPMethod::Ack(basic::Ack {
                            delivery_tag: seq - 1,
                            multiple: true,
                        }));
                    }
                    send(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    }));
                    self.confirm_done = seq;
                    self.confirm_waiting.pop_front();
                }
            }
        }
        let upto = match self.confirm_waiting.front() {
            Some((seq, _)) => seq - 1,
            None => next - 1,
        };
        if upto > self.confirm_done {
            send(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: upto,
                multiple: true,
            }));
            self.confirm_done = upto;
        }
    }

    fn settle_or_buffer(&mut self, s: Settle) -> Result<(), AmqpError> {
        if let Some(tx) = self.tx.as_mut() {
            let (tag, multiple) = match &s {
                Settle::Ack { tag, multiple } | Settle::Nack { tag, multiple, .. } => {
                    (*tag, *multiple)
                }
            };
            let known = (tag == 0 && multiple) || self.link.state.lock().unacked.contains(tag);
            if !known {
                return Err(unknown_tag(tag));
            }
            tx.settles.push(s);
            return Ok(());
        }
        self.settle(s)
    }

    fn settle(&mut self, s: Settle) -> Result<(), AmqpError> {
        let (tag, multiple, requeue) = match s {
            Settle::Ack { tag, multiple } => (tag, multiple, None),
            Settle::Nack {
                tag,
                multiple,
                requeue,
            } => (tag, multiple, Some(requeue)),
        };
        let taken = self
            .link
            .settle(tag, multiple)
            .ok_or_else(|| unknown_tag(tag))?;
        if requeue == Some(true) {
            requeue_all(taken);
        } else {
            forget_all(&taken);
        }
        self.drive_consumers();
        Ok(())
    }

    fn recover(&mut self) {
        requeue_all(self.link.take_all_unacked());
        self.drive_consumers();
    }

    fn drive_consumers(&self) {
        let mut seen: Vec<&Arc<Queue>> = Vec::new();
        for (q, _) in self.consumers.values() {
            if !seen.iter().any(|s| Arc::ptr_eq(s, q)) {
                seen.push(q);
                q.drive();
            }
        }
    }

    /// Ends the channel: consumers are removed (auto-delete queues may go), unacked messages
    /// return to their queues.
    pub fn teardown(&mut self, vhost: &VHost) {
        close_link(
            &self.link,
            vhost,
            self.consumers.drain().map(|(_, consumer)| consumer),
        );
        self.assembler.reset();
        self.tx = None;
    }
}

/// Closes a channel's delivery side (AMQP or in-process): no more deliveries, its consumers
/// leave their queues (auto-delete queues may go, cancelling others), unacked messages return
/// to their queues.
pub(crate) fn close_link(
    link: &ChannelLink,
    vhost: &VHost,
    consumers: impl IntoIterator<Item = (Arc<Queue>, Arc<Consumer>)>,
) {
    link.state.lock().closed = true;
    for (q, consumer) in consumers {
        if q.remove_consumer(&consumer) {
            let (_, others) = vhost.remove_queue(&q);
            notify_cancelled(&others);
        }
    }
    requeue_all(link.take_all_unacked());
}

/// Writes a persistent message to the store once for all the durable queues among `targets`
/// (draining it), then appends it to every target queue; queues now over their backlog
/// threshold are added to `slow`. Returns what the publish's confirm waits for: nothing for a
/// transient message, the store ticket for a stored one. A message whose write failed is not
/// put in durable queues (the publisher gets a nack and may publish again). `lazy` says that
/// nobody will wait for the ticket (see `Store::append_lazy`).
pub(crate) fn enqueue(
    persistence: Option<&Arc<Persistence>>,
    targets: &mut Vec<Arc<Queue>>,
    msg: &Arc<Message>,
    slow: &mut Vec<Arc<Queue>>,
    lazy: bool,
) -> Option<Awaiting> {
    let mut awaiting = None;
    let mut stored = None;
    if msg.persistent() {
        if let Some(p) = persistence {
            let ids: Vec<_> = targets.iter().filter_map(|q| q.store_id()).collect();
            if !ids.is_empty() {
                // A lazy record keeps a reference to the body instead of a copy.
                let appended = if lazy {
                    p.store
                        .append_lazy(&ids, &persist::encode_head(msg, 0), msg.body.clone())
                } else {
                    p.store.append(&ids, &persist::encode_message(msg))
                };
                match appended {
                    Ok((r, ticket)) => {
                        stored = Some(r);
                        awaiting = Some(Awaiting::Ticket(ticket));
                    }
                    Err(e) => {
                        tracing::error!("persistent message not stored: {e}");
                        awaiting = Some(Awaiting::Failed);
                    }
                }
            }
        }
    }
    let failed = matches!(awaiting, Some(Awaiting::Failed));
    for q in targets.drain(..) {
        let durable = q.store_id().is_some();
        if failed && durable {
            continue;
        }
        let over = q.publish(msg.clone(), if durable { stored } else { None });
        if over && !slow.iter().any(|s| Arc::ptr_eq(s, &q)) {
            slow.push(q);
        }
    }
    awaiting
}

pub(crate) fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition_failed(format!("unknown delivery tag {tag}")).on_method(60, 80)
}

/// Returns unacked messages to their queues, grouped per queue, in tag order.
pub(crate) fn requeue_all(taken: Vec<Unacked>) {
    let mut groups: Vec<(Arc<Queue>, Vec<Queued>)> = Vec::new();
    for u in taken {
        let Some(q) = u.queue.upgrade() else { continue };
        match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, &q)) {
            Some((_, v)) => v.push(u.entry),
            None => groups.push((q, vec![u.entry])),
        }
    }
    for (q, entries) in groups {
        q.requeue(entries);
    }
}

/// Records in the store that settled messages are done (acked, or rejected without requeue).
pub(crate) fn forget_all(taken: &[Unacked]) {
    let mut groups: Vec<(Arc<Queue>, Vec<&Queued>)> = Vec::new();
    for u in taken {
        if u.entry.stored().is_none() {
            continue;
        }
        let Some(q) = u.queue.upgrade() else { continue };
        match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, &q)) {
            Some((_, v)) => v.push(&u.entry),
            None => groups.push((q, vec![&u.entry])),
        }
    }
    for (q, entries) in groups {
        q.forget(&entries);
    }
}

/// Tells consumers of a deleted queue, whose clients asked for it, that they were cancelled.
pub fn notify_cancelled(consumers: &[Arc<Consumer>]) {
    for c in consumers {
        if c.cancel_notify {
            let id = c.channel.id;
            let tag = c.tag.clone();
            c.channel.outbox.push(|out| {
                encode::method_owned(
                    out,
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                        consumer_tag: tag,
                        nowait: true,
                    })),
                )
            });
        }
    }
}
