//! Serving worker against a real AMQP broker: RabbitMQ by default, tensorq when scripts/test
//! points `TENSORQ_TEST_AMQP_URL` at a `tensorq server` it started, and tensorq's in-process
//! transport (the one `tensorq server --serve` uses) when `TENSORQ_TEST_SERVE_IN_PROCESS=1`: the
//! tests then start a broker with a data directory inside the test process, run the workers
//! through its in-process client and talk to it as clients over AMQP with lapin.
//!
//! The broker URL comes from `TENSORQ_TEST_AMQP_URL` (default the local RabbitMQ). When the broker
//! is unreachable these tests fail if `CI=true` and skip with a message otherwise. Queue names
//! start with `ml-` and are unique per run; each test deletes its queues at the end.

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tensorq_ml::OnnxModel;
use tensorq_worker::serve::worker::{
    header_string, HEADER_ERROR, HEADER_MODEL_VERSION, HEADER_REQUEST_ID,
};
use tensorq_worker::serve::{BatchLimits, Metrics, QueueType, ServeConfig, Server};
use tokio::sync::oneshot;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

fn in_process() -> bool {
    std::env::var("TENSORQ_TEST_SERVE_IN_PROCESS").as_deref() == Ok("1")
}

/// The broker of in-process mode: started once, on a runtime of its own thread (each test has
/// its own runtime), with a durable store in a temporary directory.
fn embedded_broker() -> &'static (String, Arc<tensorq_broker::Broker>) {
    static BROKER: OnceLock<(String, Arc<tensorq_broker::Broker>)> = OnceLock::new();
    BROKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let config = tensorq_broker::BrokerConfig {
                    listen: "127.0.0.1:0".into(),
                    data_dir: Some(dir.path().to_path_buf()),
                    ..Default::default()
                };
                let server = tensorq_broker::Server::bind(config).await.unwrap();
                let url = format!(
                    "amqp://guest:guest@127.0.0.1:{}/%2f",
                    server.local_addr().unwrap().port()
                );
                tx.send((url, server.broker())).unwrap();
                server.run(std::future::pending()).await;
                drop(dir);
            });
        });
        rx.recv().unwrap()
    })
}

fn url() -> String {
    if in_process() {
        return embedded_broker().0.clone();
    }
    std::env::var("TENSORQ_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

async fn connect_or_skip(test: &str) -> Option<Connection> {
    match Connection::connect(&url(), ConnectionProperties::default()).await {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: broker at {} unreachable under CI=true: {e}", url());
            }
            eprintln!("SKIP {test}: broker at {} unreachable: {e}", url());
            None
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    // The manifest directory as cargo gives it to the running test (a test binary cargo reuses
    // from another checkout of the same sources still finds this checkout's fixtures), else as
    // it was at compile time.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../../fixtures/models")
        .join(name)
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("ml-{test}-{}-{nanos}", std::process::id())
}

struct Expected {
    rows: Vec<Vec<f64>>,
    outputs: Vec<Vec<f64>>,
}

fn expected(stem: &str) -> Expected {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{stem}.expected.json"))).unwrap(),
    )
    .unwrap();
    let split = |t: &Value| {
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let data: Vec<f64> = t["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        data.chunks(shape[1])
            .map(|c| c.to_vec())
            .collect::<Vec<_>>()
    };
    Expected {
        rows: split(&v["inputs"][0]),
        outputs: split(&v["outputs"][0]),
    }
}

/// A running worker with its shutdown handle.
struct Running {
    handle: tokio::task::JoinHandle<Result<(), tensorq_worker::serve::ServeError>>,
    stop: Option<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "worker did not stop cleanly: {r:?}"
        );
    }
}

fn start(config: ServeConfig, model: OnnxModel) -> Running {
    let server = Server::new(config, model);
    let metrics = server.metrics();
    let (tx, rx) = oneshot::channel::<()>();
    let url = url();
    let handle = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if in_process() {
            server.run_in_process(&embedded_broker().1, shutdown).await
        } else {
            server.run(&url, shutdown).await
        }
    });
    Running {
        handle,
        stop: Some(tx),
        metrics,
    }
}

fn config(queue: &str) -> ServeConfig {
    let mut c = ServeConfig::new(queue);
    c.metrics_interval = None;
    c
}

/// Client side: a channel, the request queue declared like the worker does, and an exclusive
/// reply queue with its consumer.
struct Client {
    channel: Channel,
    reply_queue: String,
    replies: Consumer,
}

