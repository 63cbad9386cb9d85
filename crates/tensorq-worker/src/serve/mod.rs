//! The serving worker: consumes inference requests from an AMQP queue, runs them through an ONNX
//! model in dynamic batches and publishes the replies, acking each request only after the broker
//! confirmed its reply (at-least-once).
//!
//! Owns the command-line surface ([`ServeArgs`]), the configuration ([`ServeConfig`]), the
//! entry points ([`run`] for the binary, [`Server`] for in-process use by tests and demos) and
//! [`ServeError`]. The AMQP loop lives in `worker`, batching in `batcher`, hot swap in `hotswap`,
//! counters in `metrics`, their HTTP endpoint in `exporter`, the two ways to reach a broker
//! (AMQP, or in-process when embedded in `tensorq server`) in `transport`. Tensors, codecs and
//! inference are `tensorq-ml`'s; over AMQP nothing here is broker-specific, so it runs the same
//! against tensorq and RabbitMQ.
//!
//! Message contract (see `worker` for details): the request's content type picks the codec; the
//! reply goes to `reply_to` (default exchange) with the request's `correlation_id`, or to
//! `--results-exchange`/`--results-routing-key` when set; replies carry `x-tensorq-model-name`,
//! `x-tensorq-model-version` and `x-tensorq-request-id`. Bad requests get a JSON error reply and
//! a copy in `<queue>.errors` with header `x-tensorq-error`.

pub mod batcher;
pub mod exporter;
pub mod hotswap;
pub mod metrics;
pub mod transport;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tensorq_ml::{ModelError, OnnxModel};

pub use batcher::BatchLimits;
pub use hotswap::ModelSlot;
pub use metrics::{Metrics, MetricsSnapshot};

/// Default number of requests in one batch.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Default time a batch waits for more requests after its first one, in microseconds.
pub const DEFAULT_MAX_DELAY_US: u64 = 1_000;
/// Default `--batches-in-flight`: one batch inferred while the next is decoded (like Triton's
/// default of two model instances on a CPU).
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 2;
/// Largest `--batches-in-flight` accepted.
pub const MAX_BATCHES_IN_FLIGHT: usize = 64;
/// Default model-watch poll interval, in milliseconds.
pub const DEFAULT_WATCH_INTERVAL_MS: u64 = 2_000;
/// Default interval between metrics log lines, in seconds.
pub const DEFAULT_METRICS_INTERVAL_S: u64 = 30;

/// Queue type to declare the request queue (and its errors queue) with.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Durable classic queue.
    #[default]
    Classic,
    /// Durable quorum queue (`x-queue-type: quorum`), for RabbitMQ clusters.
    Quorum,
}

/// `tensorq serve` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// AMQP URL of the broker.
    #[arg(
        long,
        env = "TENSORQ_BROKER",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub broker: String,
    /// Queue to consume requests from (declared durable if missing).
    #[arg(long)]
    pub queue: String,
    /// ONNX file, or a directory whose newest *.onnx is served (and watched for new ones).
    #[arg(long)]
    pub model: PathBuf,
    /// Model name reported in replies (default: the file stem).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Most requests per inference.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Longest wait, in microseconds, after a batch's first request before it runs.
    #[arg(long, default_value_t = DEFAULT_MAX_DELAY_US)]
    pub max_delay_us: u64,
    /// AMQP prefetch (default: eight times --max-batch, so the next batches are already at
    /// hand while one runs; never below --max-batch).
    #[arg(long)]
    pub prefetch: Option<u16>,
    /// Batches being inferred, replied to and settled at once while the next is decoded (1: one
    /// batch at a time). More raise throughput when one inference is short next to its wait
    /// for a thread, at the cost of more inferences running in parallel.
    #[arg(long, default_value_t = DEFAULT_BATCHES_IN_FLIGHT)]
    pub batches_in_flight: usize,
    /// Queue type to declare.
    #[arg(long, value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
    /// Publish replies to this exchange instead of each request's reply_to.
    #[arg(long, requires = "results_routing_key")]
    pub results_exchange: Option<String>,
    /// Routing key for --results-exchange.
    #[arg(long, requires = "results_exchange")]
    pub results_routing_key: Option<String>,
    /// Model-watch poll interval in milliseconds (0 turns hot swap off).
    #[arg(long, default_value_t = DEFAULT_WATCH_INTERVAL_MS)]
    pub watch_interval_ms: u64,
    /// Seconds between metrics log lines (0 turns them off).
    #[arg(long, default_value_t = DEFAULT_METRICS_INTERVAL_S)]
    pub metrics_interval_s: u64,
    /// Serve the metrics over HTTP on this address (e.g. 127.0.0.1:9419): Prometheus text at
    /// /metrics, JSON at /metrics.json.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Errors that stop the serving worker. Bad requests never do: they are answered and parked.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("model path {path}: {reason}")]
    ModelPath { path: String, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("AMQP error during {context}: {source}")]
    Amqp {
        context: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("in-process broker client error during {context}: {reason}")]
    InProcess {
        context: &'static str,
        reason: String,
    },
    #[error("the consumer on queue {0:?} was closed by the broker or the connection dropped")]
    ConsumerClosed(String),
    #[error("model loader task failed: {0}")]
    Join(String),
}

