//! The AMQP intake: consumes labelled examples, makes them durable, then acks.
//!
//! Owns the consume loop over the training queue (and the optional eval queue), routing of
//! malformed messages to `<queue>.errors` (header `x-tensorq-error` = reason, published with a
//! publisher confirm, then the original is acked), the train/eval split for `--eval-fraction`
//! (by a hash of each example's key, so a redelivered example lands on the same side), and the
//! ack discipline: valid deliveries are buffered, appended to the example logs and fsync'd
//! (`store.rs`), and only then acked (one `multiple` ack up to the highest tag). A crash before
//! the fsync leaves the messages unacked, so the broker redelivers them; a crash between fsync
//! and ack causes a redelivery that the key check drops. It does not own training or artifacts.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};

use super::example::decode;
use super::store::{fnv1a, ExampleLog, Record};
use super::TrainError;

/// Header carrying the reason a message was rejected.
pub const ERROR_HEADER: &str = "x-tensorq-error";
/// Valid deliveries buffered before a forced flush (fsync + ack).
const FLUSH_BATCH: usize = 256;
/// How long to wait for more deliveries before flushing a partial buffer.
const FLUSH_WAIT: Duration = Duration::from_millis(20);

/// Counters of the intake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntakeStats {
    /// Messages received (valid or not).
    pub messages: u64,
    /// Messages sent to `<queue>.errors`.
    pub malformed: u64,
    /// Redelivered examples dropped because they were already durable.
    pub duplicates: u64,
}

/// Why `pump` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// `--window` new training examples are durable.
    Window,
    /// `--max-examples` reached.
    MaxExamples,
    /// No delivery for `--idle-timeout`.
    Idle,
}

/// Where an example is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Train,
    Eval,
}

/// When `pump` should return.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Return `Window` once the training log holds at least this many examples.
    pub window_at: Option<usize>,
    /// Return `MaxExamples` once train + eval hold at least this many examples.
    pub max_examples: Option<u64>,
    /// Return `Idle` after this long without a delivery.
    pub idle: Duration,
}

/// The consume side of the worker.
pub struct Intake {
    channel: Channel,
    publisher: Channel,
    errors_queue: String,
    train: Consumer,
    eval: Option<Consumer>,
    inputs: usize,
    eval_fraction: f64,
    pending: Vec<(Side, Record)>,
    highest_tag: Option<u64>,
    /// Counters so far.
    pub stats: IntakeStats,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("errors_queue", &self.errors_queue)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether an example key goes to the eval side under `fraction`.
pub fn is_eval_key(key: &str, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    (fnv1a(key.as_bytes()) % 1_000_000) < (fraction * 1_000_000.0) as u64
}

impl Intake {
    /// Wraps consumers already started on `channel` (`publisher` must be in confirm mode).
    pub fn new(
        channel: Channel,
        publisher: Channel,
        errors_queue: String,
        train: Consumer,
        eval: Option<Consumer>,
        inputs: usize,
        eval_fraction: f64,
    ) -> Self {
        Intake {
            channel,
            publisher,
            errors_queue,
            train,
            eval,
            inputs,
            eval_fraction,
            pending: Vec::new(),
            highest_tag: None,
            stats: IntakeStats::default(),
        }
    }

    async fn next(&mut self) -> Option<(Side, lapin::Result<Delivery>)> {
        match self.eval.as_mut() {
            None => self.train.next().await.map(|d| (Side::Train, d)),
            Some(eval) => tokio::select! {
                d = self.train.next() => d.map(|d| (Side::Train, d)),
                d = eval.next() => d.map(|d| (Side::Eval, d)),
            },
        }
    }

