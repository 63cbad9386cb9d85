//! The pipelined publisher: one connection per producer, publishes encoded
//! once as a [`PublishTemplate`] and copied into large write batches (one
//! system call per batch), an optional confirm window or RPC window, and a
//! reader task that settles confirms and collects RPC replies. Owns no
//! consuming of the benchmark queue (see `consumer`) and no RPC responding
//! (see `rpc`).

use crate::assemble::Assembler;
use crate::conn::{check_close, close_method, Connection, Target, DATA_CHANNEL};
use crate::error::PerfError;
use crate::latency::{Clock, Latency};
use crate::stop::Stop;
use crate::wire::{encode_method, parse_method, FrameReader, PublishTemplate, RawFrame};
use amq_protocol::protocol::{basic, connection, AMQPClass, BasicProperties};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Target size of one write (many publishes per system call).
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// AMQP delivery mode for persistent messages.
const DELIVERY_MODE_PERSISTENT: u8 = 2;
/// How long a count-mode producer waits without progress for outstanding confirms or replies.
const DRAIN_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the producer waits for its reader to see close-ok.
const READER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause when a rate limit says nothing is due yet.
const RATE_TICK: Duration = Duration::from_millis(1);

/// What one producer does.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    /// Broker address and credentials.
    pub target: Target,
    /// Queue (routing key on the default exchange).
    pub queue: String,
    /// Body size in bytes.
    pub size: usize,
    /// Delivery mode 2.
    pub persistent: bool,
    /// Confirm window (0 = no confirms).
    pub confirm: u32,
    /// RPC mode with this many outstanding requests.
    pub rpc_window: Option<u32>,
    /// Messages this producer sends (None = until the deadline).
    pub count: Option<u64>,
    /// Messages per second (None = as fast as possible).
    pub rate: Option<u64>,
    /// Run clock for stamps.
    pub clock: Clock,
}

/// What one producer achieved.
pub struct ProducerOutcome {
    /// Messages written to the socket.
    pub published: u64,
    /// Clock stamp after the last publish was written.
    pub end_ns: u64,
    /// Confirms (acks) received.
    pub confirmed: u64,
    /// Negative confirms received.
    pub nacked: u64,
    /// Clock stamp of the last confirm or reply.
    pub last_settle_ns: u64,
    /// RPC replies received.
    pub replies: u64,
    /// Publish-to-confirm latency.
    pub confirm_latency: Latency,
    /// RPC round-trip latency.
    pub rpc_latency: Latency,
}

/// Settled count shared by the writer and the reader task.
struct Progress {
    settled: AtomicU64,
    notify: Notify,
    stamps: Box<[AtomicU64]>,
    mask: u64,
}

impl Progress {
    fn new(window: u32) -> Self {
        let slots = u64::from(window.max(1)).next_power_of_two();
        let stamps = (0..slots).map(|_| AtomicU64::new(0)).collect();
        Self {
            settled: AtomicU64::new(0),
            notify: Notify::new(),
            stamps,
            mask: slots - 1,
        }
    }

    fn stamp_slot(&self, seq: u64) -> Option<&AtomicU64> {
        usize::try_from(seq & self.mask)
            .ok()
            .and_then(|i| self.stamps.get(i))
    }
}

/// Settles publisher confirms (multiple or single, in any order).
struct ConfirmTracker {
    upto: u64,
    singles: BTreeSet<u64>,
    confirmed: u64,
    nacked: u64,
}

impl ConfirmTracker {
    fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        ack: bool,
        progress: &Progress,
        now_ns: u64,
        latency: &mut Latency,
    ) {
        let mut record = |this: &mut Self, t: u64| {
            if let Some(slot) = progress.stamp_slot(t) {
                latency.record_span_ns(slot.load(Ordering::Relaxed), now_ns);
            }
            if ack {
                this.confirmed += 1;
            } else {
                this.nacked += 1;
            }
        };
        if multiple {
            for t in self.upto + 1..=tag {
                if !self.singles.remove(&t) {
                    record(self, t);
                }
            }
            self.upto = self.upto.max(tag);
        } else if tag > self.upto && self.singles.insert(tag) {
            record(self, tag);
        }
        while self.singles.remove(&(self.upto + 1)) {
            self.upto += 1;
        }
    }

    fn settled(&self) -> u64 {
        self.confirmed + self.nacked
    }
}

