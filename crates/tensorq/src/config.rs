//! Configuration layering for the binary: defaults in code, then a TOML file, then `TENSORQ_*`
//! environment variables, then command-line flags, each overriding the one before.
//!
//! Every layer is merged as TOML values before one final deserialisation, so the file, the
//! environment and the flags accept exactly the same keys, and unknown keys fail with a message
//! that names them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tensorq_broker::BrokerConfig;
use toml::{Table, Value};

/// The environment prefix: `TENSORQ_MAX_MESSAGE_SIZE=1000` sets `max_message_size`. Other
/// `TENSORQ_*` variables (`TENSORQ_LOG`, those of the test scripts) are not settings and are
/// left alone.
const ENV_PREFIX: &str = "TENSORQ_";

fn merge(base: &mut Table, top: Table) {
    for (k, v) in top {
        base.insert(k, v);
    }
}

/// A scalar from the environment or a flag: TOML syntax if it parses (numbers, booleans,
/// arrays), a plain string otherwise.
fn scalar(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

/// Builds the configuration from every layer. `flags` are (key, raw value) pairs.
pub fn load(file: Option<&Path>, flags: &[(&str, String)]) -> Result<BrokerConfig> {
    let mut table = Table::try_from(BrokerConfig::default()).context("serialising defaults")?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let from_file: Table = text
            .parse()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        merge(&mut table, from_file);
    }
    let mut from_env = Table::new();
    for (k, v) in std::env::vars() {
        if let Some(key) = k.strip_prefix(ENV_PREFIX) {
            let key = key.to_ascii_lowercase();
            if BrokerConfig::KEYS.contains(&key.as_str()) {
                from_env.insert(key, scalar(&v));
            }
        }
    }
    merge(&mut table, from_env);
    let mut from_flags = Table::new();
    for (k, v) in flags {
        from_flags.insert((*k).to_owned(), scalar(v));
    }
    merge(&mut table, from_flags);
    let config: BrokerConfig = Value::Table(table)
        .try_into()
        .context("invalid configuration")?;
    if !(0.0..=1.0).contains(&config.memory_high_watermark) {
        bail!(
            "memory_high_watermark must be a fraction between 0 and 1, got {}",
            config.memory_high_watermark
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("tensorq-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\nheartbeat = 5\n").unwrap();
        let c = load(Some(&file), &[("listen", "127.0.0.1:2".into())]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.heartbeat, 5);
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = format!("{:#}", load(Some(&file), &[]).unwrap_err());
        assert!(err.contains("lisen"), "{err}");
    }
}
