//! The discard sink: accepts AMQP connections, completes the server side of
//! the handshake, answers the setup methods a perf producer sends, acks
//! publishes when the channel is in confirm mode, and otherwise throws frames
//! away while counting publishes. It measures the load generator's own
//! ceiling with no broker in the way. Owns no routing, queueing or delivery.

use crate::args::PerfSinkArgs;
use crate::error::PerfError;
use crate::latency::Clock;
use crate::report::SinkReport;
use crate::wire::{encode, encode_method, parse_method, FrameReader, RawFrame, CLIENT_FRAME_MAX};
use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, confirm, connection, queue, AMQPClass};
use amq_protocol::types::parsing::parse_id;
use amq_protocol::types::{AMQPValue, FieldTable};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Length of the AMQP protocol header.
const PROTOCOL_HEADER_LEN: usize = 8;
/// Its first four bytes.
const PROTOCOL_MAGIC: &[u8] = b"AMQP";
/// Class and method id of basic.publish.
const BASIC_PUBLISH_IDS: (u16, u16) = (60, 40);
/// Channel limit the sink offers.
const SINK_CHANNEL_MAX: u16 = 2047;
/// How often the sink prints its rate to stderr.
const PROGRESS_TICK: Duration = Duration::from_secs(1);
/// Nanoseconds per second.
const NANOS_PER_SEC: f64 = 1e9;

#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    publishes: AtomicU64,
    bytes: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

/// Accept AMQP connections and discard what they publish; report the rate.
pub async fn run_sink(args: PerfSinkArgs) -> Result<SinkReport, PerfError> {
    let listener = TcpListener::bind(&args.listen).await?;
    eprintln!("tensorq perf sink listening on {}", listener.local_addr()?);
    let stats = Arc::new(Stats::default());
    let clock = Clock::start();
    let deadline = args
        .duration
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    let mut last_seen = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let stats = Arc::clone(&stats);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &stats, clock).await {
                        if !matches!(e, PerfError::Closed) {
                            eprintln!("sink connection ended: {e}");
                        }
                    }
                });
            }
            _ = tick.tick() => {
                let now = stats.publishes.load(Ordering::Relaxed);
                if now != last_seen {
                    eprintln!("sink: {} publishes/s", now - last_seen);
                    last_seen = now;
                }
            }
            _ = crate::producer::until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let first = stats.first_ns.load(Ordering::Relaxed);
    let last = stats.last_ns.load(Ordering::Relaxed);
    let publishes = stats.publishes.load(Ordering::Relaxed);
    let span = last.saturating_sub(first);
    Ok(SinkReport {
        connections: stats.connections.load(Ordering::Relaxed),
        publishes,
        bytes: stats.bytes.load(Ordering::Relaxed),
        elapsed_s: span as f64 / NANOS_PER_SEC,
        publish_rate: if span == 0 {
            0.0
        } else {
            publishes as f64 * NANOS_PER_SEC / span as f64
        },
    })
}

/// Per-channel confirm state.
#[derive(Debug, Default, Clone, Copy)]
struct ChannelState {
    confirm: bool,
    published: u64,
    acked: u64,
}

async fn serve(mut stream: TcpStream, stats: &Stats, clock: Clock) -> Result<(), PerfError> {
    stream.set_nodelay(true)?;
    let mut reader = FrameReader::new();
    let header = reader.take_bytes(&mut stream, PROTOCOL_HEADER_LEN).await?;
    if !header.starts_with(PROTOCOL_MAGIC) {
        return Err(PerfError::Malformed("not an AMQP protocol header".into()));
    }
    let mut out = Vec::new();
    let mut server_properties = FieldTable::default();
    server_properties.insert(
        "product".into(),
        AMQPValue::LongString("tensorq-perf-sink".into()),
    );
    let start = connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties,
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    };
    encode_method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Start(start)),
        &mut out,
    )?;
    let mut channels: HashMap<u16, ChannelState> = HashMap::new();
    let mut tuned = false;
    loop {
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = reader.fill(&mut stream).await?;
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut batch = 0u64;
        while let Some(frame) = reader.next_frame()? {
            let RawFrame::Method(ch, payload) = frame else {
                continue;
            };
            if is_publish(payload) {
                batch += 1;
                if let Some(state) = channels.get_mut(&ch) {
                    state.published += 1;
                }
                continue;
            }
            match parse_method(payload)? {
                AMQPClass::Connection(connection::AMQPMethod::StartOk(_)) if !tuned => {
                    tuned = true;
                    let tune = connection::Tune {
                        channel_max: SINK_CHANNEL_MAX,
                        frame_max: CLIENT_FRAME_MAX,
                        heartbeat: 0,
                    };
                    encode_method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Tune(tune)),
                        &mut out,
                    )?;
                }
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(_)) => {}
                AMQPClass::Connection(connection::AMQPMethod::Open(_)) => encode_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                    &mut out,
                )?,
                AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                    encode_method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                        &mut out,
                    )?;
                    stream.write_all(&out).await?;
                    record(stats, batch, clock);
                    return Ok(());
                }
                AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                    channels.insert(ch, ChannelState::default());
                    encode_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                        &mut out,
                    )?;
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    channels.remove(&ch);
                    encode_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        &mut out,
                    )?;
                }
                AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                    if let Some(state) = channels.get_mut(&ch) {
                        state.confirm = true;
                    }
                    if !s.nowait {
                        let ok =
                            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {}));
                        encode_method(ch, ok, &mut out)?;
                    }
                }
                AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
                    let name = if d.queue.as_str().is_empty() {
                        "amq.gen-sink".into()
                    } else {
                        d.queue
                    };
                    let ok = queue::DeclareOk {
                        queue: name,
                        message_count: 0,
                        consumer_count: 0,
                    };
                    encode_method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)),
                        &mut out,
                    )?;
                }
                AMQPClass::Queue(queue::AMQPMethod::Delete(_)) => {
                    let ok = queue::DeleteOk { message_count: 0 };
                    encode_method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)),
                        &mut out,
                    )?;
                }
                AMQPClass::Basic(basic::AMQPMethod::Qos(_)) => encode_method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                    &mut out,
                )?,
                AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
                    let ok = basic::ConsumeOk {
                        consumer_tag: c.consumer_tag,
                    };
                    encode_method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)),
                        &mut out,
                    )?;
                }
                AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                    let ok = basic::CancelOk {
                        consumer_tag: c.consumer_tag,
                    };
                    encode_method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)),
                        &mut out,
                    )?;
                }
                _ => {}
            }
        }
        for (ch, state) in channels.iter_mut() {
            if state.confirm && state.published > state.acked {
                let ack = basic::Ack {
                    delivery_tag: state.published,
                    multiple: true,
                };
                encode(
                    &AMQPFrame::Method(*ch, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))),
                    &mut out,
                )?;
                state.acked = state.published;
            }
        }
        record(stats, batch, clock);
    }
}

/// Whether a method payload is basic.publish (class and method ids only).
fn is_publish(payload: &[u8]) -> bool {
    parse_id(payload)
        .and_then(|(rest, class)| parse_id(rest).map(|(_, method)| (class, method)))
        .is_ok_and(|ids| ids == BASIC_PUBLISH_IDS)
}

fn record(stats: &Stats, batch: u64, clock: Clock) {
    if batch == 0 {
        return;
    }
    let now = clock.now_ns();
    let _ = stats
        .first_ns
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    stats.last_ns.fetch_max(now, Ordering::Relaxed);
    stats.publishes.fetch_add(batch, Ordering::Relaxed);
}
