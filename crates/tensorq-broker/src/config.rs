//! The broker's configuration: one serde struct with defaults in code.
//!
//! The binary layers a TOML file, `TENSORQ_*` environment variables and command-line flags on top
//! of these defaults (`tensorq server --print-config` shows the result). Unknown keys are
//! rejected, so a typo in a config file is an error rather than a silent default.

use serde::{Deserialize, Serialize};

/// A user allowed to log in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    /// Like RabbitMQ's default `guest`: may log in only over loopback.
    #[serde(default)]
    pub loopback_only: bool,
}

/// Broker settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest message body accepted, in bytes.
    pub max_message_size: u64,
    /// Memory high watermark as a fraction of physical RAM (RabbitMQ's default is 0.4).
    pub memory_high_watermark: f64,
    /// Absolute memory high watermark in bytes; overrides the fraction when set.
    pub memory_high_watermark_bytes: Option<u64>,
    /// A queue whose backlog exceeds this many bytes slows its publishers down.
    pub queue_slow_bytes: u64,
    /// Heartbeat interval offered to clients, in seconds.
    pub heartbeat: u16,
    /// Virtual hosts.
    pub vhosts: Vec<String>,
    /// Users.
    pub users: Vec<UserConfig>,
    /// Directory of the durable store; `None` runs without persistence (tests, embedding).
    pub data_dir: Option<std::path::PathBuf>,
    /// When publisher confirms of persistent messages are sent: `always` (after fsync),
    /// `interval=<ms>` or `never`; see docs/STORAGE.md for what each risks.
    pub sync: String,
    /// Longest time in milliseconds (0..=1000) a persistent message published without confirms
    /// or a transaction may wait in memory before it is written; one acked within that time is
    /// never written. 0 writes it at once.
    pub lazy_write_ms: u64,
    /// Below this many free bytes on the data dir's disk, publishers are blocked.
    pub disk_free_limit: u64,
}

impl BrokerConfig {
    /// Every key of the configuration, as written in TOML (kept beside the struct so the
    /// environment layer can tell a setting from an unrelated `TENSORQ_*` variable).
    pub const KEYS: [&'static str; 12] = [
        "listen",
        "max_message_size",
        "memory_high_watermark",
        "memory_high_watermark_bytes",
        "queue_slow_bytes",
        "heartbeat",
        "vhosts",
        "users",
        "data_dir",
        "sync",
        "lazy_write_ms",
        "disk_free_limit",
    ];
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "0.0.0.0:5672".into(),
            max_message_size: tensorq_amqp::limits::DEFAULT_MAX_MESSAGE_SIZE,
            memory_high_watermark: 0.4,
            memory_high_watermark_bytes: None,
            queue_slow_bytes: 256 * 1024 * 1024,
            heartbeat: tensorq_amqp::limits::HEARTBEAT_SECS,
            vhosts: vec!["/".into()],
            users: vec![UserConfig {
                name: "guest".into(),
                password: "guest".into(),
                loopback_only: true,
            }],
            data_dir: Some("./tensorq-data".into()),
            sync: "always".into(),
            lazy_write_ms: tensorq_store::options::DEFAULT_LAZY_WRITE_DELAY.as_millis() as u64,
            disk_free_limit: 50 * 1000 * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_every_field() {
        let c = BrokerConfig {
            memory_high_watermark_bytes: Some(1),
            ..BrokerConfig::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        fields.sort();
        let mut keys = BrokerConfig::KEYS.to_vec();
        keys.sort();
        assert_eq!(fields, keys);
    }
}
