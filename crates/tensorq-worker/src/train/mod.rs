//! The training worker: labelled examples from an AMQP queue in, a trained model out.
//!
//! Owns the `train` command's arguments ([`TrainArgs`]), the orchestration in [`run`] and the
//! report. It does not own the model, training loop or file formats (`tensorq-train`), serving
//! (`serve/`), nor any broker internals. Submodules: `example` (body decoding), `store` (the
//! durable example log), `consumer` (AMQP intake and ack discipline), `progress` (indicatif).
//!
//! # Mode: windowed epochs, not online updates
//!
//! Examples are accumulated into a durable training set (`<out>/dataset.jsonl`) and trained on in
//! whole epochs with shuffling, exactly like Keras' `fit(epochs, batch_size)`. Without
//! `--window`, training runs once when the stream stops, from a fresh Glorot init over the whole
//! set (the result is then a pure function of the set and the spec's seed). With `--window N`,
//! each time `N` more training examples are durable the current model is trained for the spec's
//! `epochs` over everything accumulated so far (warm start; cost grows with the set) and a new
//! checkpoint + ONNX version is published, so serving gets fresh models while data streams; the
//! final model continues from the last window. Online one-example-at-a-time SGD was rejected:
//! it gives a different, noisier optimiser than the source's Adam/batch-32/10-epoch recipe, and
//! makes results depend on arrival order.
//!
//! # Acks
//!
//! An example is acked only once it is appended to the example log and fsync'd, so a crash at any
//! point loses nothing: unacked messages are redelivered, and already-durable redeliveries are
//! recognised by their key and dropped. Checkpoints are derived data and can be rebuilt from the
//! log.
//!
//! # Stopping
//!
//! The intake stops after `--max-examples` durable examples (train + eval) or after
//! `--idle-timeout` seconds without a delivery, whichever comes first; then the final training,
//! evaluation and artifacts follow and [`run`] returns.
//!
//! # Output (`--out`)
//!
//! `dataset.jsonl`, `eval.jsonl` (example logs), `model.ckpt.json` (checkpoint),
//! `model-v{N}.onnx` and `LATEST` (exports; `LATEST` written last), `curve.svg` (loss/accuracy
//! per epoch), `report.json` (the [`TrainReport`]).

pub mod consumer;
pub mod example;
pub mod progress;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use tensorq_train::trainer::{EpochStats, EvalResult, Trainer};
use tensorq_train::{Checkpoint, ModelSpec};

use consumer::{Intake, IntakeStats, Limits, Pause};
use progress::{on_fit_event, Progress};
use store::ExampleLog;

/// Default broker URL.
pub const DEFAULT_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Training example log file name in `--out`.
pub const TRAIN_LOG: &str = "dataset.jsonl";
/// Held-out example log file name in `--out`.
pub const EVAL_LOG: &str = "eval.jsonl";
/// Checkpoint file name in `--out`.
pub const CHECKPOINT_FILE: &str = "model.ckpt.json";
/// Curve picture file name in `--out`.
pub const CURVE_FILE: &str = "curve.svg";
/// Report file name in `--out`.
pub const REPORT_FILE: &str = "report.json";

/// Arguments of `tensorq train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// AMQP URL of the broker (tensorq or RabbitMQ).
    #[arg(long, env = "TENSORQ_BROKER", default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// Queue of labelled examples (declared durable if missing).
    #[arg(long, default_value = "train_q")]
    pub queue: String,
    /// Model spec (TOML), e.g. crates/tensorq-train/examples/specs/seed_mlp.toml.
    #[arg(long)]
    pub spec: PathBuf,
    /// Output directory: example logs, checkpoint, ONNX versions, curve, report.
    #[arg(long, default_value = "models")]
    pub out: PathBuf,
    /// Fraction of examples held out for evaluation (default 0.2; by a hash of each example).
    #[arg(long, conflicts_with = "eval_queue")]
    pub eval_fraction: Option<f64>,
    /// Take evaluation examples from this queue instead of holding out a fraction.
    #[arg(long)]
    pub eval_queue: Option<String>,
    /// Train and publish a model every N new training examples (windowed epochs).
    #[arg(long)]
    pub window: Option<usize>,
    /// Stop the intake once this many examples (train + eval) are durable.
    #[arg(long)]
    pub max_examples: Option<u64>,
    /// Stop the intake after this many seconds without a delivery.
    #[arg(long, default_value_t = 10.0)]
    pub idle_timeout: f64,
    /// Unacked deliveries the broker may send ahead (basic.qos prefetch).
    #[arg(long, default_value_t = 512)]
    pub prefetch: u16,
    /// Hide the progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainArgs {
    /// Arguments with defaults for everything but the spec.
    pub fn new(broker: &str, queue: &str, spec: &Path, out: &Path) -> Self {
        TrainArgs {
            broker: broker.to_string(),
            queue: queue.to_string(),
            spec: spec.to_path_buf(),
            out: out.to_path_buf(),
            eval_fraction: None,
            eval_queue: None,
            window: None,
            max_examples: None,
            idle_timeout: 10.0,
            prefetch: 512,
            no_progress: false,
        }
    }
}

