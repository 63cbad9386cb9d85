//! The broker: configuration, virtual hosts, users and alarms, shared by every connection.
//!
//! It owns nothing per connection; see [`crate::connection`] for that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tensorq_amqp::auth::Credentials;
use tensorq_amqp::error::AmqpError;

use crate::alarm::{self, AlarmSetter, Alarms};
use crate::config::BrokerConfig;
use crate::exchange::{Binding, Destination, ExchangeKind, ExchangeSpec};
use crate::persist::{from_json, Persistence};
use crate::queue::QueueSpec;
use crate::vhost::VHost;
use tensorq_store::{DestinationKind, RecoveredState, Store, StoreOptions};

/// Errors opening the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid sync policy '{value}': {reason}")]
    SyncPolicy { value: String, reason: String },
    #[error("invalid lazy_write_ms {value}: must be within 0..={max}")]
    LazyWrite { value: u64, max: u128 },
    // Not a `#[source]`: the message already carries the store's reason, and error reports
    // that walk the chain would print it twice.
    #[error("cannot open the data dir: {0}")]
    Store(tensorq_store::StoreError),
    #[error("recovery failed: {0}")]
    Recovery(String),
}

impl From<tensorq_store::StoreError> for BrokerError {
    fn from(e: tensorq_store::StoreError) -> Self {
        BrokerError::Store(e)
    }
}

/// State shared by all connections.
pub struct Broker {
    pub config: BrokerConfig,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection: AtomicU64,
    pub alarms: Alarms,
    pub alarm_setter: AlarmSetter,
    /// The durable store, when the broker has a data dir.
    pub persistence: Option<Arc<Persistence>>,
}

impl Broker {
    /// A broker with the configured vhosts, each holding its predeclared exchanges, and without
    /// a data dir (nothing persists). For tests and embedding.
    pub fn new(mut config: BrokerConfig) -> Arc<Self> {
        config.data_dir = None;
        Self::build(config, None)
    }