/// Everything the worker loop needs besides the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    pub queue: String,
    pub limits: BatchLimits,
    pub prefetch: u16,
    /// Most batch tails (inference, replies, settling) in flight at once.
    pub batches_in_flight: usize,
    pub queue_type: QueueType,
    /// `(exchange, routing_key)` for replies instead of `reply_to`.
    pub results: Option<(String, String)>,
    /// Path to watch for new checkpoints, and the poll interval.
    pub watch: Option<(PathBuf, Duration)>,
    /// Interval of the metrics log line.
    pub metrics_interval: Option<Duration>,
}

impl ServeConfig {
    /// A configuration with the defaults of [`ServeArgs`], for `queue`, without hot swap.
    pub fn new(queue: impl Into<String>) -> ServeConfig {
        ServeConfig {
            queue: queue.into(),
            limits: BatchLimits {
                max_batch: DEFAULT_MAX_BATCH,
                max_delay: Duration::from_micros(DEFAULT_MAX_DELAY_US),
            },
            prefetch: default_prefetch(DEFAULT_MAX_BATCH),
            batches_in_flight: DEFAULT_BATCHES_IN_FLIGHT,
            queue_type: QueueType::Classic,
            results: None,
            watch: None,
            metrics_interval: Some(Duration::from_secs(DEFAULT_METRICS_INTERVAL_S)),
        }
    }

    /// Name of the queue where bad requests are parked.
    pub fn errors_queue(&self) -> String {
        format!("{}.errors", self.queue)
    }

    fn validate(&self) -> Result<(), ServeError> {
        if self.queue.is_empty() {
            return Err(ServeError::Config("queue name is empty".into()));
        }
        if self.limits.max_batch == 0 || self.limits.max_batch > batcher::MAX_BATCH_LIMIT {
            return Err(ServeError::Config(format!(
                "max batch must be within 1..={}",
                batcher::MAX_BATCH_LIMIT
            )));
        }
        if self.batches_in_flight == 0 || self.batches_in_flight > MAX_BATCHES_IN_FLIGHT {
            return Err(ServeError::Config(format!(
                "batches in flight must be within 1..={MAX_BATCHES_IN_FLIGHT}"
            )));
        }
        if usize::from(self.prefetch) < self.limits.max_batch {
            return Err(ServeError::Config(format!(
                "prefetch {} is below max batch {}: batches could never fill",
                self.prefetch, self.limits.max_batch
            )));
        }
        Ok(())
    }
}

fn default_prefetch(max_batch: usize) -> u16 {
    u16::try_from(max_batch.saturating_mul(8)).unwrap_or(u16::MAX)
}

impl TryFrom<&ServeArgs> for ServeConfig {
    type Error = ServeError;

    fn try_from(args: &ServeArgs) -> Result<ServeConfig, ServeError> {
        let prefetch = args
            .prefetch
            .unwrap_or_else(|| default_prefetch(args.max_batch));
        let config = ServeConfig {
            queue: args.queue.clone(),
            limits: BatchLimits {
                max_batch: args.max_batch,
                max_delay: Duration::from_micros(args.max_delay_us),
            },
            prefetch,
            batches_in_flight: args.batches_in_flight,
            queue_type: args.queue_type,
            results: args
                .results_exchange
                .clone()
                .zip(args.results_routing_key.clone()),
            watch: (args.watch_interval_ms > 0).then(|| {
                (
                    args.model.clone(),
                    Duration::from_millis(args.watch_interval_ms),
                )
            }),
            metrics_interval: (args.metrics_interval_s > 0)
                .then(|| Duration::from_secs(args.metrics_interval_s)),
        };
        config.validate()?;
        Ok(config)
    }
}

