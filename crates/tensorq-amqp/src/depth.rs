//! The guard against field tables nested deeper than [`MAX_TABLE_DEPTH`].
//!
//! `amq-protocol` parses nested tables and arrays recursively and has no depth limit, so a
//! hostile 128 KiB frame holding tens of thousands of nested tables could overflow a worker
//! thread's stack and take the whole broker down. Each nesting level needs its own type marker
//! byte (`F` for a table, `A` for an array), so a payload with at most [`MAX_TABLE_DEPTH`] such
//! bytes cannot nest deeper than the limit and is parsed in place. Any other payload (rare in
//! practice: it takes over a hundred `F`/`A` bytes) is parsed on a short-lived thread with a
//! stack large enough for the largest frame, its depth is measured without recursion, and a
//! value that is too deep is dropped on that same thread.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;

use crate::error::AmqpError;
use crate::limits::MAX_TABLE_DEPTH;

/// Stack size of the thread that parses suspicious payloads: room for the deepest nesting a
/// frame of [`crate::limits::FRAME_MAX`] bytes can hold. It is reserved virtual memory; only the
/// pages touched are ever committed.
const DEEP_PARSE_STACK: usize = 512 * 1024 * 1024;

/// Values that may carry field tables.
pub trait HasTables {
    /// Every top-level field table in the value.
    fn tables(&self) -> Vec<&FieldTable>;
}

impl HasTables for AMQPClass {
    fn tables(&self) -> Vec<&FieldTable> {
        use amq_protocol::protocol::connection;
        match self {
            AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => vec![&m.client_properties],
            AMQPClass::Connection(connection::AMQPMethod::Start(m)) => vec![&m.server_properties],
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => vec![&m.arguments],
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => vec![&m.arguments],
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => vec![&m.arguments],
            AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => vec![&m.arguments],
            AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => vec![&m.arguments],
            AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => vec![&m.arguments],
            AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => vec![&m.arguments],
            _ => Vec::new(),
        }
    }
}

impl HasTables for AMQPContentHeader {
    fn tables(&self) -> Vec<&FieldTable> {
        self.properties.headers().iter().collect()
    }
}

/// The deepest nesting in `tables`, counting a top-level table as depth 1. Not recursive.
pub fn max_depth<'a>(tables: impl IntoIterator<Item = &'a FieldTable>) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&AMQPValue, usize)> = Vec::new();
    for table in tables {
        deepest = deepest.max(1);
        stack.extend(table.inner().values().map(|v| (v, 1)));
        while let Some((value, depth)) = stack.pop() {
            match value {
                AMQPValue::FieldTable(t) => {
                    deepest = deepest.max(depth + 1);
                    stack.extend(t.inner().values().map(|v| (v, depth + 1)));
                }
                AMQPValue::FieldArray(a) => {
                    deepest = deepest.max(depth + 1);
                    stack.extend(a.as_slice().iter().map(|v| (v, depth + 1)));
                }
                _ => {}
            }
        }
    }
    deepest
}

fn nesting_markers(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == b'F' || b == b'A').count()
}

/// Parses `payload` with `parse`, refusing values nested deeper than [`MAX_TABLE_DEPTH`] with
/// 502 SYNTAX_ERROR. The outer `Result` is the depth verdict, the inner one the parser's.
pub fn guarded<T, E, F>(payload: Bytes, parse: F) -> Result<Result<T, E>, AmqpError>
where
    T: HasTables + Send + 'static,
    E: Send + 'static,
    F: Fn(&[u8]) -> Result<T, E> + Send + 'static,
{
    if nesting_markers(&payload) <= MAX_TABLE_DEPTH {
        return Ok(parse(&payload));
    }
    let worker = std::thread::Builder::new()
        .name("tensorq-deep-parse".into())
        .stack_size(DEEP_PARSE_STACK)
        .spawn(move || match parse(&payload) {
            Ok(value) => {
                let depth = max_depth(value.tables());
                if depth > MAX_TABLE_DEPTH {
                    drop(value);
                    Err(depth)
                } else {
                    Ok(Ok(value))
                }
            }
            Err(e) => Ok(Err(e)),
        })
        .map_err(|e| AmqpError::internal_error(format!("cannot start parser thread: {e}")))?;
    match worker.join() {
        Ok(Ok(parsed)) => Ok(parsed),
        Ok(Err(depth)) => Err(AmqpError::syntax_error(format!(
            "field table nested {depth} deep; the limit is {MAX_TABLE_DEPTH}"
        ))),
        Err(_) => Err(AmqpError::internal_error("parser thread failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use crate::frame::decode_frame;
    use amq_protocol::types::FieldArray;
    use bytes::BytesMut;

    fn nested(depth: usize) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("leaf".into(), AMQPValue::Boolean(true));
        for _ in 1..depth {
            let mut outer = FieldTable::default();
            outer.insert("n".into(), AMQPValue::FieldTable(t));
            t = outer;
        }
        t
    }

    fn declare(arguments: FieldTable) -> AMQPClass {
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        }))
    }

    #[test]
    fn depth_is_measured() {
        assert_eq!(max_depth([&nested(1)]), 1);
        assert_eq!(max_depth([&nested(7)]), 7);
        let mut t = FieldTable::default();
        t.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(nested(2))])),
        );
        assert_eq!(max_depth([&t]), 4);
    }

    #[test]
    fn limit_is_enforced_through_the_decoder() {
        let ok = declare(nested(MAX_TABLE_DEPTH));
        let mut out = Vec::new();
        encode::method(&mut out, 1, &ok);
        let mut buf = BytesMut::from(&out[..]);
        assert!(decode_frame(&mut buf, 131_072).unwrap().is_some());

        let deep = declare(nested(MAX_TABLE_DEPTH + 1));
        let mut out = Vec::new();
        encode::method(&mut out, 1, &deep);
        let mut buf = BytesMut::from(&out[..]);
        assert_eq!(decode_frame(&mut buf, 131_072).unwrap_err().code, 502);
    }

    #[test]
    fn the_deepest_frame_does_not_overflow() {
        // Hand-built: arrays nested as deep as a full-size frame allows, each level being
        // `A` + a 4-byte length. Built as raw bytes because generating it with amq-protocol
        // would itself recurse this deep.
        let levels = 26_000usize;
        let mut table = Vec::new();
        // key "k", then `levels` nested arrays, innermost empty.
        table.extend_from_slice(&[1, b'k']);
        for i in 0..levels {
            table.push(b'A');
            let inner = ((levels - i - 1) * 5) as u32;
            table.extend_from_slice(&inner.to_be_bytes());
        }
        let mut args = (table.len() as u32).to_be_bytes().to_vec();
        args.extend_from_slice(&table);
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        payload.extend_from_slice(&args);
        let mut frame = vec![1u8, 0, 1];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(0xCE);
        assert!(frame.len() <= 131_072);
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(decode_frame(&mut buf, 131_072).unwrap_err().code, 502);
    }
}