async fn client(conn: &Connection, queue: &str, kind: QueueType) -> Client {
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    if kind == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap();
    let q = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let reply_queue = q.name().as_str().to_string();
    let replies = channel
        .basic_consume(
            reply_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    Client {
        channel,
        reply_queue,
        replies,
    }
}

impl Client {
    async fn send(
        &self,
        queue: &str,
        corr: &str,
        content_type: &str,
        headers: FieldTable,
        body: &[u8],
    ) {
        let props = BasicProperties::default()
            .with_content_type(content_type.into())
            .with_correlation_id(corr.into())
            .with_reply_to(self.reply_queue.as_str().into())
            .with_headers(headers);
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn send_json(&self, queue: &str, corr: &str, body: &Value) {
        self.send(
            queue,
            corr,
            "application/json",
            FieldTable::default(),
            body.to_string().as_bytes(),
        )
        .await;
    }

    /// Collects `n` replies keyed by correlation id.
    async fn collect(&mut self, n: usize) -> HashMap<String, lapin::message::Delivery> {
        let mut out = HashMap::new();
        while out.len() < n {
            let d = tokio::time::timeout(REPLY_TIMEOUT, self.replies.next())
                .await
                .unwrap_or_else(|_| panic!("timed out with {} of {n} replies", out.len()))
                .expect("reply consumer ended")
                .unwrap();
            let corr = d
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_string())
                .expect("reply without correlation id");
            out.insert(corr, d);
        }
        out
    }
}

/// Ready messages in `queue` (a passive declare).
async fn message_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

async fn delete_queues(conn: &Connection, queues: &[&str]) {
    let ch = conn.create_channel().await.unwrap();
    for q in queues {
        let _ = ch
            .queue_delete((*q).into(), QueueDeleteOptions::default())
            .await;
    }
}

fn oip(id: &str, row: &[f64]) -> Value {
    serde_json::json!({"id": id, "inputs": [{"name": "input", "shape": [1, row.len()], "datatype": "FP32", "data": row}]})
}

fn body_json(d: &lapin::message::Delivery) -> Value {
    serde_json::from_slice(&d.data).unwrap()
}

/// The first output's flat data of an OIP v2 JSON reply.
fn first_output(v: &Value) -> Vec<f64> {
    v["outputs"][0]["data"]
        .as_array()
        .expect("reply has outputs[0].data")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-5, "got {a}, onnxruntime {b}");
    }
}

fn seed_model(version: &str) -> OnnxModel {
    OnnxModel::load(fixture("seed_mlp.onnx"), "seed_mlp", version).unwrap()
}