    /// Consumes until a limit is hit; everything received by then is durable and acked.
    pub async fn pump(
        &mut self,
        train_log: &mut ExampleLog,
        eval_log: &mut ExampleLog,
        limits: Limits,
        on_progress: &dyn Fn(&IntakeStats, usize, usize),
    ) -> Result<Pause, TrainError> {
        let mut last_delivery = Instant::now();
        loop {
            let durable = (train_log.data().len() + eval_log.data().len()) as u64;
            if self.pending.is_empty() {
                if limits
                    .window_at
                    .is_some_and(|w| train_log.data().len() >= w)
                {
                    return Ok(Pause::Window);
                }
                if limits.max_examples.is_some_and(|m| durable >= m) {
                    return Ok(Pause::MaxExamples);
                }
            }
            let wait = if self.pending.is_empty() {
                limits
                    .idle
                    .saturating_sub(last_delivery.elapsed())
                    .min(Duration::from_millis(200))
            } else {
                FLUSH_WAIT
            };
            match tokio::time::timeout(wait, self.next()).await {
                Err(_) => {
                    self.flush(train_log, eval_log).await?;
                    on_progress(&self.stats, train_log.data().len(), eval_log.data().len());
                    if last_delivery.elapsed() >= limits.idle {
                        return Ok(Pause::Idle);
                    }
                }
                Ok(None) => {
                    self.flush(train_log, eval_log).await?;
                    return Err(TrainError::ConsumerClosed);
                }
                Ok(Some((_, Err(e)))) => return Err(TrainError::Amqp(e)),
                Ok(Some((side, Ok(delivery)))) => {
                    last_delivery = Instant::now();
                    self.handle(side, delivery, train_log, eval_log).await?;
                    if self.pending.len() >= FLUSH_BATCH {
                        self.flush(train_log, eval_log).await?;
                        on_progress(&self.stats, train_log.data().len(), eval_log.data().len());
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        side: Side,
        delivery: Delivery,
        train_log: &ExampleLog,
        eval_log: &ExampleLog,
    ) -> Result<(), TrainError> {
        self.stats.messages += 1;
        let examples = match decode(&delivery.data, self.inputs) {
            Ok(e) => e,
            Err(reason) => {
                self.reject(&delivery, &reason).await?;
                delivery.ack(BasicAckOptions::default()).await?;
                self.stats.malformed += 1;
                tracing::warn!(%reason, "malformed example sent to {}", self.errors_queue);
                return Ok(());
            }
        };
        let base = match delivery.properties.message_id() {
            Some(id) => format!("id:{}", id.as_str()),
            None => format!("h:{:016x}", fnv1a(&delivery.data)),
        };
        let batched = examples.len() > 1;
        for (i, ex) in examples.into_iter().enumerate() {
            let k = if batched {
                format!("{base}#{i}")
            } else {
                base.clone()
            };
            let target = match side {
                Side::Eval => Side::Eval,
                Side::Train if is_eval_key(&k, self.eval_fraction) => Side::Eval,
                Side::Train => Side::Train,
            };
            let log = if target == Side::Eval {
                eval_log
            } else {
                train_log
            };
            let queued = self.pending.iter().any(|(_, r)| r.k == k);
            if delivery.redelivered && (log.contains(&k) || queued) {
                self.stats.duplicates += 1;
                continue;
            }
            self.pending.push((
                target,
                Record {
                    k,
                    features: ex.features,
                    label: if ex.label > 0.5 { 1 } else { 0 },
                },
            ));
        }
        self.highest_tag = Some(
            self.highest_tag
                .map_or(delivery.delivery_tag, |t| t.max(delivery.delivery_tag)),
        );
        Ok(())
    }

    async fn reject(&self, delivery: &Delivery, reason: &str) -> Result<(), TrainError> {
        let mut headers = FieldTable::default();
        headers.insert(
            ERROR_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.to_string())),
        );
        let mut props = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(2);
        if let Some(ct) = delivery.properties.content_type() {
            props = props.with_content_type(ct.clone());
        }
        if let Some(id) = delivery.properties.message_id() {
            props = props.with_message_id(id.clone());
        }
        let confirm = self
            .publisher
            .basic_publish(
                "".into(),
                self.errors_queue.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                props,
            )
            .await?
            .await?;
        if !confirm.is_ack() {
            return Err(TrainError::ErrorsQueueNack(self.errors_queue.clone()));
        }
        Ok(())
    }

    /// Appends buffered examples durably, then acks their messages.
    pub async fn flush(
        &mut self,
        train_log: &mut ExampleLog,
        eval_log: &mut ExampleLog,
    ) -> Result<(), TrainError> {
        let Some(tag) = self.highest_tag.take() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.pending);
        let (eval, train): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(side, _)| *side == Side::Eval);
        let train: Vec<Record> = train.into_iter().map(|(_, r)| r).collect();
        let eval: Vec<Record> = eval.into_iter().map(|(_, r)| r).collect();
        train_log.append_durable(&train)?;
        eval_log.append_durable(&eval)?;
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_split_is_stable_and_near_the_fraction() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("h:{i:016x}")).collect();
        let n = keys.iter().filter(|k| is_eval_key(k, 0.2)).count();
        assert!((1700..2300).contains(&n), "{n}");
        assert!(keys
            .iter()
            .all(|k| is_eval_key(k, 0.2) == is_eval_key(k, 0.2)));
        assert!(!keys.iter().any(|k| is_eval_key(k, 0.0)));
    }
}
