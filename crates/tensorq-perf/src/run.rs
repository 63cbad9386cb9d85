//! Orchestration of one perf run: loading the `--body-file`, queue setup on a
//! control connection (or, for an external RPC responder, a passive check that
//! its queue exists), starting consumers and producers for the chosen mode,
//! the publish-only and consume-only waits on the queue depth, stall
//! detection, and folding the per-connection outcomes into a [`PerfReport`].
//! Owns no frame handling.

use crate::args::{Length, Mode, PerfArgs};
use crate::conn::{Connection, Target};
use crate::consumer::{ConsumeShared, Consumer, ConsumerOutcome, ConsumerPlan};
use crate::error::PerfError;
use crate::latency::{Clock, Latency};
use crate::producer::{FixedBody, Producer, ProducerOutcome, ProducerPlan};
use crate::report::PerfReport;
use crate::stop::Stop;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the queue depth is polled in publish-only and consume-only modes.
const DEPTH_POLL: Duration = Duration::from_millis(2);
/// How long the queue depth or the consumed count may stand still before the run fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the consumer watchdog looks at progress.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// Nanoseconds per second.
const NANOS_PER_SEC: f64 = 1e9;

/// Run the load generator as `args` say and report what it measured.
pub async fn run(args: PerfArgs) -> Result<PerfReport, PerfError> {
    let (mode, length) = args.validate()?;
    let target = Target::parse(&args.uri)?;
    let body = match &args.body_file {
        Some(path) => Some(FixedBody(Arc::from(std::fs::read(path).map_err(|e| {
            PerfError::Args(format!("--body-file {}: {e}", path.display()))
        })?))),
        None => None,
    };
    let generated = args.queue.is_none();
    let queue = args.queue.clone().unwrap_or_else(fresh_queue_name);
    let mut control = Connection::open(&target).await?;
    if args.external_responder() {
        if let Err(e) = control
            .declare_queue(&queue, true, false, false, false)
            .await
        {
            let _ = control.close().await;
            return Err(match e {
                PerfError::BrokerClosed { code, text, .. } => PerfError::MissingQueue {
                    queue,
                    reason: format!("{code} {text}"),
                },
                other => other,
            });
        }
    } else {
        control
            .declare_queue(
                &queue,
                false,
                args.durable_queue,
                false,
                !args.durable_queue,
            )
            .await?;
    }
    let ctx = Ctx {
        args: &args,
        target,
        queue: queue.clone(),
        clock: Clock::start(),
        length,
        body,
    };
    let result = match mode {
        Mode::EndToEnd | Mode::Rpc => ctx.end_to_end(mode).await,
        Mode::PublishOnly => ctx.publish_only(&mut control).await,
        Mode::ConsumeOnly => ctx.consume_only(&mut control).await,
    };
    if generated {
        // Auto-delete may already have removed it; a failure here must not hide the result.
        let _ = control.delete_queue(&queue).await;
    }
    let _ = control.close().await;
    result
}

fn fresh_queue_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("perf-{}-{nanos}", std::process::id())
}

struct Ctx<'a> {
    args: &'a PerfArgs,
    target: Target,
    queue: String,
    clock: Clock,
    length: Length,
    /// The `--body-file` bytes, when given.
    body: Option<FixedBody>,
}

/// Folded producer outcomes.
struct Produced {
    published: u64,
    confirmed: u64,
    nacked: u64,
    replies: u64,
    unmatched: u64,
    end_ns: u64,
    last_settle_ns: u64,
    confirm_latency: Latency,
    rpc_latency: Latency,
}

/// Folded consumer outcomes.
struct Consumed {
    consumed: u64,
    last_ns: u64,
    latency: Latency,
}

fn rate(count: u64, span_ns: u64) -> f64 {
    if span_ns == 0 {
        0.0
    } else {
        count as f64 * NANOS_PER_SEC / span_ns as f64
    }
}

