//! The pipelined publisher: one connection per producer, publishes encoded
//! once as a [`PublishTemplate`] and copied into large write batches (one
//! system call per batch), an optional confirm window or RPC window with the
//! send time of each outstanding publish, and a reader task that settles
//! confirms and matches RPC replies to their requests by correlation id (the
//! round trip is timed from the recorded send time, never from the reply
//! body, so any responder works). Owns no consuming of the benchmark queue
//! (see `consumer`) and no RPC responding (see `rpc`).

use crate::assemble::{Assembler, Completed};
use crate::conn::{check_close, close_method, Connection, Target, DATA_CHANNEL};
use crate::error::PerfError;
use crate::latency::{Clock, Latency};
use crate::stop::Stop;
use crate::wire::{encode_method, parse_method, FrameReader, PublishTemplate, RawFrame};
use amq_protocol::protocol::{basic, connection, AMQPClass, BasicProperties};
use std::collections::BTreeSet;
use std::fmt;
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
    /// Body size in bytes (generated bodies).
    pub size: usize,
    /// Fixed body sent verbatim instead of a generated, stamped one.
    pub body: Option<FixedBody>,
    /// content_type property, if any.
    pub content_type: Option<String>,
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

/// A body shared by every producer of a run (the `--body-file` bytes).
#[derive(Clone)]
pub struct FixedBody(pub Arc<[u8]>);

impl fmt::Debug for FixedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FixedBody({} bytes)", self.0.len())
    }
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
    /// RPC replies matched to an outstanding request.
    pub replies: u64,
    /// RPC replies whose correlation id named no outstanding request.
    pub unmatched: u64,
    /// Publish-to-confirm latency.
    pub confirm_latency: Latency,
    /// RPC round-trip latency.
    pub rpc_latency: Latency,
}

/// Ring slots per window place: a reply must fall this many windows behind
/// before its slot can be reused.
const RING_PER_WINDOW: u64 = 64;

/// Settled count shared by the writer and the reader task, and the send time
/// of every outstanding publish in a ring of `RING_PER_WINDOW` × `window`
/// slots. The window counts outstanding publishes, not positions: when replies
/// come back out of order (several responders), request `s` can still be
/// outstanding when `s + window` is sent, so a ring of only `window` slots
/// would let the newer request overwrite the older one's slot and lose its
/// reply (counted as unmatched, never freeing its place in the window).
struct Progress {
    settled: AtomicU64,
    notify: Notify,
    stamps: Box<[AtomicU64]>,
    /// Sequence number whose stamp a slot holds; 0 when free or claimed.
    seqs: Box<[AtomicU64]>,
    mask: u64,
}

