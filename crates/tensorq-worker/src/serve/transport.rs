//! How the serving worker reaches its broker: over AMQP with `lapin` (`tensorq worker serve`,
//! against tensorq or RabbitMQ), or in-process through the broker's queues (`tensorq server
//! --serve`). The worker loop (`worker`) is written once against [`Transport`] and sees every
//! request as a [`Request`]; both transports give the same guarantees: a publish's confirm
//! resolves when the broker has taken responsibility for the message, and an unacked request
//! goes back to its queue when the worker goes away.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tensorq_broker::local::LocalClient;

/// A request as the worker sees it, whichever way it arrived.
pub struct Request {
    pub tag: u64,
    pub properties: BasicProperties,
    pub body: Bytes,
}

/// A message the worker publishes (a reply, an error reply or a parked request).
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Resolves to true once the broker confirmed a publish, false on a nack or failure.
pub type Confirm = Pin<Box<dyn Future<Output = bool> + Send>>;

/// A broker connection as the worker loop uses it.
pub trait Transport: Send + Sync + 'static {
    /// Publishes one message; the returned future waits for its confirm.
    fn publish(&self, msg: Outgoing) -> impl Future<Output = Result<Confirm, String>> + Send;

    /// Acks every request up to and including `tag`.
    fn ack_through(&self, tag: u64) -> impl Future<Output = Result<(), String>> + Send;

    /// Returns one request to its queue.
    fn requeue(&self, tag: u64) -> impl Future<Output = Result<(), String>> + Send;

    /// Completes when the consumer can no longer receive anything (its queue was deleted).
    /// Over AMQP the delivery stream ends instead, so this never completes there.
    fn lost(&self) -> impl Future<Output = ()> + Send;
}

/// `lapin` on a channel in confirm mode.
pub struct Amqp(pub Channel);

impl Transport for Amqp {
    async fn publish(&self, msg: Outgoing) -> Result<Confirm, String> {
        let pending = self
            .0
            .basic_publish(
                msg.exchange.as_str().into(),
                msg.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &msg.body,
                msg.properties,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::pin(async move {
            match pending.await {
                Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => true,
                Ok(Confirmation::Nack(_)) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "publisher confirm failed");
                    false
                }
            }
        }))
    }

    async fn ack_through(&self, tag: u64) -> Result<(), String> {
        self.0
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| e.to_string())
    }

    async fn requeue(&self, tag: u64) -> Result<(), String> {
        self.0
            .basic_nack(
                tag,
                BasicNackOptions {
                    requeue: true,
                    multiple: false,
                },
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn lost(&self) {
        std::future::pending::<()>().await
    }
}

/// The broker's in-process client (see `tensorq_broker::local`).
pub struct InProcess(pub LocalClient);

/// How often an in-process worker checks that its queue still exists.
const QUEUE_CHECK: Duration = Duration::from_secs(1);

impl Transport for InProcess {
    async fn publish(&self, msg: Outgoing) -> Result<Confirm, String> {
        let confirm = self
            .0
            .publish(
                &msg.exchange,
                &msg.routing_key,
                msg.properties,
                Bytes::from(msg.body),
            )
            .map_err(|e| e.to_string())?;
        Ok(Box::pin(confirm.wait()))
    }

    async fn ack_through(&self, tag: u64) -> Result<(), String> {
        self.0.ack(tag, true).map_err(|e| e.to_string())
    }

    async fn requeue(&self, tag: u64) -> Result<(), String> {
        self.0.nack(tag, true).map_err(|e| e.to_string())
    }

    async fn lost(&self) {
        loop {
            tokio::time::sleep(QUEUE_CHECK).await;
            if self.0.lost_a_queue() {
                return;
            }
        }
    }
}
