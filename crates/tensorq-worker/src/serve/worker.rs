//! The AMQP side of serving: connect, declare, consume, batch, infer, reply, confirm, ack.
//!
//! Owns the per-batch pipeline and its delivery guarantees:
//! 1. a batch is filled by `batcher` (max batch or max delay since its first message);
//! 2. every message is decoded and checked against the model *of this batch* (an `Arc` taken at
//!    the start, so a hot swap never touches a running batch); bad ones become errors;
//! 3. the good ones run as one inference on a blocking thread; if that fails, each runs alone so
//!    one bad input cannot fail the others;
//! 4. replies (or error replies plus a copy to `<queue>.errors`) are published on a channel in
//!    confirm mode, the whole batch at once, and each request is acked only once the broker
//!    confirmed everything published for it; a nack or publish failure requeues the request
//!    instead (at-least-once: duplicates are possible and carry the same
//!    `x-tensorq-request-id`).
//!
//! Steps 1-2 run on the worker's loop; steps 3-4 of a batch run in a task of their own, so the
//! next batch is filled and decoded while this one is inferred (`--batches-in-flight`, default 2).
//! Batches settle strictly one after another, so acks stay in delivery order. See
//! docs/ARCHITECTURE.md for what this measured.
//!
//! The loop is written once against `transport::Transport`: `serve` runs it over AMQP with
//! `lapin`, `serve_in_process` through the broker's in-process client when the worker is
//! embedded in `tensorq server`. Does not own codecs, inference, batching rules or hot swap.

use crate::serve::batcher::{self, BatchEnd};
use crate::serve::hotswap::ModelSlot;
use crate::serve::metrics::Metrics;
use crate::serve::transport::{Amqp, Confirm, InProcess, Outgoing, Request, Transport};
use crate::serve::{QueueType, ServeConfig, ServeError};
use bytes::Bytes;
use futures_lite::{Stream, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tensorq_broker::local::LocalClient;
use tensorq_broker::Broker;
use tensorq_ml::{codec, InferResponse, OnnxModel, Prepared};
use tokio::sync::oneshot;

pub const HEADER_MODEL_NAME: &str = "x-tensorq-model-name";
pub const HEADER_MODEL_VERSION: &str = "x-tensorq-model-version";
pub const HEADER_REQUEST_ID: &str = "x-tensorq-request-id";
pub const HEADER_ERROR: &str = "x-tensorq-error";
/// Consumer tag prefix of serving workers.
pub const CONSUMER_TAG: &str = "tensorq-serve";
/// Longest error text put in a header (AMQP long strings could hold more; readers need less).
pub const MAX_ERROR_HEADER_LEN: usize = 1024;
/// AMQP delivery mode for persistent messages.
const PERSISTENT: u8 = 2;

fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> ServeError {
    move |source| ServeError::Amqp { context, source }
}

/// Connects, declares the queues and serves until `shutdown` or a connection failure.
pub async fn serve(
    broker: &str,
    config: &ServeConfig,
    slot: &Arc<ModelSlot>,
    metrics: &Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let conn = Connection::connect(broker, ConnectionProperties::default())
        .await
        .map_err(amqp("connect"))?;
    let result = serve_on(&conn, config, slot, metrics, shutdown).await;
    if let Err(e) = conn.close(200, "worker stopping".into()).await {
        tracing::debug!(error = %e, "closing connection");
    }
    result
}

async fn serve_on(
    conn: &Connection,
    config: &ServeConfig,
    slot: &Arc<ModelSlot>,
    metrics: &Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let channel = conn.create_channel().await.map_err(amqp("channel.open"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp("confirm.select"))?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(amqp("basic.qos"))?;
    declare(&channel, &config.queue, config.queue_type).await?;
    declare(&channel, &config.errors_queue(), config.queue_type).await?;
    let consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            ShortString::from(format!("{CONSUMER_TAG}-{}", std::process::id())),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("basic.consume"))?;
    tracing::info!(queue = %config.queue, prefetch = config.prefetch, "serving");
    let requests = consumer.map(|r| {
        r.map(|d| Request {
            tag: d.delivery_tag,
            properties: d.properties,
            body: Bytes::from(d.data),
        })
        .map_err(amqp("consume"))
    });
    let transport = Arc::new(Amqp(channel));
    serve_loop(transport, requests, config, slot, metrics, shutdown).await
}

/// Serves inside the broker process through its in-process client: the same loop, without
/// sockets or frames (see `tensorq_broker::local`).
pub async fn serve_in_process(
    broker: &Broker,
    config: &ServeConfig,
    slot: &Arc<ModelSlot>,
    metrics: &Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let local = |context: &'static str| {
        move |e: tensorq_amqp::error::AmqpError| ServeError::InProcess {
            context,
            reason: e.to_string(),
        }
    };
    let (client, mut deliveries) = LocalClient::open(broker, "/").map_err(local("open"))?;
    for queue in [config.queue.clone(), config.errors_queue()] {
        client
            .declare_queue(&queue, true, queue_arguments(config.queue_type))
            .map_err(local("queue.declare"))?;
    }
    client
        .consume(&config.queue, config.prefetch)
        .map_err(local("basic.consume"))?;
    tracing::info!(queue = %config.queue, prefetch = config.prefetch, "serving in process");
    let requests = futures_lite::stream::poll_fn(move |cx| {
        deliveries.poll_recv(cx).map(|d| {
            d.map(|d| {
                Ok(Request {
                    tag: d.tag,
                    properties: d.message.properties.clone(),
                    body: d.message.body.clone(),
                })
            })
        })
    });
    let transport = Arc::new(InProcess(client));
    serve_loop(transport, requests, config, slot, metrics, shutdown).await
}

