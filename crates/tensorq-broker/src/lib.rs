//! tensorq's AMQP 0-9-1 broker.
//!
//! This crate owns vhosts, exchanges, queues, routing, consumers and the tokio server. The wire
//! format (frames, codecs, content assembly, reply codes) is `tensorq-amqp`'s; durable storage
//! sits beneath the queues (`tensorq-store`). Follow a message: [`server`] accepts a socket,
//! [`connection`] decodes frames and hands methods to a [`channel`], which routes a published
//! message through an [`exchange`] of its [`vhost`] to each [`queue`], which delivers it through
//! a consumer's [`delivery`] link into that client's [`outbox`].

pub mod alarm;
pub mod broker;
pub mod channel;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod exchange;
pub mod local;
pub mod message;
pub mod outbox;
pub mod persist;
pub mod queue;
pub mod server;
pub mod shutdown;
pub mod unacked;
pub mod vhost;

pub use broker::{Broker, BrokerError};
pub use config::{BrokerConfig, UserConfig};
pub use server::{RunningServer, Server, ServerError};
