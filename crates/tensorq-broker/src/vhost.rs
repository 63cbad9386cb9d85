//! A virtual host: the registry of exchanges and queues, the operations that change them, and
//! resolving a publish to the set of queues it reaches.
//!
//! Every client-visible rule about names, redeclares and deletes lives here with RabbitMQ's reply
//! texts. It does not own queue contents (see [`crate::queue`]) or channel state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tensorq_amqp::amq_protocol::protocol::{exchange as ex, queue as qu};
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{AMQPValue, FieldTable, ShortString};

use crate::delivery::Consumer;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind, ExchangeSpec};
use crate::persist::Persistence;
use crate::queue::{args, Queue, QueueSpec, StoreLink};

/// Exchanges every vhost starts with.
const PREDECLARED: [(&str, ExchangeKind); 7] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
    ("amq.rabbitmq.trace", ExchangeKind::Topic),
];

/// A virtual host.
pub struct VHost {
    pub name: String,
    exchanges: RwLock<HashMap<ShortString, Arc<Exchange>>>,
    queues: RwLock<HashMap<ShortString, Arc<Queue>>>,
    slow_bytes: usize,
    persistence: Option<Arc<Persistence>>,
}

/// The outcome of queue.declare.
pub struct Declared {
    pub queue: Arc<Queue>,
    pub message_count: u32,
    pub consumer_count: u32,
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// Compares two argument tables as RabbitMQ does on redeclare.
fn same_args(what: &str, received: &FieldTable, current: &FieldTable) -> Result<(), AmqpError> {
    let keys = received
        .inner()
        .keys()
        .chain(current.inner().keys())
        .collect::<std::collections::BTreeSet<_>>();
    for k in keys {
        let (r, c) = (received.inner().get(k), current.inner().get(k));
        if r != c {
            let show = |v: Option<&AMQPValue>| {
                v.map_or("none".to_owned(), |v| format!("'{}'", value_text(v)))
            };
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{k}' for {what}: received {} but current is {}",
                show(r),
                show(c)
            )));
        }
    }
    Ok(())
}

fn same_flag(arg: &str, what: &str, received: bool, current: bool) -> Result<(), AmqpError> {
    if received == current {
        return Ok(());
    }
    Err(AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for {what}: received '{received}' but current is '{current}'"
    )))
}

impl VHost {
    /// A vhost with the predeclared exchanges.
    pub fn new(name: &str, slow_bytes: usize, persistence: Option<Arc<Persistence>>) -> Arc<Self> {
        let mut exchanges = HashMap::new();
        for (n, kind) in PREDECLARED {
            exchanges.insert(
                ShortString::from(n),
                Arc::new(Exchange::new(ExchangeSpec {
                    name: n.into(),
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: n == "amq.rabbitmq.trace",
                    arguments: FieldTable::default(),
                })),
            );
        }
        Arc::new(VHost {
            name: name.to_owned(),
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(HashMap::new()),
            slow_bytes,
            persistence,
        })
    }

    /// Saves the durable definitions when `changed` (a durable entity was affected).
    fn persist_if(&self, changed: bool) -> Result<(), AmqpError> {
        match &self.persistence {
            Some(p) if changed => p.save_definitions(),
            _ => Ok(()),
        }
    }

    fn is_durable_queue(&self, name: &str) -> bool {
        self.queues
            .read()
            .get(name)
            .is_some_and(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
    }

    /// Recreates a durable exchange found in the saved definitions.
    pub fn restore_exchange(&self, spec: ExchangeSpec) {
        self.exchanges
            .write()
            .entry(spec.name.clone())
            .or_insert_with(|| Arc::new(Exchange::new(spec)));
    }

    /// Recreates a durable queue found in the saved definitions (or in the store alone).
    pub fn restore_queue(&self, spec: QueueSpec) -> Result<Arc<Queue>, AmqpError> {
        let link = self.store_link(&spec)?;
        let q = Queue::new(spec, &self.name, self.slow_bytes, link);
        self.queues.write().insert(q.name().clone(), q.clone());
        Ok(q)
    }

    fn store_link(&self, spec: &QueueSpec) -> Result<Option<StoreLink>, AmqpError> {
        let Some(p) = &self.persistence else {
            return Ok(None);
        };
        if !spec.durable || spec.exclusive_owner.is_some() {
            return Ok(None);
        }
        let id = p
            .store
            .declare_queue(&self.name, spec.name.as_str())
            .map_err(|e| {
                AmqpError::internal_error(format!("cannot register the queue in the store: {e}"))
            })?;
        Ok(Some(StoreLink {
            persistence: p.clone(),
            id,
        }))
    }

    fn describe_exchange(&self, name: &str) -> String {
        format!("exchange '{name}' in vhost '{}'", self.name)
    }

    fn describe_queue(&self, name: &str) -> String {
        format!("queue '{name}' in vhost '{}'", self.name)
    }

    /// The exchange, or 404.
    pub fn exchange(&self, name: &str) -> Result<Arc<Exchange>, AmqpError> {
        self.exchanges
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| AmqpError::not_found(format!("no {}", self.describe_exchange(name))))
    }