/// Errors of the training worker.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad command-line value.
    #[error("invalid argument {0}")]
    Args(String),
    /// The spec file.
    #[error(transparent)]
    Spec(#[from] tensorq_train::SpecError),
    /// The broker.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker closed the consumer (queue deleted, channel closed).
    #[error("the broker closed the consumer")]
    ConsumerClosed,
    /// `<queue>.errors` refused a malformed message.
    #[error("broker nacked a message published to {0}")]
    ErrorsQueueNack(String),
    /// The example log.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Training.
    #[error(transparent)]
    Train(#[from] tensorq_train::TrainError),
    /// Checkpoint I/O.
    #[error(transparent)]
    Checkpoint(#[from] tensorq_train::CheckpointError),
    /// ONNX export.
    #[error(transparent)]
    Export(#[from] tensorq_train::ExportError),
    /// Other file I/O in `--out`.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The stream stopped before any training example arrived.
    #[error("no training examples received on {0}")]
    NoData(String),
    /// The training thread failed to join.
    #[error("training task failed: {0}")]
    Join(String),
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Durable training examples (the final training set).
    pub train_examples: usize,
    /// Durable held-out examples.
    pub eval_examples: usize,
    /// Intake counters of this run (messages, malformed, duplicates).
    pub intake: IntakeStats,
    /// Epochs of the final model's history.
    pub history: Vec<EpochStats>,
    /// Held-out evaluation, if there were held-out examples.
    pub eval: Option<EvalResult>,
    /// Windows trained during the intake.
    pub windows: usize,
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// The newest ONNX export.
    pub onnx: PathBuf,
    /// The training-curve picture.
    pub curve: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn validate(args: &TrainArgs) -> Result<f64, TrainError> {
    let fraction = match (&args.eval_queue, args.eval_fraction) {
        (Some(_), _) => 0.0,
        (None, Some(f)) => f,
        (None, None) => 0.2,
    };
    if !(0.0..1.0).contains(&fraction) {
        return Err(TrainError::Args(format!(
            "--eval-fraction must be in [0, 1), got {fraction}"
        )));
    }
    if args.window == Some(0) {
        return Err(TrainError::Args("--window must be at least 1".into()));
    }
    if !args.idle_timeout.is_finite() || args.idle_timeout <= 0.0 || args.idle_timeout > 1e6 {
        return Err(TrainError::Args(format!(
            "--idle-timeout must be a positive number of seconds, got {}",
            args.idle_timeout
        )));
    }
    if args.prefetch == 0 {
        return Err(TrainError::Args("--prefetch must be at least 1".into()));
    }
    Ok(fraction)
}

/// Trains `trainer` for the spec's epochs on `data` on a blocking thread, with the progress bar.
async fn fit_blocking(
    mut trainer: Trainer,
    data: tensorq_train::Dataset,
    progress: Progress,
) -> Result<Trainer, TrainError> {
    tokio::task::spawn_blocking(move || {
        let spec = trainer.spec().clone();
        let batches = data.len().div_ceil(spec.batch_size.max(1));
        let pb = progress.fit_bar(spec.epochs, batches);
        let first = trainer.history().len() + 1;
        let result = trainer.fit(&data, spec.epochs, spec.batch_size, |ev| {
            if let Some(line) = on_fit_event(&pb, spec.epochs, first, ev) {
                if progress.visible() {
                    pb.println(&line);
                } else {
                    tracing::info!("{line}");
                }
            }
        });
        pb.finish_and_clear();
        result.map(|_| trainer).map_err(TrainError::from)
    })
    .await
    .map_err(|e| TrainError::Join(e.to_string()))?
}

/// Writes checkpoint, next ONNX version and curve for `trainer`; returns (ckpt, onnx, curve).
fn write_artifacts(
    trainer: &Trainer,
    out: &Path,
    examples: usize,
) -> Result<(PathBuf, PathBuf, PathBuf), TrainError> {
    let weights = trainer.weights()?;
    let ckpt = out.join(CHECKPOINT_FILE);
    Checkpoint::new(
        trainer.spec().clone(),
        weights.clone(),
        examples as u64,
        trainer.history().to_vec(),
    )
    .save(&ckpt)?;
    let onnx = tensorq_train::publish_onnx(trainer.spec(), &weights, out)?;
    let curve = out.join(CURVE_FILE);
    tensorq_train::curve::write_curve(trainer.history(), &curve).map_err(io_err(&curve))?;
    Ok((ckpt, onnx, curve))
}

/// Runs the training worker to completion.
///
/// Connects to `args.broker`, declares `args.queue`, `<queue>.errors` (and `--eval-queue`) as
/// durable queues, consumes labelled examples (plain `{"features":[..],"label":0|1}` or OIP v2
/// with `features` and `label` inputs) and makes each durable in `<out>/dataset.jsonl` or
/// `<out>/eval.jsonl` before acking it. Malformed messages go to `<queue>.errors` with header
/// `x-tensorq-error` and are acked. With `--window N`, trains and publishes every N new training
/// examples. When the intake stops (`--max-examples` or `--idle-timeout`), trains the final model
/// (spec's epochs and batch size), evaluates it on the held-out examples and prints the result
/// like Keras' `evaluate` (`loss: 0.1234 - accuracy: 0.9650`), writes the checkpoint, the next
/// `model-v{N}.onnx` + `LATEST`, `curve.svg` and `report.json`, closes the connection and returns
/// the report. Restarting with the same `--out` after a crash resumes from the example logs.
///
/// Dropping the future (Ctrl-C, task abort) at any point is safe: unacked examples are
/// redelivered.
pub async fn run(args: TrainArgs) -> Result<TrainReport, TrainError> {
    let fraction = validate(&args)?;
    let spec = ModelSpec::from_file(&args.spec)?;
    std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    let progress = Progress::new(!args.no_progress);
    let mut train_log = ExampleLog::open(&args.out.join(TRAIN_LOG), spec.inputs)?;
    let mut eval_log = ExampleLog::open(&args.out.join(EVAL_LOG), spec.inputs)?;
    if !train_log.data().is_empty() {
        tracing::info!(
            train = train_log.data().len(),
            eval = eval_log.data().len(),
            "resuming from durable example logs"
        );
    }

    let conn = Connection::connect(&args.broker, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let errors_queue = format!("{}.errors", args.queue);
    channel
        .queue_declare(args.queue.as_str().into(), durable, FieldTable::default())
        .await?;
    publisher
        .queue_declare(errors_queue.as_str().into(), durable, FieldTable::default())
        .await?;
    channel
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("tensorq-train-{}", std::process::id());
    let train_consumer = channel
        .basic_consume(
            args.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let eval_consumer = match &args.eval_queue {
        Some(q) => {
            channel
                .queue_declare(q.as_str().into(), durable, FieldTable::default())
                .await?;
            Some(
                channel
                    .basic_consume(
                        q.as_str().into(),
                        format!("{tag}-eval").as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?,
            )
        }
        None => None,
    };
    let mut intake = Intake::new(
        channel,
        publisher,
        errors_queue,
        train_consumer,
        eval_consumer,
        spec.inputs,
        fraction,
    );

    // Windowed mode resumes the model from the checkpoint, if one matches the spec.
    let ckpt_path = args.out.join(CHECKPOINT_FILE);
    let mut trainer = match (args.window, Checkpoint::load(&ckpt_path)) {
        (Some(_), Ok(ck)) if ck.spec == spec => {
            Trainer::from_weights(spec.clone(), &ck.layers, ck.history)?
        }
        _ => Trainer::new(spec.clone()),
    };
    let mut trained_upto = if args.window.is_some() && !trainer.history().is_empty() {
        train_log.data().len()
    } else {
        0
    };

    let spinner = progress.intake();
    let show = |s: &IntakeStats, train: usize, eval: usize| {
        spinner.set_message(format!(
            "{} messages, {train} train + {eval} eval examples durable, {} malformed",
            s.messages, s.malformed
        ));
        spinner.tick();
    };
    let mut windows = 0;
    loop {
        let limits = Limits {
            window_at: args.window.map(|w| trained_upto + w),
            max_examples: args.max_examples,
            idle: Duration::from_secs_f64(args.idle_timeout),
        };
        let pause = intake
            .pump(&mut train_log, &mut eval_log, limits, &show)
            .await?;
        if pause != Pause::Window {
            tracing::info!(?pause, "intake stopped");
            break;
        }
        trainer = fit_blocking(trainer, train_log.data().clone(), progress).await?;
        trained_upto = train_log.data().len();
        windows += 1;
        let (_, onnx, _) = write_artifacts(&trainer, &args.out, trained_upto)?;
        tracing::info!(window = windows, examples = trained_upto, onnx = %onnx.display(), "window trained");
    }
    spinner.finish_and_clear();
    if let Err(e) = conn.close(200, "training intake done".into()).await {
        tracing::debug!("closing connection: {e}");
    }

    let train = train_log.data().clone();
    if train.is_empty() {
        return Err(TrainError::NoData(args.queue.clone()));
    }
    let needs_final = args.window.is_none() || trained_upto < train.len();
    if needs_final {
        if args.window.is_none() {
            trainer = Trainer::new(spec.clone());
        }
        trainer = fit_blocking(trainer, train.clone(), progress).await?;
    }
    let eval = if eval_log.data().is_empty() {
        None
    } else {
        let r = trainer.evaluate(eval_log.data())?;
        println!("{} held-out examples - {r}", eval_log.data().len());
        Some(r)
    };
    let (checkpoint, onnx, curve) = if needs_final || windows == 0 {
        write_artifacts(&trainer, &args.out, train.len())?
    } else {
        let v = tensorq_train::onnx_export::latest_version(&args.out)?;
        (
            ckpt_path,
            args.out.join(format!("model-v{v}.onnx")),
            args.out.join(CURVE_FILE),
        )
    };
    let report = TrainReport {
        train_examples: train.len(),
        eval_examples: eval_log.data().len(),
        intake: intake.stats,
        history: trainer.history().to_vec(),
        eval,
        windows,
        checkpoint,
        onnx,
        curve,
    };
    let report_path = args.out.join(REPORT_FILE);
    let json = serde_json::to_vec_pretty(&report).map_err(|e| TrainError::Io {
        path: report_path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    tensorq_train::atomic::write_atomic(&report_path, &json).map_err(io_err(&report_path))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    #[test]
    fn cli_parses_and_eval_options_conflict() {
        let cli = Cli::try_parse_from([
            "t", "--broker", "amqp://x", "--queue", "q", "--spec", "s.toml", "--out", "o",
            "--window", "100",
        ])
        .unwrap();
        assert_eq!(cli.train.queue, "q");
        assert_eq!(cli.train.window, Some(100));
        assert_eq!(validate(&cli.train).unwrap(), 0.2);
        assert!(Cli::try_parse_from([
            "t",
            "--spec",
            "s",
            "--eval-fraction",
            "0.1",
            "--eval-queue",
            "e",
        ])
        .is_err());
        let cli = Cli::try_parse_from(["t", "--spec", "s", "--eval-queue", "e"]).unwrap();
        assert_eq!(validate(&cli.train).unwrap(), 0.0);
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut a = TrainArgs::new("amqp://x", "q", Path::new("s"), Path::new("o"));
        a.eval_fraction = Some(1.5);
        assert!(matches!(validate(&a), Err(TrainError::Args(m)) if m.contains("eval-fraction")));
        let mut a = TrainArgs::new("amqp://x", "q", Path::new("s"), Path::new("o"));
        a.window = Some(0);
        assert!(matches!(validate(&a), Err(TrainError::Args(m)) if m.contains("window")));
        let mut a = TrainArgs::new("amqp://x", "q", Path::new("s"), Path::new("o"));
        a.idle_timeout = -1.0;
        assert!(matches!(validate(&a), Err(TrainError::Args(m)) if m.contains("idle-timeout")));
    }
}