/// The worker loop over any transport. The loop itself fills and decodes batches; each decoded
/// batch's tail (inference on the blocking pool, replies, confirms and acks) runs in a task of
/// its own, so the next batch is formed and decoded while the previous one is inferred. At most
/// `batches_in_flight` tails run at once, and each settles only after the one before it (see
/// [`settle`]).
async fn serve_loop<T, S>(
    transport: Arc<T>,
    requests: S,
    config: &ServeConfig,
    slot: &Arc<ModelSlot>,
    metrics: &Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    T: Transport,
    S: Stream<Item = Result<Request, ServeError>> + Unpin,
{
    let mut requests = requests.map(|r| r.map(|req| Received::new(req, metrics)));
    let mut shutdown = std::pin::pin!(shutdown);
    let lost = transport.lost();
    let mut lost = std::pin::pin!(lost);
    let config = Arc::new(config.clone());
    // Running batch tails, oldest first, and the signal the newest one gives once it settled.
    let mut tails: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
    let mut last_settled: Option<oneshot::Receiver<()>> = None;
    let result = loop {
        let first = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = &mut lost => break Err(ServeError::ConsumerClosed(config.queue.clone())),
            next = requests.next() => next,
        };
        let first = match first {
            None => break Err(ServeError::ConsumerClosed(config.queue.clone())),
            Some(Err(e)) => break Err(e),
            Some(Ok(r)) => r,
        };
        let (batch, end) = batcher::fill(first, &mut requests, config.limits).await;
        let model = slot.current();
        let decoded = decode_batch(&model, metrics, batch);
        while tails.len() >= config.batches_in_flight {
            if let Some(oldest) = tails.pop_front() {
                let _ = oldest.await;
            }
        }
        let (settled, settled_rx) = oneshot::channel();
        tails.push_back(tokio::spawn(batch_tail(
            Arc::clone(&transport),
            Arc::clone(&config),
            model,
            Arc::clone(metrics),
            decoded,
            last_settled.replace(settled_rx),
            settled,
        )));
        match end {
            BatchEnd::Full | BatchEnd::Deadline => {}
            BatchEnd::StreamEnded => break Err(ServeError::ConsumerClosed(config.queue.clone())),
            BatchEnd::StreamError(e) => break Err(e),
        }
    };
    for tail in tails {
        let _ = tail.await;
    }
    result
}

/// Everything after decoding, for one batch: infer, publish the replies, then (once the batch
/// before has settled, so acks stay in delivery order) wait for the confirms and ack.
async fn batch_tail<T: Transport>(
    transport: Arc<T>,
    config: Arc<ServeConfig>,
    model: Arc<OnnxModel>,
    metrics: Arc<Metrics>,
    decoded: Decoded,
    before: Option<oneshot::Receiver<()>>,
    settled: oneshot::Sender<()>,
) {
    let published = finish_batch(transport.as_ref(), &config, model, &metrics, decoded).await;
    if let Some(before) = before {
        // An error means the earlier tail is gone (it panicked): nothing is left to wait for.
        let _ = before.await;
    }
    settle(transport, published, metrics).await;
    let _ = settled.send(());
}