    /// The queue, or 404.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>, AmqpError> {
        self.queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| AmqpError::not_found(format!("no {}", self.describe_queue(name))))
    }

    /// exchange.declare.
    pub fn declare_exchange(&self, d: &ex::Declare) -> Result<(), AmqpError> {
        let name = d.exchange.as_str();
        if d.passive {
            self.exchange(name)?;
            return Ok(());
        }
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let kind = ExchangeKind::parse(d.kind.as_str())?;
        let mut map = self.exchanges.write();
        if name.starts_with("amq.") && !map.contains_key(name) {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        if let Some(cur) = map.get(name) {
            let what = self.describe_exchange(name);
            if cur.spec.kind != kind {
                return Err(AmqpError::precondition_failed(format!(
                    "inequivalent arg 'type' for {what}: received '{}' but current is '{}'",
                    kind.as_str(),
                    cur.spec.kind.as_str()
                )));
            }
            same_flag("durable", &what, d.durable, cur.spec.durable)?;
            same_flag("auto_delete", &what, d.auto_delete, cur.spec.auto_delete)?;
            same_flag("internal", &what, d.internal, cur.spec.internal)?;
            same_args(&what, &d.arguments, &cur.spec.arguments)?;
            return Ok(());
        }
        map.insert(
            d.exchange.clone(),
            Arc::new(Exchange::new(ExchangeSpec {
                name: d.exchange.clone(),
                kind,
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: d.arguments.clone(),
            })),
        );
        drop(map);
        self.persist_if(d.durable)
    }

    /// exchange.delete. Deleting an exchange that does not exist succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on {}",
                if name.is_empty() {
                    "the default exchange".to_owned()
                } else {
                    format!("exchange '{name}'")
                }
            )));
        }
        let Some(x) = self.exchanges.read().get(name).cloned() else {
            return Ok(());
        };
        if if_unused && x.has_bindings() {
            return Err(AmqpError::precondition_failed(format!(
                "{} in use",
                self.describe_exchange(name)
            )));
        }
        self.remove_exchange(&x);
        self.persist_if(x.spec.durable)
    }

    fn remove_exchange(&self, x: &Arc<Exchange>) {
        x.mark_deleted();
        self.exchanges.write().remove(x.spec.name.as_str());
        let dest = Destination::Exchange(x.spec.name.clone());
        let others: Vec<Arc<Exchange>> = self.exchanges.read().values().cloned().collect();
        for o in others {
            if o.unbind_destination(&dest) > 0 {
                self.auto_delete_exchange(&o);
            }
        }
    }

    fn auto_delete_exchange(&self, x: &Arc<Exchange>) {
        if x.spec.auto_delete && !x.has_bindings() && !x.is_deleted() {
            self.remove_exchange(x);
        }
    }

    /// queue.declare for connection `conn`.
    pub fn declare_queue(&self, d: &qu::Declare, conn: u64) -> Result<Declared, AmqpError> {
        let counts = |q: Arc<Queue>| Declared {
            message_count: q.message_count(),
            consumer_count: q.consumer_count(),
            queue: q,
        };
        if d.passive {
            let q = self.queue(d.queue.as_str())?;
            q.check_owner(conn)?;
            return Ok(counts(q));
        }
        let name: ShortString = if d.queue.as_str().is_empty() {
            server_name()
        } else {
            d.queue.clone()
        };
        if name.as_str().starts_with("amq.") && !d.queue.as_str().is_empty() {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        args::validate(&d.arguments, d.durable, d.exclusive)?;
        let mut map = self.queues.write();
        if let Some(cur) = map.get(name.as_str()).cloned() {
            drop(map);
            cur.check_owner(conn)?;
            let what = self.describe_queue(name.as_str());
            same_flag("durable", &what, d.durable, cur.spec.durable)?;
            if d.exclusive != cur.spec.exclusive_owner.is_some() {
                return Err(AmqpError::resource_locked(format!(
                    "cannot obtain exclusive access to locked {what}. It could be originally \
                     declared on another connection or the exclusive property value does not \
                     match that of the original declaration."
                )));
            }
            same_flag("auto_delete", &what, d.auto_delete, cur.spec.auto_delete)?;
            same_args(&what, &d.arguments, &cur.spec.arguments)?;
            return Ok(counts(cur));
        }
        let spec = QueueSpec {
            name: name.clone(),
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(conn),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
        };
        let link = self.store_link(&spec)?;
        let persisted = link.is_some();
        let q = Queue::new(spec, &self.name, self.slow_bytes, link);
        map.insert(name, q.clone());
        drop(map);
        self.persist_if(persisted)?;
        Ok(counts(q))
    }

    /// queue.delete. Returns the ready count and the consumers to cancel. Deleting a queue that
    /// does not exist succeeds with 0, as in RabbitMQ.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: u64,
    ) -> Result<(u32, Vec<Arc<Consumer>>), AmqpError> {
        let Some(q) = self.queues.read().get(name).cloned() else {
            return Ok((0, Vec::new()));
        };
        q.check_owner(conn)?;
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "{} in use",
                q.describe()
            )));
        }
        if if_empty && q.message_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "{} not empty",
                q.describe()
            )));
        }
        let removed = self.remove_queue(&q);
        Ok(removed)
    }

    /// Removes a queue (delete, auto-delete, exclusive owner gone) and its bindings.
    pub fn remove_queue(&self, q: &Arc<Queue>) -> (u32, Vec<Arc<Consumer>>) {
        {
            let mut map = self.queues.write();
            match map.get(q.name().as_str()) {
                Some(cur) if Arc::ptr_eq(cur, q) => {
                    map.remove(q.name().as_str());
                }
                _ => return (0, Vec::new()),
            }
        }
        let dest = Destination::Queue(q.name().clone());
        let exchanges: Vec<Arc<Exchange>> = self.exchanges.read().values().cloned().collect();
        for x in exchanges {
            if x.unbind_destination(&dest) > 0 {
                self.auto_delete_exchange(&x);
            }
        }
        let removed = q.delete();
        if let Err(e) = self.persist_if(q.store.is_some()) {
            tracing::error!("definitions not saved after deleting {}: {e}", q.describe());
        }
        removed
    }

    fn check_bindable(&self, name: &str) -> Result<Arc<Exchange>, AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        self.exchange(name)
    }

    /// queue.bind.
    pub fn bind_queue(&self, b: &qu::Bind, conn: u64) -> Result<(), AmqpError> {
        let q = self.queue(b.queue.as_str())?;
        q.check_owner(conn)?;
        let x = self.check_bindable(b.exchange.as_str())?;
        x.bind(Binding {
            destination: Destination::Queue(b.queue.clone()),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        })?;
        self.persist_if(x.spec.durable && self.is_durable_queue(b.queue.as_str()))
    }

    /// queue.unbind. Removing a binding that does not exist succeeds.
    pub fn unbind_queue(&self, b: &qu::Unbind, conn: u64) -> Result<(), AmqpError> {
        let q = self.queue(b.queue.as_str())?;
        q.check_owner(conn)?;
        let x = self.check_bindable(b.exchange.as_str())?;
        if x.unbind(&Binding {
            destination: Destination::Queue(b.queue.clone()),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        }) {
            self.auto_delete_exchange(&x);
            return self.persist_if(x.spec.durable && self.is_durable_queue(b.queue.as_str()));
        }
        Ok(())
    }

    /// exchange.bind (source → destination).
    pub fn bind_exchange(&self, b: &ex::Bind) -> Result<(), AmqpError> {
        let dest = self.check_bindable(b.destination.as_str())?;
        let src = self.check_bindable(b.source.as_str())?;
        src.bind(Binding {
            destination: Destination::Exchange(dest.spec.name.clone()),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        })?;
        self.persist_if(src.spec.durable && dest.spec.durable)
    }

    /// exchange.unbind.
    pub fn unbind_exchange(&self, b: &ex::Unbind) -> Result<(), AmqpError> {
        let dest = self.check_bindable(b.destination.as_str())?;
        let src = self.check_bindable(b.source.as_str())?;
        if src.unbind(&Binding {
            destination: Destination::Exchange(dest.spec.name.clone()),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        }) {
            self.auto_delete_exchange(&src);
            return self.persist_if(src.spec.durable && dest.spec.durable);
        }
        Ok(())
    }

    /// The store behind this vhost's durable queues, if the broker has one.
    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// The queues a message published to `x` reaches, each once, following
    /// exchange-to-exchange bindings (cycles are cut).
    pub fn route(
        &self,
        x: &Arc<Exchange>,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        if x.spec.name.as_str().is_empty() {
            if let Some(q) = self.queues.read().get(routing_key) {
                out.push(q.clone());
            }
            return;
        }
        let mut names: Vec<ShortString> = Vec::new();
        let mut seen: Vec<ShortString> = vec![x.spec.name.clone()];
        let mut todo: Vec<Arc<Exchange>> = vec![x.clone()];
        while let Some(cur) = todo.pop() {
            cur.route(routing_key, headers, |d| match d {
                Destination::Queue(q) => {
                    if !names.contains(q) {
                        names.push(q.clone());
                    }
                }
                Destination::Exchange(e) => {
                    if !seen.contains(e) {
                        seen.push(e.clone());
                        if let Some(next) = self.exchanges.read().get(e.as_str()) {
                            todo.push(next.clone());
                        }
                    }
                }
            });
        }
        let queues = self.queues.read();
        out.extend(names.iter().filter_map(|n| queues.get(n.as_str()).cloned()));
    }

    /// Every queue, for shutdown and listings.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// Every exchange, for listings and persistence.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }
}

/// A server-generated queue name: `amq.gen-` and 22 URL-safe random characters, as RabbitMQ.
fn server_name() -> ShortString {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..22)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    ShortString::from(format!("amq.gen-{tail}"))
}

/// A server-generated consumer tag.
pub fn consumer_tag() -> ShortString {
    let s = server_name();
    ShortString::from(s.as_str().replacen("amq.gen-", "amq.ctag-", 1))
}