/// A serving worker around an already-loaded model: the in-process entry point for tests, demos
/// and the `tensorq` binary when it embeds a worker.
pub struct Server {
    config: ServeConfig,
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Serves `model` (reported under its own name and version) with `config`.
    pub fn new(config: ServeConfig, model: OnnxModel) -> Server {
        let metrics = Arc::new(Metrics::new(model.name()));
        let loaded_from = config
            .watch
            .as_ref()
            .and_then(|(p, _)| hotswap::resolve(p).ok())
            .filter(|c| c.path == model.path());
        Server {
            config,
            slot: Arc::new(ModelSlot::new(model, loaded_from)),
            metrics,
        }
    }

    /// Live metrics (shared with the running worker).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The model slot (shared with the running worker); [`ModelSlot::swap`] swaps by hand.
    pub fn slot(&self) -> Arc<ModelSlot> {
        Arc::clone(&self.slot)
    }

    /// Connects to `broker` and serves until `shutdown` completes (then returns `Ok`) or the
    /// connection fails. Aborting the task that runs this drops the connection, so unacked
    /// requests go back to the queue.
    pub async fn run(
        self,
        broker: &str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        self.config.validate()?;
        let _background = self.background();
        worker::serve(broker, &self.config, &self.slot, &self.metrics, shutdown).await
    }

    /// Serves inside the broker process through its in-process client (no socket, no AMQP
    /// frames), until `shutdown` completes or the request queue is deleted. Dropping the future
    /// requeues unacked requests, as a closed connection would.
    pub async fn run_in_process(
        self,
        broker: &tensorq_broker::Broker,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        self.config.validate()?;
        let _background = self.background();
        worker::serve_in_process(broker, &self.config, &self.slot, &self.metrics, shutdown).await
    }

    /// The model watcher and metrics logger, stopped when the returned guards drop.
    fn background(&self) -> (Option<AbortOnDrop>, Option<AbortOnDrop>) {
        let watcher = self.config.watch.clone().map(|(path, every)| {
            AbortOnDrop(hotswap::spawn_watcher(
                path,
                every,
                Arc::clone(&self.slot),
                Arc::clone(&self.metrics),
            ))
        });
        let logger = self
            .config
            .metrics_interval
            .map(|every| AbortOnDrop(self.metrics.spawn_logger(every)));
        (watcher, logger)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Loads the model named by `args` and builds the worker around it, without connecting: a model
/// that cannot be loaded fails here, before anything else starts.
pub async fn load(args: &ServeArgs) -> Result<Server, ServeError> {
    let config = ServeConfig::try_from(args)?;
    let checkpoint = hotswap::resolve(&args.model)?;
    let name = args.model_name.clone().unwrap_or_else(|| {
        checkpoint
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let path = checkpoint.path.clone();
    let model = tokio::task::spawn_blocking(move || OnnxModel::load(&path, name, "1"))
        .await
        .map_err(|e| ServeError::Join(e.to_string()))??;
    tracing::info!(
        model = model.name(),
        path = %checkpoint.path.display(),
        inputs = ?model.inputs(),
        outputs = ?model.outputs(),
        "model loaded"
    );
    Ok(Server::new(config, model))
}

/// Loads the model named by `args`, then serves it until `shutdown` completes or the connection
/// fails. This is what `tensorq worker serve` calls.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let server = load(&args).await?;
    let _endpoint = match args.metrics_listen {
        Some(addr) => {
            let listener = exporter::bind(addr)
                .await
                .map_err(|e| ServeError::Config(e.to_string()))?;
            let registry = exporter::Registry::new();
            registry.register(&args.queue, server.metrics());
            Some(exporter::spawn(listener, registry))
        }
        None => None,
    };
    server.run(&args.broker, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_refused_with_the_reason() {
        assert!(ServeConfig::new("q").validate().is_ok());
        let mut c = ServeConfig::new("q");
        c.batches_in_flight = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("batches in flight"), "{e}");
        c.batches_in_flight = MAX_BATCHES_IN_FLIGHT + 1;
        assert!(c.validate().is_err());
        let mut c = ServeConfig::new("q");
        c.prefetch = 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("below max batch"), "{e}");
    }
}