fn queue_arguments(kind: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if kind == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    args
}

async fn declare(channel: &Channel, queue: &str, kind: QueueType) -> Result<(), ServeError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            queue_arguments(kind),
        )
        .await
        .map_err(amqp("queue.declare"))?;
    Ok(())
}

/// A request with the time it reached the worker.
struct Received {
    request: Request,
    at: Instant,
}

impl Received {
    fn new(request: Request, metrics: &Metrics) -> Received {
        metrics.received();
        Received {
            request,
            at: Instant::now(),
        }
    }
}

/// What became of one request.
enum Outcome {
    Reply(Box<InferResponse>, tensorq_ml::WireFormat),
    Error { id: Option<String>, reason: String },
}

/// A batch after decoding: each request, with its outcome when decoding already decided it
/// (a bad request), and the prepared inputs of the good ones by index.
struct Decoded {
    batch: Vec<Received>,
    outcomes: Vec<Option<Outcome>>,
    good: Vec<(usize, Prepared)>,
}

/// Decodes every request of a batch and checks it against `model` (the model of this batch).
fn decode_batch(model: &OnnxModel, metrics: &Metrics, batch: Vec<Received>) -> Decoded {
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
    let mut good: Vec<(usize, Prepared)> = Vec::new();
    for (ix, r) in batch.iter().enumerate() {
        let props = &r.request.properties;
        let headers = |name: &str| header_string(props.headers().as_ref(), name);
        let content_type = props.content_type().as_ref().map(|c| c.as_str());
        let prepared = codec::decode_request(content_type, &headers, &r.request.body)
            .map_err(|e| (None, e.to_string()))
            .and_then(|req| {
                let body_id = req.id.clone();
                model.prepare(req).map_err(|e| (body_id, e.to_string()))
            });
        match prepared {
            Ok(p) => {
                good.push((ix, p));
                outcomes.push(None);
            }
            Err((body_id, reason)) => outcomes.push(Some(Outcome::Error {
                id: request_id(body_id.as_deref(), &r.request),
                reason,
            })),
        }
    }
    let now = Instant::now();
    for (ix, _) in &good {
        if let Some(r) = batch.get(*ix) {
            metrics.queue_wait(now.duration_since(r.at));
        }
    }
    Decoded {
        batch,
        outcomes,
        good,
    }
}

/// Infers the good requests of a decoded batch and publishes every outcome.
async fn finish_batch<T: Transport>(
    transport: &T,
    config: &ServeConfig,
    model: Arc<OnnxModel>,
    metrics: &Arc<Metrics>,
    decoded: Decoded,
) -> Vec<Published> {
    let Decoded {
        batch,
        mut outcomes,
        good,
    } = decoded;
    for (ix, result) in infer_all(&model, metrics, good).await {
        if let Some(slot) = outcomes.get_mut(ix) {
            *slot = Some(result);
        }
    }
    // lapin resolves each publish once its IO thread has written it; polling the whole batch's
    // publishes together lets that thread write them in one go instead of one wake-up each.
    let publishing = batch.into_iter().zip(outcomes).map(|(r, outcome)| {
        let outcome = outcome.unwrap_or_else(|| Outcome::Error {
            id: request_id(None, &r.request),
            reason: "internal: request was not processed".into(),
        });
        publish_outcome(transport, config, &model, r.request, outcome)
    });
    join_all(publishing.collect()).await
}