/// A connected producer, ready to publish.
pub struct Producer {
    plan: ProducerPlan,
    conn: Connection,
    template: PublishTemplate,
    window: u32,
}

impl Producer {
    /// Connect and prepare (confirm.select, RPC reply queue).
    pub async fn connect(plan: ProducerPlan) -> Result<Self, PerfError> {
        let mut conn = Connection::open(&plan.target).await?;
        let mut properties = BasicProperties::default();
        if plan.persistent {
            properties = properties.with_delivery_mode(DELIVERY_MODE_PERSISTENT);
        }
        let window = match plan.rpc_window {
            Some(w) => {
                let (reply_queue, _) = conn.declare_queue("", false, false, true, true).await?;
                conn.consume(&reply_queue, "perf-replies", true).await?;
                properties = properties.with_reply_to(reply_queue.as_str().into());
                w
            }
            None => {
                if plan.confirm > 0 {
                    conn.confirm_select().await?;
                }
                plan.confirm
            }
        };
        let template = PublishTemplate::new(
            DATA_CHANNEL,
            &plan.queue,
            properties,
            plan.size,
            conn.frame_max(),
            plan.rpc_window.is_some(),
        )?;
        Ok(Self {
            plan,
            conn,
            template,
            window,
        })
    }

    /// Publish until the count or deadline, then close.
    pub async fn run(
        self,
        stop: Arc<Stop>,
        deadline: Option<Instant>,
    ) -> Result<ProducerOutcome, PerfError> {
        let Producer {
            plan,
            conn,
            template,
            window,
        } = self;
        let split = conn.split();
        let mut write = split.write;
        let progress = Arc::new(Progress::new(window));
        let reader = tokio::spawn(read_loop(
            split.read,
            split.reader,
            Arc::clone(&progress),
            plan.clock,
            plan.rpc_window.is_some(),
        ));
        let per_batch = (WRITE_BATCH_BYTES / template.len().max(1)).max(1) as u64;
        let window = u64::from(window);
        let started = Instant::now();
        let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES + template.len());
        let mut seq: u64 = 0;
        loop {
            if stop.is_raised() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let mut n = per_batch;
            if let Some(count) = plan.count {
                n = n.min(count.saturating_sub(seq));
                if n == 0 {
                    break;
                }
            }
            if window > 0 {
                let notified = progress.notify.notified();
                let inflight = seq.saturating_sub(progress.settled.load(Ordering::Acquire));
                if inflight >= window {
                    tokio::select! {
                        _ = notified => {}
                        _ = until(deadline) => {}
                        _ = stop.wait() => {}
                    }
                    continue;
                }
                n = n.min(window - inflight);
            }
            if let Some(rate) = plan.rate {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                let allowed = due.saturating_sub(seq);
                if allowed == 0 {
                    tokio::time::sleep(RATE_TICK).await;
                    continue;
                }
                n = n.min(allowed);
            }
            buf.clear();
            let stamp = plan.clock.now_ns();
            for _ in 0..n {
                seq += 1;
                if window > 0 {
                    if let Some(slot) = progress.stamp_slot(seq) {
                        slot.store(stamp, Ordering::Relaxed);
                    }
                }
                template.append(&mut buf, stamp, seq);
            }
            write.write_all(&buf).await?;
        }
        let end_ns = plan.clock.now_ns();
        if window > 0 && plan.count.is_some() {
            drain(&progress, seq, &reader).await?;
        }
        buf.clear();
        encode_method(0, close_method(), &mut buf)?;
        write.write_all(&buf).await?;
        let joined = tokio::time::timeout(READER_JOIN_TIMEOUT, reader)
            .await
            .map_err(|_| PerfError::Timeout("producer close-ok".into()))?
            .map_err(|e| PerfError::Task(e.to_string()))??;
        Ok(ProducerOutcome {
            published: seq,
            end_ns,
            confirmed: joined.confirmed,
            nacked: joined.nacked,
            last_settle_ns: joined.last_settle_ns,
            replies: joined.replies,
            confirm_latency: joined.confirm_latency,
            rpc_latency: joined.rpc_latency,
        })
    }
}

