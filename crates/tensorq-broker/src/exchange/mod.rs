//! Exchanges: their declaration, their bindings, and routing a message to destinations.
//!
//! One file per exchange type holds its matching rule ([`direct`], [`fanout`], [`topic`],
//! [`headers`]); this module holds what they share. Destinations are names (a queue or, for
//! exchange-to-exchange bindings, another exchange); resolving names to queues and following
//! exchange-to-exchange bindings is the vhost's job.

pub mod direct;
pub mod fanout;
pub mod headers;
pub mod topic;

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{FieldTable, ShortString};

/// The four AMQP exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` of exchange.declare; an unknown type is a 503, as in RabbitMQ.
    pub fn parse(kind: &str) -> Result<Self, AmqpError> {
        match kind {
            "direct" => Ok(ExchangeKind::Direct),
            "fanout" => Ok(ExchangeKind::Fanout),
            "topic" => Ok(ExchangeKind::Topic),
            "headers" => Ok(ExchangeKind::Headers),
            other => Err(
                AmqpError::command_invalid(format!("invalid exchange type '{other}'"))
                    .on_method(40, 10),
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding sends messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(ShortString),
    Exchange(ShortString),
}

/// One binding of an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: ShortString,
    pub arguments: FieldTable,
}

/// How an exchange was declared.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    pub name: ShortString,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// An exchange and its bindings.
#[derive(Debug)]
pub struct Exchange {
    pub spec: ExchangeSpec,
    bindings: RwLock<Vec<Binding>>,
    deleted: AtomicBool,
}

impl Exchange {
    pub fn new(spec: ExchangeSpec) -> Self {
        Exchange {
            spec,
            bindings: RwLock::new(Vec::new()),
            deleted: AtomicBool::new(false),
        }
    }

    /// Adds a binding (idempotent). Headers bindings have their x-match checked (406).
    pub fn bind(&self, binding: Binding) -> Result<(), AmqpError> {
        if self.spec.kind == ExchangeKind::Headers {
            headers::check_binding(&binding.arguments)?;
        }
        let mut b = self.bindings.write();
        if !b.contains(&binding) {
            b.push(binding);
        }
        Ok(())
    }

    /// Removes a binding; true if it existed.
    pub fn unbind(&self, binding: &Binding) -> bool {
        let mut b = self.bindings.write();
        let before = b.len();
        b.retain(|x| x != binding);
        b.len() != before
    }

    /// Removes every binding to `dest`; returns how many.
    pub fn unbind_destination(&self, dest: &Destination) -> usize {
        let mut b = self.bindings.write();
        let before = b.len();
        b.retain(|x| &x.destination != dest);
        before - b.len()
    }

    pub fn has_bindings(&self) -> bool {
        !self.bindings.read().is_empty()
    }

    /// Calls `to` with each destination a message with this routing key and headers goes to.
    pub fn route(
        &self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        mut to: impl FnMut(&Destination),
    ) {
        let bindings = self.bindings.read();
        for b in bindings.iter() {
            let hit = match self.spec.kind {
                ExchangeKind::Direct => direct::matches(b.routing_key.as_str(), routing_key),
                ExchangeKind::Fanout => fanout::matches(),
                ExchangeKind::Topic => topic::matches(b.routing_key.as_str(), routing_key),
                ExchangeKind::Headers => headers::matches(&b.arguments, headers),
            };
            if hit {
                to(&b.destination);
            }
        }
    }

    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Every binding, for listings and persistence.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().clone()
    }
}
