//! `tensorq demo`: the whole system in one command, needing no external service.
//!
//! It starts the embedded broker on a temporary data dir and an ephemeral port, generates a
//! dataset shaped like the source document's (8 features, a binary label from a fixed rule),
//! publishes it to a training queue, trains the source's Keras model in Rust from that queue,
//! serves the trained model from a request queue, sends requests over RPC and prints
//! throughput (N/T, the source's formula) and latency percentiles. It owns only this
//! orchestration; each step is the same code `tensorq worker train|serve` runs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tensorq_broker::{BrokerConfig, RunningServer};
use tensorq_ml::OnnxModel;
use tensorq_train::{generate, ModelSpec};
use tensorq_worker::serve::{ServeConfig, Server};
use tensorq_worker::train::{self, TrainArgs};

const TRAIN_QUEUE: &str = "demo.train";
const PREDICT_QUEUE: &str = "demo.predict";

/// Flags of `tensorq demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Labelled examples to generate and train on (20 % are held out for evaluation).
    #[arg(long, default_value_t = 10000)]
    examples: usize,
    /// RPC requests to send to the served model.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Requests in flight at once (lets dynamic batching work).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// A quick run for tests: 1000 examples, 300 requests.
    #[arg(long)]
    fast: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(mut args: DemoArgs) -> Result<()> {
    if args.fast {
        args.examples = 1000;
        args.requests = 300;
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let server = RunningServer::start(BrokerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: Some(dir.path().join("data")),
        ..BrokerConfig::default()
    })
    .await?;
    let url = server.url();
    println!(
        "tensorq demo — embedded broker on {} (data in {})",
        server.addr,
        dir.path().display()
    );

    // 1. The dataset, published to the training queue with publisher confirms.
    let data = generate(args.examples, 7);
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        TRAIN_QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        let row = data.row(i).context("dataset row")?;
        let label = data.labels()[i];
        let body =
            serde_json::to_vec(&serde_json::json!({ "features": row, "label": label as u8 }))?;
        confirms.push(
            ch.basic_publish(
                "".into(),
                TRAIN_QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await?,
        );
    }
    for c in confirms {
        c.await?;
    }
    println!(
        "1. published {} labelled examples to '{TRAIN_QUEUE}' (persistent, confirmed) in {:.2?}",
        data.len(),
        started.elapsed()
    );

    // 2. Training from the queue.
    let spec_path = dir.path().join("seed_mlp.toml");
    std::fs::write(&spec_path, ModelSpec::seed_mlp().to_toml_string()?)?;
    let out = dir.path().join("models");
    let mut targs = TrainArgs::new(&url, TRAIN_QUEUE, &spec_path, &out);
    targs.max_examples = Some(data.len() as u64);
    targs.eval_fraction = Some(0.2);
    targs.idle_timeout = 5.0;
    targs.no_progress = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    println!("2. training Dense(10, relu) → Dense(1, sigmoid), adam, binary cross-entropy, 10 epochs, batch 32");
    let report = train::run(targs).await.context("training")?;
    let Some(eval) = report.eval.as_ref() else {
        bail!("training produced no evaluation");
    };
    println!(
        "   evaluate on {} held-out examples — loss: {:.4} - accuracy: {:.4}",
        report.eval_examples, eval.loss, eval.accuracy
    );
    println!("   model written to {}", report.onnx.display());

    // 3. Serving the trained model from a queue, with dynamic batching. The request queue is
    // declared here exactly as the worker declares it (durable, no arguments), so requests
    // published before the worker's consumer is up simply wait in it.
    ch.queue_declare(
        PREDICT_QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let model_path = report.onnx.clone();
    let model = tokio::task::spawn_blocking(move || OnnxModel::load(&model_path, "seed_mlp", "1"))
        .await??;
    let worker = Server::new(ServeConfig::new(PREDICT_QUEUE), model);
    let metrics = worker.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Served in process, as `tensorq server --serve` does.
    let broker = server.broker.clone();
    let serving = tokio::spawn(async move {
        worker
            .run_in_process(&broker, async {
                let _ = stop_rx.await;
            })
            .await
    });
    let rpc = conn.create_channel().await?;
    let reply = rpc
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let reply_queue = reply.name().clone();
    let mut replies = rpc
        .basic_consume(
            reply_queue.clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!("3. serving '{PREDICT_QUEUE}' (max batch 64, max delay 1 ms); sending {} RPC requests, {} in flight", args.requests, args.in_flight);

    // 4. RPC requests: TF-Serving `instances` bodies, replies matched by correlation id.
    let probe = generate(args.requests, 99);
    let mut sent_at: HashMap<String, (Instant, usize)> = HashMap::new();
    let mut latencies = Vec::with_capacity(args.requests);
    let mut correct = 0usize;
    let (mut next, mut done) = (0usize, 0usize);
    let started = Instant::now();
    while done < args.requests {
        while next < args.requests && next - done < args.in_flight {
            let row = probe.row(next).context("probe row")?;
            let id = format!("req-{next}");
            let body = serde_json::to_vec(&serde_json::json!({ "instances": [row] }))?;
            sent_at.insert(id.clone(), (Instant::now(), next));
            rpc.basic_publish(
                "".into(),
                PREDICT_QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_reply_to(reply_queue.clone())
                    .with_correlation_id(id.into()),
            )
            .await?;
            next += 1;
        }
        let d = tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .context("waiting for a prediction")?
            .context("reply consumer closed")??;
        let id = d
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let Some((at, row)) = sent_at.remove(&id) else {
            continue;
        };
        latencies.push(at.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&d.data).context("reply is JSON")?;
        let p = v["predictions"][0][0]
            .as_f64()
            .with_context(|| format!("unexpected reply {v}"))?;
        if (p >= 0.5) == (probe.labels()[row] >= 0.5) {
            correct += 1;
        }
        done += 1;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let snapshot = metrics.snapshot();
    println!(
        "4. {} predictions in {:.2?}: throughput N/T = {:.0} msg/s; latency p50 {:.2?}, p95 {:.2?}, p99 {:.2?}",
        done,
        elapsed,
        done as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99)
    );
    println!(
        "   served predictions agree with the generating rule on {:.1} % of fresh inputs",
        100.0 * correct as f64 / done.max(1) as f64
    );
    println!("   worker metrics: {}", serde_json::to_string(&snapshot)?);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    let _ = conn.close(200, "demo done".into()).await;
    server.stop().await;
    println!("done.");
    Ok(())
}