impl Ctx<'_> {
    fn count(&self) -> Option<u64> {
        match self.length {
            Length::Count(c) => Some(c),
            Length::Duration(_) => None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.length {
            Length::Duration(d) => Some(Instant::now() + d),
            Length::Count(_) => None,
        }
    }

    fn producer_plans(&self, confirm: u32, rpc: bool) -> Vec<ProducerPlan> {
        let n = u64::from(self.args.producers);
        (0..n)
            .map(|i| ProducerPlan {
                target: self.target.clone(),
                queue: self.queue.clone(),
                size: self.args.size,
                body: self.body.clone(),
                content_type: self.args.content_type.clone(),
                persistent: self.args.persistent,
                confirm,
                rpc_window: rpc.then_some(self.args.rpc_window),
                count: self.count().map(|c| c / n + u64::from(i < c % n)),
                rate: self.args.rate,
                clock: self.clock,
            })
            .collect()
    }

    fn consumer_plan(&self, index: usize, record_latency: bool, respond: bool) -> ConsumerPlan {
        ConsumerPlan {
            target: self.target.clone(),
            queue: self.queue.clone(),
            prefetch: self.args.prefetch,
            multi_ack: self.args.multi_ack,
            auto_ack: self.args.auto_ack,
            total: if respond { None } else { self.count() },
            clock: self.clock,
            record_latency,
            respond,
            index,
        }
    }

    async fn connect_consumers(
        &self,
        record_latency: bool,
        respond: bool,
    ) -> Result<Vec<Consumer>, PerfError> {
        let mut out = Vec::new();
        for i in 0..self.args.consumers as usize {
            out.push(Consumer::connect(self.consumer_plan(i, record_latency, respond)).await?);
        }
        Ok(out)
    }

    async fn connect_producers(&self, confirm: u32, rpc: bool) -> Result<Vec<Producer>, PerfError> {
        let mut out = Vec::new();
        for plan in self.producer_plans(confirm, rpc) {
            out.push(Producer::connect(plan).await?);
        }
        Ok(out)
    }

    fn report(&self, mode: Mode) -> PerfReport {
        PerfReport {
            mode: mode.name(),
            producers: self.args.producers,
            consumers: if mode == Mode::PublishOnly {
                0
            } else {
                self.args.consumers
            },
            size: self.body.as_ref().map_or(self.args.size, |b| b.0.len()),
            published: 0,
            confirmed: 0,
            nacked: 0,
            consumed: 0,
            unmatched: 0,
            elapsed_s: 0.0,
            publish_rate: 0.0,
            confirm_rate: 0.0,
            consume_rate: 0.0,
            latency: None,
            confirm_latency: None,
        }
    }

    fn fill_produced(
        &self,
        report: &mut PerfReport,
        p: &Produced,
        start_ns: u64,
        deadline_ns: Option<u64>,
    ) {
        report.published = p.published;
        report.confirmed = p.confirmed;
        report.nacked = p.nacked;
        report.publish_rate = rate(p.published, p.end_ns.saturating_sub(start_ns));
        let settle_end = deadline_ns.unwrap_or(p.last_settle_ns);
        report.confirm_rate = rate(p.confirmed, settle_end.saturating_sub(start_ns));
        report.confirm_latency = p.confirm_latency.summary();
    }

    async fn end_to_end(&self, mode: Mode) -> Result<PerfReport, PerfError> {
        let rpc = mode == Mode::Rpc;
        // Fixed bodies carry no send stamp; RPC times round trips by correlation id.
        let stamped = !rpc && self.body.is_none();
        let consumers = self.connect_consumers(stamped, rpc).await?;
        let producers = self.connect_producers(self.args.confirm, rpc).await?;
        let shared = Arc::new(ConsumeShared::default());
        let stop = Arc::new(Stop::default());
        let deadline = self.deadline();
        let start_ns = self.clock.now_ns();
        let consumer_tasks = spawn_consumers(consumers, &shared, deadline);
        let produced = join_producers(spawn_producers(producers, &stop, deadline)).await;
        let produced = match produced {
            Ok(p) => p,
            Err(e) => {
                shared.stop.raise();
                return Err(e);
            }
        };
        if rpc {
            shared.stop.raise();
        }
        let consumed = join_consumers(consumer_tasks, &shared).await?;
        let deadline_ns = deadline.map(|_| start_ns + self.duration_ns());
        let mut report = self.report(mode);
        self.fill_produced(&mut report, &produced, start_ns, deadline_ns);
        let (count, end_ns, latency) = if rpc {
            (
                produced.replies,
                produced.last_settle_ns,
                produced.rpc_latency,
            )
        } else {
            (consumed.consumed, consumed.last_ns, consumed.latency)
        };
        let end_ns = deadline_ns.unwrap_or(end_ns.max(produced.end_ns));
        report.consumed = count;
        report.unmatched = produced.unmatched;
        report.elapsed_s = end_ns.saturating_sub(start_ns) as f64 / NANOS_PER_SEC;
        report.consume_rate = rate(count, end_ns.saturating_sub(start_ns));
        report.latency = latency.summary();
        Ok(report)
    }

    fn duration_ns(&self) -> u64 {
        match self.length {
            Length::Duration(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Length::Count(_) => 0,
        }
    }

    async fn publish_only(&self, control: &mut Connection) -> Result<PerfReport, PerfError> {
        let producers = self.connect_producers(self.args.confirm, false).await?;
        let stop = Arc::new(Stop::default());
        let deadline = self.deadline();
        let start_ns = self.clock.now_ns();
        let produced = join_producers(spawn_producers(producers, &stop, deadline)).await?;
        let queued = wait_for_depth(control, &self.queue, produced.published).await?;
        let held_ns = self.clock.now_ns();
        let mut report = self.report(Mode::PublishOnly);
        self.fill_produced(&mut report, &produced, start_ns, None);
        report.consumed = queued;
        report.elapsed_s = held_ns.saturating_sub(start_ns) as f64 / NANOS_PER_SEC;
        report.consume_rate = rate(produced.published, held_ns.saturating_sub(start_ns));
        Ok(report)
    }

    async fn consume_only(&self, control: &mut Connection) -> Result<PerfReport, PerfError> {
        let producers = self.connect_producers(self.args.confirm, false).await?;
        let stop = Arc::new(Stop::default());
        let produced = join_producers(spawn_producers(producers, &stop, None)).await?;
        wait_for_depth(control, &self.queue, produced.published).await?;
        let start_ns = self.clock.now_ns();
        let consumers = self.connect_consumers(false, false).await?;
        let shared = Arc::new(ConsumeShared::default());
        let consumed = join_consumers(spawn_consumers(consumers, &shared, None), &shared).await?;
        let mut report = self.report(Mode::ConsumeOnly);
        report.published = produced.published;
        report.confirmed = produced.confirmed;
        report.consumed = consumed.consumed;
        let span = consumed.last_ns.saturating_sub(start_ns);
        report.elapsed_s = span as f64 / NANOS_PER_SEC;
        report.consume_rate = rate(consumed.consumed, span);
        Ok(report)
    }
}

fn spawn_producers(
    producers: Vec<Producer>,
    stop: &Arc<Stop>,
    deadline: Option<Instant>,
) -> Vec<JoinHandle<Result<ProducerOutcome, PerfError>>> {
    producers
        .into_iter()
        .map(|p| tokio::spawn(p.run(Arc::clone(stop), deadline)))
        .collect()
}

fn spawn_consumers(
    consumers: Vec<Consumer>,
    shared: &Arc<ConsumeShared>,
    deadline: Option<Instant>,
) -> Vec<JoinHandle<Result<ConsumerOutcome, PerfError>>> {
    consumers
        .into_iter()
        .map(|c| tokio::spawn(c.run(Arc::clone(shared), deadline)))
        .collect()
}

async fn join_producers(
    tasks: Vec<JoinHandle<Result<ProducerOutcome, PerfError>>>,
) -> Result<Produced, PerfError> {
    let mut out = Produced {
        published: 0,
        confirmed: 0,
        nacked: 0,
        replies: 0,
        unmatched: 0,
        end_ns: 0,
        last_settle_ns: 0,
        confirm_latency: Latency::new()?,
        rpc_latency: Latency::new()?,
    };
    let mut first_err = None;
    for task in tasks {
        match task
            .await
            .map_err(|e| PerfError::Task(e.to_string()))
            .and_then(|r| r)
        {
            Ok(p) => {
                out.published += p.published;
                out.confirmed += p.confirmed;
                out.nacked += p.nacked;
                out.replies += p.replies;
                out.unmatched += p.unmatched;
                out.end_ns = out.end_ns.max(p.end_ns);
                out.last_settle_ns = out.last_settle_ns.max(p.last_settle_ns);
                out.confirm_latency.merge(&p.confirm_latency)?;
                out.rpc_latency.merge(&p.rpc_latency)?;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Join consumers; if their shared count stops moving for [`STALL_TIMEOUT`], stop them and fail.
async fn join_consumers(
    tasks: Vec<JoinHandle<Result<ConsumerOutcome, PerfError>>>,
    shared: &Arc<ConsumeShared>,
) -> Result<Consumed, PerfError> {
    let watch = Arc::clone(shared);
    let watchdog = tokio::spawn(async move {
        let mut last = watch.consumed.load(Ordering::Acquire);
        let mut since = Instant::now();
        while !watch.stop.is_raised() {
            tokio::time::sleep(WATCHDOG_TICK).await;
            let now = watch.consumed.load(Ordering::Acquire);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= STALL_TIMEOUT {
                watch.stop.raise();
                return Some(now);
            }
        }
        None
    });
    let mut out = Consumed {
        consumed: 0,
        last_ns: 0,
        latency: Latency::new()?,
    };
    let mut first_err = None;
    for task in tasks {
        match task
            .await
            .map_err(|e| PerfError::Task(e.to_string()))
            .and_then(|r| r)
        {
            Ok(c) => {
                out.consumed += c.consumed;
                out.last_ns = out.last_ns.max(c.last_ns);
                out.latency.merge(&c.latency)?;
            }
            Err(e) => {
                shared.stop.raise();
                first_err.get_or_insert(e);
            }
        }
    }
    shared.stop.raise();
    let stalled = watchdog.await.map_err(|e| PerfError::Task(e.to_string()))?;
    if let Some(e) = first_err {
        return Err(e);
    }
    if let Some(at) = stalled {
        return Err(PerfError::Timeout(format!(
            "consumers made no progress for {STALL_TIMEOUT:?} at {at} messages"
        )));
    }
    Ok(out)
}

/// Poll a passive queue.declare until the queue holds `want` messages.
async fn wait_for_depth(
    control: &mut Connection,
    queue: &str,
    want: u64,
) -> Result<u64, PerfError> {
    let mut last = 0u64;
    let mut since = Instant::now();
    loop {
        let (_, depth) = control
            .declare_queue(queue, true, false, false, false)
            .await?;
        let depth = u64::from(depth);
        if depth >= want {
            return Ok(depth);
        }
        if depth != last {
            last = depth;
            since = Instant::now();
        } else if since.elapsed() >= STALL_TIMEOUT {
            return Err(PerfError::Timeout(format!(
                "queue {queue} holds {depth} of {want} messages"
            )));
        }
        tokio::time::sleep(DEPTH_POLL).await;
    }
}