impl Progress {
    fn new(window: u32) -> Self {
        let slots = (u64::from(window.max(1)) * RING_PER_WINDOW).next_power_of_two();
        let stamps = (0..slots).map(|_| AtomicU64::new(0)).collect();
        let seqs = (0..slots).map(|_| AtomicU64::new(0)).collect();
        Self {
            settled: AtomicU64::new(0),
            notify: Notify::new(),
            stamps,
            seqs,
            mask: slots - 1,
        }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq & self.mask).ok()
    }

    fn stamp_slot(&self, seq: u64) -> Option<&AtomicU64> {
        self.index(seq).and_then(|i| self.stamps.get(i))
    }

    /// Record that publish `seq` (≥ 1) was sent at `stamp_ns`.
    fn sent(&self, seq: u64, stamp_ns: u64) {
        if let Some(i) = self.index(seq) {
            if let (Some(stamp), Some(owner)) = (self.stamps.get(i), self.seqs.get(i)) {
                stamp.store(stamp_ns, Ordering::Relaxed);
                owner.store(seq, Ordering::Release);
            }
        }
    }

    /// The send time of outstanding publish `seq`, taken at most once; `None`
    /// when `seq` was never sent, was already claimed or its slot was reused.
    fn claim(&self, seq: u64) -> Option<u64> {
        if seq == 0 {
            return None;
        }
        let i = self.index(seq)?;
        let owner = self.seqs.get(i)?;
        owner
            .compare_exchange(seq, 0, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.stamps.get(i).map(|s| s.load(Ordering::Relaxed))
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
        if let Some(ct) = &plan.content_type {
            properties = properties.with_content_type(ct.as_str().into());
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
        let rpc = plan.rpc_window.is_some();
        let template = match &plan.body {
            Some(FixedBody(body)) => PublishTemplate::fixed(
                DATA_CHANNEL,
                &plan.queue,
                properties,
                body,
                conn.frame_max(),
                rpc,
            )?,
            None => PublishTemplate::new(
                DATA_CHANNEL,
                &plan.queue,
                properties,
                plan.size,
                conn.frame_max(),
                rpc,
            )?,
        };
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
                    progress.sent(seq, stamp);
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
            unmatched: joined.unmatched,
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
    unmatched: u64,
    last_settle_ns: u64,
    confirm_latency: Latency,
    rpc_latency: Latency,
}

impl ReaderOutcome {
    fn new() -> Result<Self, PerfError> {
        Ok(Self {
            confirmed: 0,
            nacked: 0,
            replies: 0,
            unmatched: 0,
            last_settle_ns: 0,
            confirm_latency: Latency::new()?,
            rpc_latency: Latency::new()?,
        })
    }
}

/// Settle the request a reply names by its correlation number and time the
/// round trip from that request's send time (the reply body is not read, so
/// a responder may answer with any body). A reply naming no outstanding
/// request (foreign or missing id, duplicate) settles nothing.
fn settle_reply(out: &mut ReaderOutcome, progress: &Progress, reply: &Completed, now_ns: u64) {
    match reply.correlation.and_then(|seq| progress.claim(seq)) {
        Some(sent_ns) => {
            out.rpc_latency.record_span_ns(sent_ns, now_ns);
            out.replies += 1;
        }
        None => out.unmatched += 1,
    }
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
    let mut out = ReaderOutcome::new()?;
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
                        settle_reply(&mut out, &progress, &done, now);
                    }
                }
                RawFrame::Body(_, payload) if rpc => {
                    if let Some(done) = replies.body(payload)? {
                        settle_reply(&mut out, &progress, &done, now);
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
    fn out_of_order_replies_keep_their_send_times() {
        // Window 4: request 1 stays outstanding while 2..=4 are answered and 5..=7 refill the
        // window, then 4 windows' worth more are sent; request 1's reply still matches.
        let progress = Progress::new(4);
        for seq in 1..=4 {
            progress.sent(seq, seq * 10);
        }
        for seq in 2..=4 {
            assert_eq!(progress.claim(seq), Some(seq * 10));
        }
        for seq in 5..=20 {
            progress.sent(seq, seq * 10);
            assert_eq!(progress.claim(seq), Some(seq * 10));
        }
        assert_eq!(progress.claim(1), Some(10));
        assert_eq!(progress.claim(1), None, "a duplicate reply settles nothing");
    }

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

    /// A reply whose body is not a stamp; if it were read as one, every span would be 1 µs.
    fn reply(correlation: Option<u64>) -> Completed {
        Completed {
            stamp: Some(u64::MAX),
            correlation,
            header: None,
            body: br#"{"predictions":[[0.4]]}"#.to_vec(),
        }
    }

    #[test]
    fn rpc_latency_comes_from_the_send_time_of_the_named_request() -> Result<(), PerfError> {
        let progress = Progress::new(4);
        let mut out = ReaderOutcome::new()?;
        for seq in 1..=4u64 {
            progress.sent(seq, seq * 100_000);
        }
        settle_reply(&mut out, &progress, &reply(Some(3)), 1_000_000);
        settle_reply(&mut out, &progress, &reply(Some(1)), 1_000_000);
        assert_eq!((out.replies, out.unmatched), (2, 0));
        let lat = out.rpc_latency.summary().ok_or(PerfError::Closed)?;
        assert_eq!(lat.samples, 2);
        assert_eq!(lat.p50_us, 700);
        assert_eq!(lat.max_us, 900);
        // A duplicate, a foreign or missing id, request 0 and one never sent settle nothing.
        for id in [Some(3), None, Some(0), Some(9)] {
            settle_reply(&mut out, &progress, &reply(id), 1_000_000);
        }
        assert_eq!((out.replies, out.unmatched), (2, 4));
        // Slot of request 1 reused by request 5: a late reply to 1 no longer matches.
        progress.sent(5, 1_100_000);
        settle_reply(&mut out, &progress, &reply(Some(1)), 1_200_000);
        settle_reply(&mut out, &progress, &reply(Some(5)), 1_200_000);
        assert_eq!((out.replies, out.unmatched), (3, 5));
        let lat = out.rpc_latency.summary().ok_or(PerfError::Closed)?;
        assert_eq!((lat.samples, lat.p50_us, lat.max_us), (3, 700, 900));
        Ok(())
    }
}
