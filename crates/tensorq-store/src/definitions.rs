//! Durable topology: exchanges, queues and bindings.
//!
//! Owns: the [`Definitions`] structs and the `definitions.json` file, written
//! atomically (tmp + fsync + rename + directory fsync). Does not own: deciding
//! what is durable (the broker passes only durable entities; transient ones
//! are never stored) or converting AMQP field tables (the broker maps them to
//! JSON values).

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsutil::write_atomic;

/// File name of the definitions inside the data directory.
pub const DEFINITIONS_FILE: &str = "definitions.json";
/// Version of the definitions file envelope.
pub const DEFINITIONS_FORMAT: u32 = 1;

/// All durable entities of the broker. Everything listed here is durable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    /// Durable exchanges.
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    /// Bindings whose source and destination are both durable.
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Virtual host.
    pub vhost: String,
    /// Exchange name.
    pub name: String,
    /// Exchange type: `direct`, `fanout`, `topic`, `headers`, or a plugin type.
    pub kind: String,
    /// Delete when the last binding is removed.
    #[serde(default)]
    pub auto_delete: bool,
    /// Not publishable by clients.
    #[serde(default)]
    pub internal: bool,
    /// Declare arguments, as a JSON value converted from the AMQP table.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Delete when the last consumer goes away.
    #[serde(default)]
    pub auto_delete: bool,
    /// Declare arguments (`x-message-ttl`, `x-max-length`, ...).
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// What a binding points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// `queue.bind`.
    Queue,
    /// `exchange.bind`.
    Exchange,
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    /// Virtual host.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// Kind of destination.
    pub destination_kind: DestinationKind,
    /// Routing / binding key.
    pub routing_key: String,
    /// Binding arguments (headers-exchange matching etc.).
    #[serde(default)]
    pub arguments: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    definitions: Definitions,
}

/// Atomically write `defs` to `dir/definitions.json`.
pub(crate) fn save(dir: &Path, defs: &Definitions) -> Result<()> {
    let env = Envelope {
        format: DEFINITIONS_FORMAT,
        definitions: defs.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&env).map_err(|source| StoreError::Json {
        path: dir.join(DEFINITIONS_FILE),
        source,
    })?;
    write_atomic(dir, DEFINITIONS_FILE, &bytes)
}

/// Load `dir/definitions.json`; an absent file means no definitions.
pub(crate) fn load(dir: &Path) -> Result<Definitions> {
    let path = dir.join(DEFINITIONS_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Definitions::default()),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let env: Envelope = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
        path: path.clone(),
        source,
    })?;
    if env.format != DEFINITIONS_FORMAT {
        return Err(StoreError::Corrupt {
            path,
            what: "definitions",
            detail: format!("unsupported format {}", env.format),
        });
    }
    Ok(env.definitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Definitions {
        Definitions {
            exchanges: vec![ExchangeDef {
                vhost: "/".into(),
                name: "orders".into(),
                kind: "topic".into(),
                auto_delete: false,
                internal: false,
                arguments: serde_json::json!({"alternate-exchange": "ae"}),
            }],
            queues: vec![QueueDef {
                vhost: "/".into(),
                name: "q1".into(),
                auto_delete: false,
                arguments: serde_json::json!({"x-max-length": 10}),
            }],
            bindings: vec![BindingDef {
                vhost: "/".into(),
                source: "orders".into(),
                destination: "q1".into(),
                destination_kind: DestinationKind::Queue,
                routing_key: "eu.#".into(),
                arguments: serde_json::Value::Null,
            }],
        }
    }

    #[test]
    fn save_load_round_trip_and_missing_is_empty() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        assert_eq!(load(d.path())?, Definitions::default());
        save(d.path(), &sample())?;
        assert_eq!(load(d.path())?, sample());
        let mut two = sample();
        two.queues.clear();
        save(d.path(), &two)?;
        assert_eq!(load(d.path())?, two);
        Ok(())
    }

    #[test]
    fn garbage_file_is_a_typed_error() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let p = d.path().join(DEFINITIONS_FILE);
        fs::write(&p, b"{not json").map_err(|e| StoreError::io(&p, e))?;
        assert!(matches!(load(d.path()), Err(StoreError::Json { .. })));
        Ok(())
    }
}
