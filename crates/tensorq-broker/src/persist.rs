//! The broker's side of durability: the message envelope written to the store, snapshots of
//! durable definitions, and recovery of both into vhosts on start.
//!
//! The store (`tensorq-store`) treats payloads as opaque bytes and definitions as plain records;
//! this module owns how a [`Message`] and the broker's exchanges, queues and bindings map onto
//! them. It does not own the log format, group commit or recovery scanning (the store's), nor
//! queue behaviour (the queue's).

use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::frame::{decode_frame, InFrame};
use tensorq_amqp::{encode, FieldTable, ShortString};
use tensorq_store::{BindingDef, Definitions, DestinationKind, ExchangeDef, QueueDef, Store};

use crate::exchange::Destination;
use crate::message::Message;
use crate::vhost::VHost;

/// The envelope format version, the first byte of every payload.
const ENVELOPE_V1: u8 = 1;

/// Encodes a message for the store: version, exchange and routing key (length-prefixed), then
/// a content header frame carrying the message's encoded header (its properties), then the
/// body.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let mut out = encode_head(msg, msg.body.len());
    out.extend_from_slice(&msg.body);
    out
}

/// The envelope of [`encode_message`] without the body (which follows it), in a buffer with
/// room for `extra` more bytes.
pub fn encode_head(msg: &Message, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + extra);
    out.push(ENVELOPE_V1);
    for s in [&msg.exchange, &msg.routing_key] {
        out.push(s.as_str().len() as u8);
        out.extend_from_slice(s.as_str().as_bytes());
    }
    // The message's encoded header as it is (its body size field is not read back).
    let mut header = Vec::new();
    encode::content_raw(
        &mut header,
        0,
        &msg.header,
        &[],
        tensorq_amqp::limits::FRAME_MAX,
    );
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out
}

/// Decodes what [`encode_message`] wrote. The body is a zero-copy slice of `payload`.
pub fn decode_message(payload: Bytes) -> Result<Message, String> {
    let mut at = 0usize;
    let byte = |at: usize| payload.get(at).copied().ok_or("envelope truncated");
    if byte(at)? != ENVELOPE_V1 {
        return Err(format!("unknown envelope version {}", byte(at)?));
    }
    at += 1;
    let text = |at: &mut usize| -> Result<ShortString, String> {
        let n = byte(*at)? as usize;
        let s = payload
            .get(*at + 1..*at + 1 + n)
            .ok_or("envelope truncated")?;
        *at += 1 + n;
        Ok(ShortString::from(String::from_utf8_lossy(s).into_owned()))
    };
    let exchange = text(&mut at)?;
    let routing_key = text(&mut at)?;
    let len_bytes: [u8; 4] = payload
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or("envelope truncated")?;
    let hlen = u32::from_be_bytes(len_bytes) as usize;
    at += 4;
    let header = payload.get(at..at + hlen).ok_or("envelope truncated")?;
    let mut buf = BytesMut::from(header);
    let (parsed, raw) = match decode_frame(&mut buf, tensorq_amqp::limits::FRAME_MAX) {
        Ok(Some(InFrame::Header(_, h, raw))) => (h, raw),
        _ => return Err("envelope holds no valid content header".into()),
    };
    let body = payload.slice(at + hlen..);
    // Envelopes written before headers were kept raw carry body size 0: encode those anew.
    let header = if parsed.body_size == body.len() as u64 {
        raw
    } else {
        encode::header_payload(&parsed.properties, body.len() as u64).into()
    };
    Ok(Message {
        exchange,
        routing_key,
        header,
        properties: parsed.properties,
        body,
    })
}

fn to_json(t: &FieldTable) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

/// Arguments saved by [`to_json`]; an unreadable value becomes an empty table (logged).
pub fn from_json(v: &serde_json::Value) -> FieldTable {
    if v.is_null() {
        return FieldTable::default();
    }
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        tracing::warn!("unreadable saved arguments {v}: {e}");
        FieldTable::default()
    })
}

/// The store and the vhosts whose durable definitions it keeps.
pub struct Persistence {
    pub store: Arc<Store>,
    vhosts: Mutex<Vec<Weak<VHost>>>,
}

