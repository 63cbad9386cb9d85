//! tensorq workers: model serving and training bound to AMQP queues.
//!
//! Workers are plain AMQP 0-9-1 clients (through `lapin`). They run unchanged against the tensorq
//! broker (over loopback or embedded in its process) and against RabbitMQ, which is the scale-out
//! path for users who outgrow one machine. This crate owns batching, replies and the
//! ack-after-confirm discipline; it does not own tensors, codecs or models (`tensorq-ml`,
//! `tensorq-train`) nor any broker internals.

pub mod serve;
pub mod train;
