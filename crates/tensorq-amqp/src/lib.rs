//! The AMQP 0-9-1 wire layer of tensorq.
//!
//! This crate owns everything between raw socket bytes and typed AMQP commands:
//! - [`frame`]: splitting a byte stream into frames with the limits enforced *before* any payload
//!   is parsed (frame size, frame-end octet, frame type), using the `amq-protocol` parsers;
//! - [`depth`]: the guard against field tables nested deeper than [`limits::MAX_TABLE_DEPTH`];
//! - [`assembler`]: content assembly (publish method, content header, body frames) per channel;
//! - [`encode`]: serialising methods and content with `amq-protocol`'s generators;
//! - [`error`]: every reply code a client can see, raised through named constructors;
//! - [`auth`]: the PLAIN and AMQPLAIN SASL responses;
//! - [`tune`]: connection parameter negotiation.
//!
//! It never hand-writes the codec: parsing and generation go through `amq-protocol`.
//! It owns no broker state (exchanges, queues, consumers): that is `tensorq-broker`.

pub mod assembler;
pub mod auth;
pub mod depth;
pub mod encode;
pub mod error;
pub mod frame;
pub mod limits;
pub mod tune;

pub use amq_protocol;
pub use amq_protocol::frame::AMQPContentHeader;
pub use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};
pub use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