/// Wait until every publish is settled, failing if progress stalls.
async fn drain(
    progress: &Progress,
    target: u64,
    reader: &tokio::task::JoinHandle<Result<ReaderOutcome, PerfError>>,
) -> Result<(), PerfError> {
    loop {
        let notified = progress.notify.notified();
        let settled = progress.settled.load(Ordering::Acquire);
        if settled >= target {
            return Ok(());
        }
        if reader.is_finished() {
            return Err(PerfError::Closed);
        }
        if tokio::time::timeout(DRAIN_STALL_TIMEOUT, notified)
            .await
            .is_err()
        {
            return Err(PerfError::Timeout(format!(
                "{} of {target} confirms/replies outstanding",
                target - settled
            )));
        }
    }
}

/// Resolve at the deadline, or never.
pub async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct ReaderOutcome {
    confirmed: u64,
    nacked: u64,
    replies: u64,
    last_settle_ns: u64,
    confirm_latency: Latency,
    rpc_latency: Latency,
}

fn settle_reply(out: &mut ReaderOutcome, stamp: Option<u64>, now_ns: u64) {
    if let Some(stamp) = stamp {
        out.rpc_latency.record_span_ns(stamp, now_ns);
    }
    out.replies += 1;
}

/// Settle confirms and RPC replies until close-ok.
async fn read_loop(
    mut read: OwnedReadHalf,
    mut reader: FrameReader,
    progress: Arc<Progress>,
    clock: Clock,
    rpc: bool,
) -> Result<ReaderOutcome, PerfError> {
    let mut tracker = ConfirmTracker {
        upto: 0,
        singles: BTreeSet::new(),
        confirmed: 0,
        nacked: 0,
    };
    let mut out = ReaderOutcome {
        confirmed: 0,
        nacked: 0,
        replies: 0,
        last_settle_ns: 0,
        confirm_latency: Latency::new()?,
        rpc_latency: Latency::new()?,
    };
    let mut replies = Assembler::new(false);
    loop {
        let before = tracker.settled() + out.replies;
        let now = clock.now_ns();
        while let Some(frame) = reader.next_frame()? {
            match frame {
                RawFrame::Method(_, payload) => {
                    let class = parse_method(payload)?;
                    check_close(&class)?;
                    match class {
                        AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => tracker.settle(
                            a.delivery_tag,
                            a.multiple,
                            true,
                            &progress,
                            now,
                            &mut out.confirm_latency,
                        ),
                        AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => tracker.settle(
                            n.delivery_tag,
                            n.multiple,
                            false,
                            &progress,
                            now,
                            &mut out.confirm_latency,
                        ),
                        AMQPClass::Basic(basic::AMQPMethod::Deliver(_)) if rpc => {
                            replies.start()?
                        }
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                            out.confirmed = tracker.confirmed;
                            out.nacked = tracker.nacked;
                            return Ok(out);
                        }
                        _ => {}
                    }
                }
                RawFrame::Header(_, payload) if rpc => {
                    if let Some(done) = replies.header(payload)? {
                        settle_reply(&mut out, done.stamp, now);
                    }
                }
                RawFrame::Body(_, payload) if rpc => {
                    if let Some(done) = replies.body(payload)? {
                        settle_reply(&mut out, done.stamp, now);
                    }
                }
                _ => {}
            }
        }
        let after = tracker.settled() + out.replies;
        if after != before {
            out.last_settle_ns = now;
            progress.settled.store(after, Ordering::Release);
            progress.notify.notify_one();
        }
        reader.fill(&mut read).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_once_in_any_order() -> Result<(), PerfError> {
        let progress = Progress::new(16);
        let mut lat = Latency::new()?;
        let mut t = ConfirmTracker {
            upto: 0,
            singles: BTreeSet::new(),
            confirmed: 0,
            nacked: 0,
        };
        t.settle(3, false, true, &progress, 10, &mut lat);
        t.settle(1, false, false, &progress, 10, &mut lat);
        t.settle(5, true, true, &progress, 10, &mut lat);
        t.settle(5, true, true, &progress, 10, &mut lat);
        assert_eq!((t.confirmed, t.nacked, t.upto), (4, 1, 5));
        t.settle(6, false, true, &progress, 10, &mut lat);
        assert_eq!((t.settled(), t.upto), (6, 6));
        Ok(())
    }
}
