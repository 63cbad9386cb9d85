//! Checks of queue arguments (`x-…`) at declare time.
//!
//! tensorq keeps every argument a client passes and compares them on redeclare. The arguments
//! below are checked for type and range as RabbitMQ does, so a typo fails at declare time
//! instead of silently doing nothing. Which ones are enforced is listed in docs/CONFORMANCE.md.

use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{AMQPValue, FieldTable};

fn as_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(*n as i64),
        AMQPValue::ShortShortUInt(n) => Some(*n as i64),
        AMQPValue::ShortInt(n) => Some(*n as i64),
        AMQPValue::ShortUInt(n) => Some(*n as i64),
        AMQPValue::LongInt(n) => Some(*n as i64),
        AMQPValue::LongUInt(n) => Some(*n as i64),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

fn as_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Validates the arguments of a queue.declare; `durable` is needed for `x-queue-type`.
pub fn validate(args: &FieldTable, durable: bool, exclusive: bool) -> Result<(), AmqpError> {
    for (key, value) in args {
        let key = key.as_str();
        let bad = |what: &str| {
            AmqpError::precondition_failed(format!("invalid arg '{key}' for queue: {what}"))
        };
        match key {
            "x-message-ttl" | "x-expires" | "x-max-length" | "x-max-length-bytes"
            | "x-max-priority" | "x-delivery-limit" => {
                let n = as_int(value).ok_or_else(|| bad("expected an integer"))?;
                let min = if key == "x-expires" { 1 } else { 0 };
                if n < min {
                    return Err(bad(&format!("{n} is below the minimum {min}")));
                }
            }
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" => {
                as_text(value).ok_or_else(|| bad("expected a string"))?;
            }
            "x-overflow" => {
                let t = as_text(value).ok_or_else(|| bad("expected a string"))?;
                if !matches!(
                    t.as_str(),
                    "drop-head" | "reject-publish" | "reject-publish-dlx"
                ) {
                    return Err(bad(&format!("unknown overflow mode '{t}'")));
                }
            }
            "x-queue-type" => {
                let t = as_text(value).ok_or_else(|| bad("expected a string"))?;
                match t.as_str() {
                    "classic" => {}
                    "quorum" | "stream" => {
                        if !durable || exclusive {
                            return Err(AmqpError::precondition_failed(format!(
                                "invalid property 'non-durable' or 'exclusive' for a {t} queue"
                            )));
                        }
                    }
                    other => return Err(bad(&format!("unknown queue type '{other}'"))),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked() {
        let mut t = FieldTable::default();
        t.insert("x-message-ttl".into(), AMQPValue::LongString("x".into()));
        assert_eq!(validate(&t, false, false).unwrap_err().code, 406);
        let mut t = FieldTable::default();
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        assert!(validate(&t, true, false).is_ok());
        assert_eq!(validate(&t, false, false).unwrap_err().code, 406);
        let mut t = FieldTable::default();
        t.insert("x-custom".into(), AMQPValue::Boolean(true));
        assert!(validate(&t, false, false).is_ok());
    }
}