#[tokio::test]
async fn rpc_replies_match_fixtures_in_every_format() {
    let Some(conn) = connect_or_skip("rpc_replies_match_fixtures_in_every_format").await else {
        return;
    };
    let queue = unique("rpc");
    let mut c = client(&conn, &queue, QueueType::Classic).await;
    let worker = start(config(&queue), seed_model("1"));
    let exp = expected("seed_mlp");

    for (i, row) in exp.rows.iter().enumerate() {
        c.send_json(&queue, &format!("json-{i}"), &oip(&format!("req-{i}"), row))
            .await;
    }
    // TF-Serving rows: all 16 in one request.
    c.send_json(&queue, "tfs", &serde_json::json!({"instances": exp.rows}))
        .await;
    // Raw little-endian, two rows.
    let raw: Vec<u8> = exp.rows[..2]
        .iter()
        .flatten()
        .flat_map(|x| (*x as f32).to_le_bytes())
        .collect();
    let mut h = FieldTable::default();
    h.insert("x-tensor-shape".into(), AMQPValue::LongString("2,8".into()));
    h.insert(
        "x-tensor-dtype".into(),
        AMQPValue::LongString("FP32".into()),
    );
    c.send(&queue, "raw", "application/octet-stream", h, &raw)
        .await;

    let replies = c.collect(exp.rows.len() + 2).await;
    for (i, want) in exp.outputs.iter().enumerate() {
        let d = &replies[&format!("json-{i}")];
        let headers = d.properties.headers().as_ref();
        assert_eq!(
            header_string(headers, HEADER_MODEL_VERSION).as_deref(),
            Some("1")
        );
        assert_eq!(
            header_string(headers, HEADER_REQUEST_ID),
            Some(format!("req-{i}"))
        );
        let v = body_json(d);
        assert_eq!(v["id"], format!("req-{i}"));
        assert_eq!(v["model_name"], "seed_mlp");
        let got = first_output(&v);
        assert_close(&got, want);
    }
    let tfs = body_json(&replies["tfs"]);
    let preds: Vec<f64> = tfs["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap())
        .collect();
    assert_close(
        &preds,
        &exp.outputs.iter().flatten().copied().collect::<Vec<_>>(),
    );
    let raw_reply = &replies["raw"];
    assert_eq!(
        header_string(raw_reply.properties.headers().as_ref(), "x-tensor-shape").as_deref(),
        Some("2,1")
    );
    let got: Vec<f64> = raw_reply
        .data
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    assert_close(
        &got,
        &exp.outputs[..2]
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>(),
    );

    assert_eq!(worker.metrics.snapshot().errors, 0);
    worker.stop().await;
    delete_queues(&conn, &[&queue, &format!("{queue}.errors")]).await;
}

#[tokio::test]
async fn burst_is_batched() {
    let Some(conn) = connect_or_skip("burst_is_batched").await else {
        return;
    };
    let queue = unique("burst");
    let mut c = client(&conn, &queue, QueueType::Classic).await;
    let exp = expected("seed_mlp");
    const N: usize = 64;
    // Queue the burst before the worker starts so the prefetch window fills at once.
    for i in 0..N {
        let row = &exp.rows[i % exp.rows.len()];
        c.send_json(&queue, &i.to_string(), &oip(&i.to_string(), row))
            .await;
    }
    let mut cfg = config(&queue);
    cfg.limits = BatchLimits {
        max_batch: 32,
        max_delay: Duration::from_millis(20),
    };
    cfg.prefetch = 64;
    let worker = start(cfg, seed_model("1"));
    let replies = c.collect(N).await;
    for i in 0..N {
        let v = body_json(&replies[&i.to_string()]);
        let got = first_output(&v);
        assert_close(&got, &exp.outputs[i % exp.outputs.len()]);
    }
    // The counters are updated after the replies are published: give the last batch a moment.
    let mut s = worker.metrics.snapshot();
    for _ in 0..200 {
        if s.requests >= N as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        s = worker.metrics.snapshot();
    }
    assert!(s.batch_size.max > 1, "no batching happened: {s:?}");
    assert!(s.batches < N as u64, "one inference per request: {s:?}");
    assert_eq!(s.requests, N as u64);
    worker.stop().await;
    delete_queues(&conn, &[&queue, &format!("{queue}.errors")]).await;
}

#[tokio::test]
async fn poison_messages_get_error_replies_and_are_parked() {
    let Some(conn) = connect_or_skip("poison_messages_get_error_replies_and_are_parked").await
    else {
        return;
    };
    let queue = unique("poison");
    let errors = format!("{queue}.errors");
    let mut c = client(&conn, &queue, QueueType::Classic).await;
    let exp = expected("seed_mlp");
    let mut cfg = config(&queue);
    cfg.limits = BatchLimits {
        max_batch: 8,
        max_delay: Duration::from_millis(30),
    };
    let worker = start(cfg, seed_model("1"));

    c.send(
        &queue,
        "malformed",
        "application/json",
        FieldTable::default(),
        b"{\"inputs\": [",
    )
    .await;
    c.send_json(&queue, "good-1", &oip("g1", &exp.rows[0]))
        .await;
    c.send_json(&queue, "bad-shape", &oip("b1", &exp.rows[0][..7]))
        .await;
    c.send(
        &queue,
        "xml",
        "application/xml",
        FieldTable::default(),
        b"<x/>",
    )
    .await;
    c.send_json(&queue, "good-2", &oip("g2", &exp.rows[1]))
        .await;
    let replies = c.collect(5).await;

    for (corr, needle) in [
        ("malformed", "JSON"),
        ("bad-shape", "dimension 1 must be 8"),
        ("xml", "unsupported content type"),
    ] {
        let d = &replies[corr];
        let v = body_json(d);
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{corr}: no error in {v}"));
        assert!(msg.contains(needle), "{corr}: {msg}");
        assert!(header_string(d.properties.headers().as_ref(), HEADER_ERROR).is_some());
    }
    assert_eq!(body_json(&replies["bad-shape"])["id"], "b1");
    for (corr, row) in [("good-1", 0), ("good-2", 1)] {
        let v = body_json(&replies[corr]);
        let got = first_output(&v);
        assert_close(&got, &exp.outputs[row]);
    }

    // The three bad messages are parked with the reason, and nothing is left unacked.
    let ch = conn.create_channel().await.unwrap();
    let mut parked = Vec::new();
    for _ in 0..50 {
        match ch
            .basic_get(errors.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => parked.push(m),
            None if parked.len() >= 3 => break,
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(parked.len(), 3);
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for m in &parked {
        let reason = header_string(m.delivery.properties.headers().as_ref(), HEADER_ERROR)
            .expect("x-tensorq-error header");
        assert!(!reason.is_empty());
        bodies.push(m.delivery.data.clone());
    }
    assert!(bodies.contains(&b"<x/>".to_vec()));
    // Answers are counted once their batch has settled (confirms in, acks sent), which may trail
    // the replies a little.
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    let mut s = worker.metrics.snapshot();
    while (s.requests, s.errors) != (2, 3) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = worker.metrics.snapshot();
    }
    assert_eq!((s.requests, s.errors), (2, 3));
    assert_eq!(message_count(&ch, &queue).await, 0);
    worker.stop().await;
    delete_queues(&conn, &[&queue, &errors]).await;
}

#[tokio::test]
async fn killed_worker_loses_nothing() {
    let Some(conn) = connect_or_skip("killed_worker_loses_nothing").await else {
        return;
    };
    let queue = unique("kill");
    let mut c = client(&conn, &queue, QueueType::Classic).await;
    let exp = expected("seed_mlp");
    // The first worker holds its batch open for a long time, so it is killed before any ack.
    let mut slow = config(&queue);
    slow.limits = BatchLimits {
        max_batch: 64,
        max_delay: Duration::from_secs(30),
    };
    let first = start(slow, seed_model("1"));
    c.send_json(&queue, "k", &oip("k1", &exp.rows[3])).await;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while first.metrics.snapshot().received == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first worker never received the request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.handle.abort();
    let _ = first.handle.await;

    let second = start(config(&queue), seed_model("2"));
    let replies = c.collect(1).await;
    let d = &replies["k"];
    assert_eq!(
        header_string(d.properties.headers().as_ref(), HEADER_MODEL_VERSION).as_deref(),
        Some("2")
    );
    let v = body_json(d);
    assert_eq!(v["id"], "k1");
    let got = first_output(&v);
    assert_close(&got, &exp.outputs[3]);
    second.stop().await;
    delete_queues(&conn, &[&queue, &format!("{queue}.errors")]).await;
}

#[tokio::test]
async fn hot_swap_and_quorum_queue() {
    let Some(conn) = connect_or_skip("hot_swap_and_quorum_queue").await else {
        return;
    };
    let queue = unique("swap");
    let dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("seed_mlp.onnx"), dir.join("a.onnx")).unwrap();
    let mut c = client(&conn, &queue, QueueType::Quorum).await;
    let exp = expected("seed_mlp");
    let mut cfg = config(&queue);
    cfg.queue_type = QueueType::Quorum;
    cfg.watch = Some((dir.clone(), Duration::from_millis(100)));
    let model = OnnxModel::load(dir.join("a.onnx"), "seed_mlp", "1").unwrap();
    let worker = start(cfg, model);

    c.send_json(&queue, "before", &oip("b", &exp.rows[0])).await;
    let r = c.collect(1).await;
    assert_eq!(
        header_string(
            r["before"].properties.headers().as_ref(),
            HEADER_MODEL_VERSION
        )
        .as_deref(),
        Some("1")
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::copy(fixture("seed_mlp.onnx"), dir.join("b.onnx")).unwrap();
    // Keep asking; every reply must be correct and name a version, and version 2 must show up.
    let mut saw_v2 = false;
    for i in 0..100 {
        let corr = format!("during-{i}");
        c.send_json(&queue, &corr, &oip(&corr, &exp.rows[1])).await;
        let r = c.collect(1).await;
        let d = &r[&corr];
        let version = header_string(d.properties.headers().as_ref(), HEADER_MODEL_VERSION).unwrap();
        let v = body_json(d);
        assert_eq!(v["model_version"], version.as_str());
        let got = first_output(&v);
        assert_close(&got, &exp.outputs[1]);
        if version == "2" {
            saw_v2 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_v2, "the new checkpoint was never swapped in");
    assert_eq!(worker.metrics.snapshot().swaps, 1);
    worker.stop().await;
    delete_queues(&conn, &[&queue, &format!("{queue}.errors")]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_no_request() {
    let Some(conn) = connect_or_skip("hot_swap_under_load_loses_no_request").await else {
        return;
    };
    let queue = unique("swapload");
    let dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("seed_mlp.onnx"), dir.join("a.onnx")).unwrap();
    let mut c = client(&conn, &queue, QueueType::Classic).await;
    let exp = Arc::new(expected("seed_mlp"));
    let mut cfg = config(&queue);
    cfg.watch = Some((dir.clone(), Duration::from_millis(50)));
    let model = OnnxModel::load(dir.join("a.onnx"), "seed_mlp", "1").unwrap();
    let worker = start(cfg, model);

    // A publisher keeps requests flowing (pipelined, many in flight) until told to stop.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut publisher = Some({
        let ch = conn.create_channel().await.unwrap();
        let (queue, reply_to, exp) = (queue.clone(), c.reply_queue.clone(), Arc::clone(&exp));
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !*stop_rx.borrow_and_update() && sent < 20_000 {
                for _ in 0..25 {
                    let row = &exp.rows[sent % exp.rows.len()];
                    let corr = format!("{sent}");
                    let props = BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_correlation_id(corr.as_str().into())
                        .with_reply_to(reply_to.as_str().into());
                    ch.basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        oip(&corr, row).to_string().as_bytes(),
                        props,
                    )
                    .await
                    .unwrap();
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    });

    let mut seen: HashMap<usize, String> = HashMap::new();
    let mut swapped = false;
    let mut v2_at: Option<usize> = None;
    let mut sent_total: Option<usize> = None;
    loop {
        if let Some(total) = sent_total {
            if seen.len() == total {
                break;
            }
        }
        let d = tokio::time::timeout(REPLY_TIMEOUT, c.replies.next())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} replies", seen.len()))
            .expect("reply consumer ended")
            .unwrap();
        let corr: usize = d
            .properties
            .correlation_id()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        let v = body_json(&d);
        assert!(v.get("error").is_none(), "request {corr} failed: {v}");
        let version = header_string(d.properties.headers().as_ref(), HEADER_MODEL_VERSION)
            .expect("reply names no model version");
        assert_eq!(v["model_version"], version.as_str());
        let got = first_output(&v);
        assert_close(&got, &exp.outputs[corr % exp.rows.len()]);
        seen.insert(corr, version.clone());
        if !swapped && seen.len() >= 200 {
            std::fs::copy(fixture("seed_mlp.onnx"), dir.join("b.onnx")).unwrap();
            swapped = true;
        }
        if version == "2" && v2_at.is_none() {
            v2_at = Some(seen.len());
        }
        if let Some(at) = v2_at {
            if sent_total.is_none() && seen.len() >= at + 200 {
                stop_tx.send(true).unwrap();
                sent_total = Some(publisher.take().unwrap().await.unwrap());
                // Replies to everything published must arrive, nothing more.
            }
        }
        assert!(
            seen.len() < 20_000 || sent_total.is_some(),
            "version 2 never served"
        );
    }
    let v1 = seen.values().filter(|v| *v == "1").count();
    let v2 = seen.values().filter(|v| *v == "2").count();
    assert!(v1 >= 200 && v2 >= 200, "v1 {v1}, v2 {v2}");
    assert_eq!(worker.metrics.snapshot().swaps, 1);
    assert_eq!(worker.metrics.snapshot().errors, 0);
    worker.stop().await;
    // Every request was acked: none came back to the queue when the worker's connection closed.
    let probe = conn.create_channel().await.unwrap();
    assert_eq!(
        message_count(&probe, &queue).await,
        0,
        "requests left unacked"
    );
    delete_queues(&conn, &[&queue, &format!("{queue}.errors")]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn deleting_the_request_queue_stops_the_worker() {
    let Some(conn) = connect_or_skip("deleting_the_request_queue_stops_the_worker").await else {
        return;
    };
    let queue = unique("deleted");
    let mut c = client(&conn, &queue, QueueType::Classic).await;
    let exp = expected("seed_mlp");
    let worker = start(config(&queue), seed_model("1"));
    c.send_json(&queue, "d", &oip("d1", &exp.rows[0])).await;
    c.collect(1).await;
    delete_queues(&conn, &[&queue]).await;
    let ended = tokio::time::timeout(REPLY_TIMEOUT, worker.handle).await;
    assert!(
        matches!(
            ended,
            Ok(Ok(Err(tensorq_worker::serve::ServeError::ConsumerClosed(
                _
            ))))
        ),
        "the worker did not stop with ConsumerClosed: {ended:?}"
    );
    delete_queues(&conn, &[&format!("{queue}.errors")]).await;
}
