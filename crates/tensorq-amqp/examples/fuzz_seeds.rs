//! Writes the seed corpus of the `frames` fuzz target (fuzz/corpus/frames) with the real
//! encoder: a handshake start, a publish with headers split over body frames, a queue declare
//! with nested arguments, and a heartbeat.
//!
//! Run from the repository root: `cargo run -p tensorq-amqp --example fuzz_seeds`.

use std::path::Path;

use tensorq_amqp::amq_protocol::protocol::{basic, connection, queue, AMQPClass};
use tensorq_amqp::frame::PROTOCOL_HEADER;
use tensorq_amqp::{encode, AMQPProperties, AMQPValue, FieldTable};

fn main() -> std::io::Result<()> {
    let dir = Path::new("fuzz/corpus/frames");
    std::fs::create_dir_all(dir)?;

    // The first byte of each seed is the fuzz target's mode byte (even: fresh connection).
    let mut start_ok = vec![0u8];
    start_ok.extend_from_slice(&PROTOCOL_HEADER);
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("seed".into()));
    encode::method(
        &mut start_ok,
        0,
        &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    );
    std::fs::write(dir.join("handshake"), &start_ok)?;

    let mut publish = Vec::new();
    encode::method(
        &mut publish,
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "ai_queue".into(),
            mandatory: true,
            immediate: false,
        })),
    );
    let mut headers = FieldTable::default();
    headers.insert("x-tensor-shape".into(), AMQPValue::LongString("1,8".into()));
    let props = AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers)
        .with_delivery_mode(2);
    encode::content(&mut publish, 1, &props, &[b'x'; 10_000], 4096);
    let mut tagged = vec![1u8];
    tagged.extend_from_slice(&publish);
    std::fs::write(dir.join("publish"), &tagged)?;

    let mut nested = FieldTable::default();
    nested.insert("leaf".into(), AMQPValue::Boolean(true));
    let mut args = FieldTable::default();
    args.insert("x-nested".into(), AMQPValue::FieldTable(nested));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
    let mut declare = vec![1u8];
    encode::method(
        &mut declare,
        3,
        &AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: args,
        })),
    );
    encode::heartbeat(&mut declare);
    std::fs::write(dir.join("declare_heartbeat"), &declare)?;
    Ok(())
}