fn predeclared(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

impl Persistence {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Persistence {
            store,
            vhosts: Mutex::new(Vec::new()),
        })
    }

    /// Registers a vhost whose durable entities are saved.
    pub fn add_vhost(&self, v: &Arc<VHost>) {
        self.vhosts.lock().push(Arc::downgrade(v));
    }

    /// Writes the durable definitions of every vhost (atomically, fsync'd). Called after each
    /// change to a durable exchange, queue or binding, before the client's -ok is sent.
    pub fn save_definitions(&self) -> Result<(), AmqpError> {
        // The lock also serialises concurrent snapshots so the newest one lands last.
        let vhosts = self.vhosts.lock();
        let mut defs = Definitions::default();
        for v in vhosts.iter().filter_map(Weak::upgrade) {
            let durable_queue = |name: &str| {
                v.queue(name)
                    .map(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
                    .unwrap_or(false)
            };
            let durable_exchange =
                |name: &str| v.exchange(name).map(|x| x.spec.durable).unwrap_or(false);
            for x in v.exchanges() {
                if !x.spec.durable {
                    continue;
                }
                if !predeclared(x.spec.name.as_str()) {
                    defs.exchanges.push(ExchangeDef {
                        vhost: v.name.clone(),
                        name: x.spec.name.to_string(),
                        kind: x.spec.kind.as_str().to_owned(),
                        auto_delete: x.spec.auto_delete,
                        internal: x.spec.internal,
                        arguments: to_json(&x.spec.arguments),
                    });
                }
                for b in x.bindings() {
                    let (dest, kind, ok) = match &b.destination {
                        Destination::Queue(q) => {
                            (q, DestinationKind::Queue, durable_queue(q.as_str()))
                        }
                        Destination::Exchange(e) => {
                            (e, DestinationKind::Exchange, durable_exchange(e.as_str()))
                        }
                    };
                    if ok {
                        defs.bindings.push(BindingDef {
                            vhost: v.name.clone(),
                            source: x.spec.name.to_string(),
                            destination: dest.to_string(),
                            destination_kind: kind,
                            routing_key: b.routing_key.to_string(),
                            arguments: to_json(&b.arguments),
                        });
                    }
                }
            }
            for q in v.queues() {
                if q.spec.durable && q.spec.exclusive_owner.is_none() {
                    defs.queues.push(QueueDef {
                        vhost: v.name.clone(),
                        name: q.spec.name.to_string(),
                        auto_delete: q.spec.auto_delete,
                        arguments: to_json(&q.spec.arguments),
                    });
                }
            }
        }
        self.store.save_definitions(&defs).map_err(|e| {
            tracing::error!("cannot save definitions: {e}");
            AmqpError::internal_error(format!("cannot save definitions: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorq_amqp::{AMQPProperties, AMQPValue};

    #[test]
    fn envelope_round_trip() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".into()));
        let properties = AMQPProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers)
            .with_correlation_id("c1".into());
        let body = Bytes::from_static(b"payload bytes");
        let msg = Message {
            exchange: "ex".into(),
            routing_key: "rk.a".into(),
            header: encode::header_payload(&properties, body.len() as u64).into(),
            properties,
            body,
        };
        let back = decode_message(Bytes::from(encode_message(&msg))).unwrap();
        assert_eq!(back.exchange, msg.exchange);
        assert_eq!(back.routing_key, msg.routing_key);
        assert_eq!(back.properties, msg.properties);
        assert_eq!(back.body, msg.body);
        assert_eq!(back.header, msg.header);
        assert!(decode_message(Bytes::from_static(b"\x01\x05ab")).is_err());
        assert!(decode_message(Bytes::new()).is_err());
    }

    #[test]
    fn envelopes_with_a_zero_body_size_header_get_a_correct_one() {
        // How envelopes were written before the header was stored as received.
        let properties = AMQPProperties::default().with_delivery_mode(2);
        let mut old = vec![ENVELOPE_V1, 0, 1, b'q'];
        let mut header = Vec::new();
        encode::content(&mut header, 0, &properties, &[], 131_072);
        old.extend_from_slice(&(header.len() as u32).to_be_bytes());
        old.extend_from_slice(&header);
        old.extend_from_slice(b"body");
        let back = decode_message(Bytes::from(old)).unwrap();
        assert_eq!(back.properties, properties);
        assert_eq!(&back.body[..], b"body");
        assert_eq!(
            back.header,
            Bytes::from(encode::header_payload(&properties, 4))
        );
    }
}