/// Runs the prepared requests as one batch, falling back to one-by-one if the batch fails.
async fn infer_all(
    model: &Arc<OnnxModel>,
    metrics: &Arc<Metrics>,
    good: Vec<(usize, Prepared)>,
) -> Vec<(usize, Outcome)> {
    if good.is_empty() {
        return Vec::new();
    }
    let (indices, prepared): (Vec<usize>, Vec<Prepared>) = good.into_iter().unzip();
    let formats: Vec<_> = prepared.iter().map(|p| p.format).collect();
    let n = prepared.len();
    let batch_result = {
        let model = Arc::clone(model);
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let r = model.infer_batch(&prepared);
            (r, prepared)
        })
        .await;
        match joined {
            Ok((r, prepared)) => {
                metrics.inference(n, started.elapsed());
                match r {
                    Ok(responses) if responses.len() == n => Ok(responses),
                    Ok(_) => Err((
                        prepared,
                        "batch returned the wrong number of results".to_string(),
                    )),
                    Err(e) => Err((prepared, e.to_string())),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "batched inference panicked; requests will be answered as errors");
                return indices
                    .into_iter()
                    .map(|ix| {
                        (
                            ix,
                            Outcome::Error {
                                id: None,
                                reason: format!("inference crashed: {e}"),
                            },
                        )
                    })
                    .collect();
            }
        }
    };
    match batch_result {
        Ok(responses) => indices
            .into_iter()
            .zip(responses.into_iter().zip(formats))
            .map(|(ix, (resp, f))| (ix, Outcome::Reply(Box::new(resp), f)))
            .collect(),
        Err((prepared, reason)) if n > 1 => {
            tracing::warn!(%reason, size = n, "batched inference failed; retrying one by one");
            metrics.batch_retry();
            let mut out = Vec::with_capacity(n);
            for (ix, p) in indices.into_iter().zip(prepared) {
                let model = Arc::clone(model);
                let id = p.id.clone();
                let format = p.format;
                let started = Instant::now();
                let r = tokio::task::spawn_blocking(move || model.infer_prepared(&p)).await;
                metrics.inference(1, started.elapsed());
                out.push((
                    ix,
                    match r {
                        Ok(Ok(resp)) => Outcome::Reply(Box::new(resp), format),
                        Ok(Err(e)) => Outcome::Error {
                            id,
                            reason: e.to_string(),
                        },
                        Err(e) => Outcome::Error {
                            id,
                            reason: format!("inference crashed: {e}"),
                        },
                    },
                ));
            }
            out
        }
        Err((prepared, reason)) => indices
            .into_iter()
            .zip(prepared)
            .map(|(ix, p)| {
                (
                    ix,
                    Outcome::Error {
                        id: p.id,
                        reason: reason.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// Polls every future together and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (fut, out) in pending.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// A request whose reply (or error reply and parked copy) has been published, with the
/// confirms still to come.
struct Published {
    tag: u64,
    ok: bool,
    confirms: Vec<Confirm>,
    failed: bool,
}

/// Publishes what one request produced, without waiting for the broker's confirms: a whole
/// batch is published first and [`settle`]d afterwards, so a batch costs one round trip.
async fn publish_outcome<T: Transport>(
    transport: &T,
    config: &ServeConfig,
    model: &OnnxModel,
    request: Request,
    outcome: Outcome,
) -> Published {
    let props = &request.properties;
    let reply_target = match (&config.results, props.reply_to()) {
        (Some((exchange, key)), _) => Some((exchange.clone(), key.clone())),
        (None, Some(reply_to)) => Some((String::new(), reply_to.as_str().to_string())),
        (None, None) => None,
    };
    let mut publishes: Vec<Outgoing> = Vec::new();
    let ok = matches!(outcome, Outcome::Reply(..));
    match outcome {
        Outcome::Reply(resp, format) => {
            let id = request_id(resp.id.as_deref(), &request);
            match codec::encode_response(format, &resp) {
                Ok(enc) => {
                    if let Some((ex, key)) = reply_target {
                        let p = reply_props(
                            props,
                            enc.content_type,
                            &enc.headers,
                            &resp.model_name,
                            &resp.model_version,
                            id.as_deref(),
                        );
                        publishes.push(Outgoing {
                            exchange: ex,
                            routing_key: key,
                            body: enc.body,
                            properties: p,
                        });
                    }
                }
                Err(e) => {
                    let reason = format!("cannot encode reply: {e}");
                    publishes.extend(error_publishes(
                        config,
                        model,
                        &request,
                        reply_target,
                        id.as_deref(),
                        &reason,
                    ));
                }
            }
        }
        Outcome::Error { id, reason } => {
            tracing::warn!(%reason, queue = %config.queue, "bad request parked");
            publishes.extend(error_publishes(
                config,
                model,
                &request,
                reply_target,
                id.as_deref(),
                &reason,
            ));
        }
    }
    let mut confirms = Vec::with_capacity(publishes.len());
    let mut failed = false;
    for msg in publishes {
        match transport.publish(msg).await {
            Ok(pending) => confirms.push(pending),
            Err(e) => {
                tracing::warn!(error = %e, "publish failed");
                failed = true;
            }
        }
    }
    Published {
        tag: request.tag,
        ok,
        confirms,
        failed,
    }
}

/// Waits for every confirm of a published batch, requeues each request whose publishes were not
/// all confirmed (at-least-once), then acks the rest with one `basic.ack(multiple)` on the
/// highest delivery tag: every earlier delivery on the channel is either in this batch or was
/// settled by an earlier batch, and batches settle one after another in delivery order.
async fn settle<T: Transport>(transport: Arc<T>, batch: Vec<Published>, metrics: Arc<Metrics>) {
    let mut last_ok: Option<u64> = None;
    for p in batch {
        let mut all_confirmed = !p.failed;
        for pending in p.confirms {
            all_confirmed &= pending.await;
        }
        if all_confirmed {
            metrics.answered(p.ok);
            if last_ok.is_none_or(|t| t < p.tag) {
                last_ok = Some(p.tag);
            }
        } else if let Err(e) = transport.requeue(p.tag).await {
            tracing::warn!(error = %e, "nack failed; the request will be redelivered");
        }
    }
    if let Some(tag) = last_ok {
        if let Err(e) = transport.ack_through(tag).await {
            tracing::warn!(error = %e, "ack failed; the requests will be redelivered");
        }
    }
}

fn error_publishes(
    config: &ServeConfig,
    model: &OnnxModel,
    request: &Request,
    reply_target: Option<(String, String)>,
    id: Option<&str>,
    reason: &str,
) -> Vec<Outgoing> {
    let mut out = Vec::with_capacity(2);
    if let Some((ex, key)) = reply_target {
        let enc = codec::encode_error(id, reason);
        let mut p = reply_props(
            &request.properties,
            enc.content_type,
            &enc.headers,
            model.name(),
            model.version(),
            id,
        );
        let mut h = p.headers().clone().unwrap_or_default();
        h.insert(
            HEADER_ERROR.into(),
            AMQPValue::LongString(truncate(reason).into()),
        );
        p = p.with_headers(h);
        out.push(Outgoing {
            exchange: ex,
            routing_key: key,
            body: enc.body,
            properties: p,
        });
    }
    // The original message, untouched, plus the reason.
    let mut headers = request.properties.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_ERROR.into(),
        AMQPValue::LongString(truncate(reason).into()),
    );
    let parked = request
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(PERSISTENT);
    out.push(Outgoing {
        exchange: String::new(),
        routing_key: config.errors_queue(),
        body: request.body.to_vec(),
        properties: parked,
    });
    out
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_HEADER_LEN {
        return s.to_string();
    }
    let mut end = MAX_ERROR_HEADER_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

fn reply_props(
    request: &BasicProperties,
    content_type: &str,
    codec_headers: &[(String, String)],
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in codec_headers {
        headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    headers.insert(
        HEADER_MODEL_NAME.into(),
        AMQPValue::LongString(model_name.into()),
    );
    headers.insert(
        HEADER_MODEL_VERSION.into(),
        AMQPValue::LongString(model_version.into()),
    );
    if let Some(id) = id {
        headers.insert(HEADER_REQUEST_ID.into(), AMQPValue::LongString(id.into()));
    }
    let mut p = BasicProperties::default()
        .with_content_type(content_type.into())
        .with_headers(headers)
        .with_delivery_mode(PERSISTENT);
    if let Some(c) = request.correlation_id() {
        p = p.with_correlation_id(c.clone());
    }
    p
}

/// The request id: the body's id, else the message id, else the correlation id.
fn request_id(body_id: Option<&str>, request: &Request) -> Option<String> {
    body_id
        .map(str::to_string)
        .or_else(|| {
            request
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_string())
        })
        .or_else(|| {
            request
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_string())
        })
}

/// A header value rendered as a string (strings as-is, numbers in decimal).
pub fn header_string(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let value = headers?.inner().get(name)?;
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_render_as_strings() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongString("2,8".into()));
        t.insert("b".into(), AMQPValue::LongInt(7));
        assert_eq!(header_string(Some(&t), "a").as_deref(), Some("2,8"));
        assert_eq!(header_string(Some(&t), "b").as_deref(), Some("7"));
        assert_eq!(header_string(Some(&t), "c"), None);
        assert_eq!(header_string(None, "a"), None);
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_ERROR_HEADER_LEN);
        let t = truncate(&s);
        assert!(t.len() <= MAX_ERROR_HEADER_LEN);
        assert!(s.starts_with(&t));
    }
}
