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
use crate::vhost::VHost;

/// State shared by all connections.
pub struct Broker {
    pub config: BrokerConfig,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection: AtomicU64,
    pub alarms: Alarms,
    pub alarm_setter: AlarmSetter,
}

impl Broker {
    /// A broker with the configured vhosts, each holding its predeclared exchanges.
    pub fn new(config: BrokerConfig) -> Arc<Self> {
        let slow = config.queue_slow_bytes as usize;
        let vhosts = config
            .vhosts
            .iter()
            .map(|v| (v.clone(), VHost::new(v, slow)))
            .collect();
        let (alarm_setter, alarms) = alarm::channel();
        Arc::new(Broker {
            config,
            vhosts,
            next_connection: AtomicU64::new(1),
            alarms,
            alarm_setter,
        })
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