    /// Opens the broker: takes the data dir (if configured), recovers durable definitions and
    /// messages into the vhosts.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        let Some(dir) = config.data_dir.clone() else {
            return Ok(Self::build(config, None));
        };
        let sync = config
            .sync
            .parse()
            .map_err(
                |e: tensorq_store::ParsePolicyError| BrokerError::SyncPolicy {
                    value: config.sync.clone(),
                    reason: e.to_string(),
                },
            )?;
        let lazy_write_delay = std::time::Duration::from_millis(config.lazy_write_ms);
        let max = tensorq_store::options::MAX_LAZY_WRITE_DELAY;
        if lazy_write_delay > max {
            return Err(BrokerError::LazyWrite {
                value: config.lazy_write_ms,
                max: max.as_millis(),
            });
        }
        let opts = StoreOptions {
            sync,
            lazy_write_delay,
            disk_free_limit: config.disk_free_limit,
            ..StoreOptions::default()
        };
        let (store, recovered) = Store::open(&dir, opts)?;
        let persistence = Persistence::new(Arc::new(store));
        let broker = Self::build(config, Some(persistence.clone()));
        broker.recover(&persistence, recovered)?;
        Ok(broker)
    }

    fn build(config: BrokerConfig, persistence: Option<Arc<Persistence>>) -> Arc<Self> {
        let slow = config.queue_slow_bytes as usize;
        let vhosts: HashMap<String, Arc<VHost>> = config
            .vhosts
            .iter()
            .map(|v| (v.clone(), VHost::new(v, slow, persistence.clone())))
            .collect();
        if let Some(p) = &persistence {
            for v in vhosts.values() {
                p.add_vhost(v);
            }
        }
        let (alarm_setter, alarms) = alarm::channel();
        Arc::new(Broker {
            config,
            vhosts,
            next_connection: AtomicU64::new(1),
            alarms,
            alarm_setter,
            persistence,
        })
    }

    /// Rebuilds durable exchanges, queues and bindings, then puts the recovered messages back
    /// into their queues in order.
    fn recover(&self, p: &Arc<Persistence>, rec: RecoveredState) -> Result<(), BrokerError> {
        let started = std::time::Instant::now();
        let defs = p.store.load_definitions()?;
        let vhost = |name: &str| {
            self.vhosts.get(name).cloned().ok_or_else(|| {
                BrokerError::Recovery(format!(
                    "saved definitions name vhost '{name}', which is not configured"
                ))
            })
        };
        for x in &defs.exchanges {
            let Ok(kind) = ExchangeKind::parse(&x.kind) else {
                tracing::warn!(exchange = %x.name, kind = %x.kind, "skipping a saved exchange of unknown type");
                continue;
            };
            vhost(&x.vhost)?.restore_exchange(ExchangeSpec {
                name: x.name.as_str().into(),
                kind,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: from_json(&x.arguments),
            });
        }
        for q in &defs.queues {
            vhost(&q.vhost)?
                .restore_queue(QueueSpec {
                    name: q.name.as_str().into(),
                    durable: true,
                    exclusive_owner: None,
                    auto_delete: q.auto_delete,
                    arguments: from_json(&q.arguments),
                })
                .map_err(|e| BrokerError::Recovery(e.text))?;
        }
        for b in &defs.bindings {
            let v = vhost(&b.vhost)?;
            let Ok(x) = v.exchange(&b.source) else {
                tracing::warn!(source = %b.source, "skipping a saved binding from a missing exchange");
                continue;
            };
            let destination = match b.destination_kind {
                DestinationKind::Queue => Destination::Queue(b.destination.as_str().into()),
                DestinationKind::Exchange => Destination::Exchange(b.destination.as_str().into()),
            };
            let bound = x.bind(Binding {
                destination,
                routing_key: b.routing_key.as_str().into(),
                arguments: from_json(&b.arguments),
            });
            if let Err(e) = bound {
                tracing::warn!(source = %b.source, "skipping a saved binding: {}", e.text);
            }
        }
        let mut messages = 0usize;
        for rq in rec.queues {
            let v = vhost(&rq.vhost)?;
            let q = match v.queue(&rq.name) {
                Ok(q) => q,
                Err(_) if rq.messages.is_empty() => {
                    let _ = p.store.delete_queue(rq.id);
                    continue;
                }
                Err(_) => {
                    tracing::warn!(queue = %rq.name, count = rq.messages.len(),
                        "messages for a queue missing from the definitions: recreating it");
                    v.restore_queue(QueueSpec {
                        name: rq.name.as_str().into(),
                        durable: true,
                        exclusive_owner: None,
                        auto_delete: false,
                        arguments: Default::default(),
                    })
                    .map_err(|e| BrokerError::Recovery(e.text))?
                }
            };
            messages += rq.messages.len();
            let redelivered = &rq.redelivered;
            q.restore(rq.messages.iter().map(|m| (*m, redelivered.contains(m))));
        }
        tracing::info!(
            exchanges = defs.exchanges.len(),
            queues = defs.queues.len(),
            bindings = defs.bindings.len(),
            messages,
            clean_shutdown = rec.report.clean_shutdown,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered the data dir"
        );
        Ok(())
    }

    /// Closes the store cleanly (after every connection has closed and requeued what it held),
    /// recording which ready messages were delivered before so they come back redelivered.
    pub fn close_store(&self) {
        let Some(p) = &self.persistence else { return };
        let mut delivered = Vec::new();
        for v in self.vhosts.values() {
            for q in v.queues() {
                if let Some(id) = q.store_id() {
                    delivered.extend(q.redelivered_refs().into_iter().map(|r| (id, r)));
                }
            }
        }
        if let Err(e) = p.store.close(&delivered) {
            tracing::error!("store did not close cleanly: {e}");
        }
    }

    /// The memory high watermark in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.config.memory_high_watermark_bytes.unwrap_or_else(|| {
            let total = alarm::total_memory().unwrap_or(4 << 30);
            (total as f64 * self.config.memory_high_watermark) as u64
        })
    }

    /// A fresh connection id.
    pub fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// The vhost, or 530 NOT_ALLOWED as RabbitMQ answers for an unknown vhost.
    pub fn vhost(&self, name: &str) -> Result<Arc<VHost>, AmqpError> {
        self.vhosts.get(name).cloned().ok_or_else(|| {
            AmqpError::not_allowed(format!("vhost {name} not found")).on_method(10, 40)
        })
    }

    /// Every vhost.
    pub fn vhosts(&self) -> impl Iterator<Item = &Arc<VHost>> {
        self.vhosts.values()
    }

    /// Checks a login. `guest`-style users may log in only from loopback.
    pub fn authenticate(
        &self,
        mechanism: &str,
        creds: &Credentials,
        peer: IpAddr,
    ) -> Result<String, AmqpError> {
        let refused = || {
            AmqpError::login_refused(format!(
                "Login was refused using authentication mechanism {mechanism}. For details see \
                 the broker logfile."
            ))
        };
        let user = self
            .config
            .users
            .iter()
            .find(|u| u.name == creds.username)
            .ok_or_else(refused)?;
        if !constant_time_eq(user.password.as_bytes(), creds.password.as_bytes()) {
            return Err(refused());
        }
        if user.loopback_only && !peer.is_loopback() {
            tracing::warn!(user = %user.name, %peer, "login refused: user may only connect via loopback");
            return Err(AmqpError::login_refused(format!(
                "user '{}' can only connect via localhost",
                user.name
            )));
        }
        Ok(user.name.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
