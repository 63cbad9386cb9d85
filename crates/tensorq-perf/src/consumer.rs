//! The pipelined consumer (and, with `respond`, the RPC responder): one
//! connection per consumer, large reads, deliveries parsed from borrowed
//! frames, acks with multiple=true every N deliveries written once per read.
//! Owns no publishing of benchmark traffic (see `producer`) and no report.

use crate::assemble::{Assembler, Completed};
use crate::conn::{check_close, close_halves, Connection, Target, DATA_CHANNEL};
use crate::error::PerfError;
use crate::latency::{Clock, Latency};
use crate::producer::until;
use crate::rpc::append_reply;
use crate::stop::Stop;
use crate::wire::{encode_method, parse_method, RawFrame};
use amq_protocol::protocol::{basic, AMQPClass};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// What one consumer does.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    /// Broker address and credentials.
    pub target: Target,
    /// Queue to consume.
    pub queue: String,
    /// basic.qos prefetch (0 = unlimited).
    pub prefetch: u16,
    /// Ack with multiple=true every this many deliveries.
    pub multi_ack: u32,
    /// Consume with no-ack.
    pub auto_ack: bool,
    /// Stop once all consumers together reached this many.
    pub total: Option<u64>,
    /// Run clock for latency.
    pub clock: Clock,
    /// Record publish-to-consume latency from body stamps.
    pub record_latency: bool,
    /// Answer each delivery as an RPC responder.
    pub respond: bool,
    /// Consumer number (for its tag).
    pub index: usize,
}

/// Counters shared by all consumers of one run.
#[derive(Debug, Default)]
pub struct ConsumeShared {
    /// Deliveries across all consumers.
    pub consumed: AtomicU64,
    /// Raised when the run's consumers should stop.
    pub stop: Stop,
}

/// What one consumer achieved.
pub struct ConsumerOutcome {
    /// Deliveries received.
    pub consumed: u64,
    /// Clock stamp of the last delivery.
    pub last_ns: u64,
    /// Publish-to-consume latency.
    pub latency: Latency,
}

/// A connected consumer (basic.consume done).
pub struct Consumer {
    plan: ConsumerPlan,
    conn: Connection,
}

impl Consumer {
    /// Connect, set qos, start consuming.
    pub async fn connect(plan: ConsumerPlan) -> Result<Self, PerfError> {
        let mut conn = Connection::open(&plan.target).await?;
        if plan.prefetch > 0 {
            conn.qos(plan.prefetch).await?;
        }
        let tag = format!("perf-consumer-{}", plan.index);
        conn.consume(&plan.queue, &tag, plan.auto_ack).await?;
        Ok(Self { plan, conn })
    }

    /// Receive until the shared total, the deadline or the stop signal.
    pub async fn run(
        self,
        shared: Arc<ConsumeShared>,
        deadline: Option<Instant>,
    ) -> Result<ConsumerOutcome, PerfError> {
        let Consumer { plan, conn } = self;
        let split = conn.split();
        let (mut read, mut reader, mut write, frame_max) =
            (split.read, split.reader, split.write, split.frame_max);
        let mut assembler = Assembler::new(plan.respond);
        let mut latency = Latency::new()?;
        let mut out: Vec<u8> = Vec::new();
        let (mut consumed, mut last_ns, mut last_tag, mut unacked) = (0u64, 0u64, 0u64, 0u32);
        loop {
            if shared.stop.is_raised() {
                break;
            }
            let now = plan.clock.now_ns();
            let mut batch = 0u64;
            while let Some(frame) = reader.next_frame()? {
                let done = match frame {
                    RawFrame::Method(_, payload) => {
                        let class = parse_method(payload)?;
                        check_close(&class)?;
                        match class {
                            AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) => {
                                last_tag = d.delivery_tag;
                                assembler.start()?;
                            }
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(_)) => {
                                return Err(PerfError::Unexpected(
                                    "broker cancelled the consumer".into(),
                                ))
                            }
                            _ => {}
                        }
                        None
                    }
                    RawFrame::Header(_, payload) => assembler.header(payload)?,
                    RawFrame::Body(_, payload) => assembler.body(payload)?,
                    RawFrame::Heartbeat => None,
                };
                if let Some(done) = done {
                    batch += 1;
                    handle(&plan, &done, now, frame_max, &mut latency, &mut out)?;
                    unacked += 1;
                    if !plan.auto_ack && unacked >= plan.multi_ack {
                        push_ack(last_tag, &mut out)?;
                        unacked = 0;
                    }
                }
            }
            if !out.is_empty() {
                write.write_all(&out).await?;
                out.clear();
            }
            if batch > 0 {
                consumed += batch;
                last_ns = now;
                let all = shared.consumed.fetch_add(batch, Ordering::AcqRel) + batch;
                if plan.total.is_some_and(|t| all >= t) {
                    shared.stop.raise();
                    break;
                }
            }
            tokio::select! {
                biased;
                _ = shared.stop.wait() => break,
                _ = until(deadline) => break,
                r = reader.fill(&mut read) => { r?; }
            }
        }
        if !plan.auto_ack && unacked > 0 {
            push_ack(last_tag, &mut out)?;
            write.write_all(&out).await?;
        }
        close_halves(&mut read, &mut reader, &mut write).await?;
        Ok(ConsumerOutcome {
            consumed,
            last_ns,
            latency,
        })
    }
}

fn handle(
    plan: &ConsumerPlan,
    done: &Completed,
    now: u64,
    frame_max: u32,
    latency: &mut Latency,
    out: &mut Vec<u8>,
) -> Result<(), PerfError> {
    if plan.record_latency {
        if let Some(stamp) = done.stamp {
            latency.record_span_ns(stamp, now);
        }
    }
    if plan.respond {
        append_reply(done, frame_max, out)?;
    }
    Ok(())
}

fn push_ack(tag: u64, out: &mut Vec<u8>) -> Result<(), PerfError> {
    let ack = basic::Ack {
        delivery_tag: tag,
        multiple: true,
    };
    encode_method(
        DATA_CHANNEL,
        AMQPClass::Basic(basic::AMQPMethod::Ack(ack)),
        out,
    )
}
