//! The metrics endpoint: serving workers' [`Metrics`] exported over HTTP, in the Prometheus text
//! format (`GET /metrics`) and as JSON snapshots (`GET /metrics.json`); inside `tensorq server`
//! also each queue's ready messages and consumers (Prometheus text only).
//!
//! Owns the [`Registry`] (which workers are exported, by request queue, and the broker whose
//! queues are), the rendering and a
//! deliberately small HTTP/1.1 responder: one request per connection, `GET` or `HEAD` only, the
//! request head capped at [`MAX_REQUEST_HEAD`] bytes and [`REQUEST_TIMEOUT`]. Counting itself is
//! `metrics`'s job. A worker that restarts (embedded workers do when their queue is deleted)
//! registers its new counters under the same queue, so the exported counters restart from zero,
//! which Prometheus treats as a counter reset.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::metrics::{HistogramSnapshot, Metrics, MetricsSnapshot};

/// Longest request head (request line and headers) read before answering 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Longest time a client may take to send its request head and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The workers whose metrics are exported, by request queue.
#[derive(Default)]
pub struct Registry {
    workers: Mutex<Vec<(String, Arc<Metrics>)>>,
    broker: OnceLock<Arc<tensorq_broker::Broker>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Exports `metrics` as the worker of `queue`, in place of any earlier worker of that queue.
    pub fn register(&self, queue: &str, metrics: Arc<Metrics>) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        match workers.iter_mut().find(|(q, _)| q == queue) {
            Some(entry) => entry.1 = metrics,
            None => {
                workers.push((queue.to_owned(), metrics));
                workers.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
    }

    /// Also exports the queues of `broker` (its vhosts' queues, read at each scrape); the first
    /// broker given is kept.
    pub fn watch_broker(&self, broker: Arc<tensorq_broker::Broker>) {
        let _ = self.broker.set(broker);
    }

    /// A snapshot of every registered worker, by queue name.
    pub fn snapshots(&self) -> Vec<(String, MetricsSnapshot)> {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .iter()
            .map(|(queue, m)| (queue.clone(), m.snapshot()))
            .collect()
    }

    /// Every worker's metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = render_prometheus(&self.snapshots());
        if let Some(broker) = self.broker.get() {
            let mut queues: Vec<QueueGauges> = broker
                .vhosts()
                .flat_map(|v| {
                    v.queues().into_iter().map(|q| QueueGauges {
                        vhost: v.name.clone(),
                        queue: q.name().to_string(),
                        messages: q.message_count(),
                        consumers: q.consumer_count(),
                    })
                })
                .collect();
            queues.sort_by(|a, b| (&a.vhost, &a.queue).cmp(&(&b.vhost, &b.queue)));
            render_queues(&mut out, &queues);
        }
        out
    }

    /// Every worker's snapshot as a JSON object keyed by queue name.
    pub fn json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .snapshots()
            .into_iter()
            .map(|(queue, s)| (queue, serde_json::to_value(s).unwrap_or_default()))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The counters, each a `fn(snapshot) -> value`, with their names and help texts.
type Counter = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);
const COUNTERS: &[Counter] = &[
    (
        "tensorq_serve_received_total",
        "Messages taken off the request queue.",
        |s| s.received,
    ),
    (
        "tensorq_serve_requests_total",
        "Requests answered with a result.",
        |s| s.requests,
    ),
    (
        "tensorq_serve_errors_total",
        "Requests answered with an error and parked in the errors queue.",
        |s| s.errors,
    ),
    (
        "tensorq_serve_batches_total",
        "Inferences run (one per batch, plus message-by-message retries).",
        |s| s.batches,
    ),
    (
        "tensorq_serve_batch_retries_total",
        "Batches that failed as a whole and were retried message by message.",
        |s| s.batch_retries,
    ),
    (
        "tensorq_serve_model_swaps_total",
        "Model versions swapped in after the first.",
        |s| s.swaps,
    ),
];

/// The histograms: name, help, the snapshot's field, and the divisor that turns its unit into
/// the exported one (microseconds into seconds).
type HistogramFamily = (
    &'static str,
    &'static str,
    fn(&MetricsSnapshot) -> &HistogramSnapshot,
    f64,
);
const HISTOGRAMS: &[HistogramFamily] = &[
    (
        "tensorq_serve_batch_size",
        "Requests per inference.",
        |s| &s.batch_size,
        1.0,
    ),
    (
        "tensorq_serve_queue_wait_seconds",
        "Time from a request's delivery to the worker until its batch closed.",
        |s| &s.queue_wait_us,
        1e6,
    ),
    (
        "tensorq_serve_inference_seconds",
        "Time of one inference (one batch).",
        |s| &s.inference_us,
        1e6,
    ),
];

/// Renders `workers` (queue name, snapshot) in the Prometheus text format.
pub fn render_prometheus(workers: &[(String, MetricsSnapshot)]) -> String {
    let mut out = String::new();
    for (name, help, value) in COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (queue, s) in workers {
            let _ = writeln!(out, "{name}{} {}", labels(queue, s, None), value(s));
        }
    }
    for (name, help, field, divisor) in HISTOGRAMS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (queue, s) in workers {
            let h = field(s);
            let mut cumulative = 0u64;
            for (k, count) in h.buckets.iter().enumerate() {
                cumulative += count;
                let le = match h.bounds.get(k) {
                    Some(bound) => format!("{}", *bound as f64 / divisor),
                    None => "+Inf".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {cumulative}",
                    labels(queue, s, Some(&le))
                );
            }
            // The count is the buckets' total, so `+Inf` and `_count` always agree even when
            // a value was recorded between the reads of the snapshot.
            let _ = writeln!(
                out,
                "{name}_sum{} {}",
                labels(queue, s, None),
                h.sum as f64 / divisor
            );
            let _ = writeln!(out, "{name}_count{} {cumulative}", labels(queue, s, None));
        }
    }
    out
}

/// One queue's gauges, read from the broker at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueGauges {
    pub vhost: String,
    pub queue: String,
    /// Messages ready for delivery (as `queue.declare-ok` counts them: not the unacked ones).
    pub messages: u32,
    pub consumers: u32,
}

/// Appends the queue gauges in the Prometheus text format.
pub fn render_queues(out: &mut String, queues: &[QueueGauges]) {
    type Gauge = (&'static str, &'static str, fn(&QueueGauges) -> u32);
    const GAUGES: &[Gauge] = &[
        (
            "tensorq_queue_messages_ready",
            "Messages ready for delivery in the queue (not counting unacked ones).",
            |g| g.messages,
        ),
        ("tensorq_queue_consumers", "Consumers on the queue.", |g| {
            g.consumers
        }),
    ];
    for (name, help, value) in GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for g in queues {
            let _ = writeln!(
                out,
                "{name}{{vhost=\"{}\",queue=\"{}\"}} {}",
                escape_label(&g.vhost),
                escape_label(&g.queue),
                value(g)
            );
        }
    }
}

fn labels(queue: &str, s: &MetricsSnapshot, le: Option<&str>) -> String {
    let mut l = format!(
        "{{queue=\"{}\",model=\"{}\"",
        escape_label(queue),
        escape_label(&s.model)
    );
    if let Some(le) = le {
        let _ = write!(l, ",le=\"{le}\"");
    }
    l.push('}');
    l
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Binds `addr` for the endpoint; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })
}

/// A running endpoint; dropping it stops answering (the listener closes).
pub struct Endpoint(tokio::task::JoinHandle<()>);

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers metrics requests on `listener` until the returned [`Endpoint`] is dropped.
pub fn spawn(listener: TcpListener, registry: Arc<Registry>) -> Endpoint {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening (GET /metrics, /metrics.json)");
    }
    Endpoint(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, typically: wait rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &registry)).await;
            });
        }
    }))
}

/// Reads one request head and writes one answer, then closes the connection.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST_HEAD {
            let text = format!("request head over {MAX_REQUEST_HEAD} bytes\n");
            return respond(&mut stream, "431 Request Header Fields Too Large", &text).await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return respond(&mut stream, "400 Bad Request", "malformed request line\n").await;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return respond(&mut stream, "400 Bad Request", "malformed request line\n").await;
    }
    let path = target.split('?').next().unwrap_or_default();
    let (content_type, body) = match path {
        "/metrics" => (
            "text/plain; version=0.0.4; charset=utf-8",
            registry.prometheus(),
        ),
        "/metrics.json" => ("application/json", registry.json()),
        _ => {
            let text = format!("no such path {path:?}: try /metrics or /metrics.json\n");
            return respond(&mut stream, "404 Not Found", &text).await;
        }
    };
    let send_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => {
            let text = format!("method {method} not allowed: GET or HEAD\n");
            return respond(&mut stream, "405 Method Not Allowed", &text).await;
        }
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if send_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

async fn respond(stream: &mut TcpStream, status: &str, text: &str) -> std::io::Result<()> {
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{allow}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_agree_with_their_count() {
        let m = Metrics::new("m\"x");
        m.inference(3, Duration::from_micros(120));
        m.inference(64, Duration::from_micros(2_000));
        m.inference(1_000, Duration::from_secs(3));
        let text = render_prometheus(&[("q\\1".to_owned(), m.snapshot())]);
        let l = r#"{queue="q\\1",model="m\"x""#;
        for line in [
            format!("tensorq_serve_batches_total{l}}} 3"),
            format!("tensorq_serve_batch_size_bucket{l},le=\"2\"}} 0"),
            format!("tensorq_serve_batch_size_bucket{l},le=\"4\"}} 1"),
            format!("tensorq_serve_batch_size_bucket{l},le=\"64\"}} 2"),
            format!("tensorq_serve_batch_size_bucket{l},le=\"+Inf\"}} 3"),
            format!("tensorq_serve_batch_size_sum{l}}} 1067"),
            format!("tensorq_serve_batch_size_count{l}}} 3"),
            format!("tensorq_serve_inference_seconds_bucket{l},le=\"0.00025\"}} 1"),
            format!("tensorq_serve_inference_seconds_bucket{l},le=\"1\"}} 2"),
            format!("tensorq_serve_inference_seconds_sum{l}}} 3.00212"),
        ] {
            assert!(text.lines().any(|x| x == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn queue_gauges_are_labelled_by_vhost_and_queue() {
        let mut out = String::new();
        let g = QueueGauges {
            vhost: "/".into(),
            queue: "a\"b".into(),
            messages: 3,
            consumers: 1,
        };
        render_queues(&mut out, &[g]);
        assert!(
            out.contains("# TYPE tensorq_queue_messages_ready gauge\n"),
            "{out}"
        );
        assert!(
            out.contains("tensorq_queue_messages_ready{vhost=\"/\",queue=\"a\\\"b\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("tensorq_queue_consumers{vhost=\"/\",queue=\"a\\\"b\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn a_restarted_worker_replaces_its_queue_entry() {
        let r = Registry::new();
        let first = Arc::new(Metrics::new("a"));
        first.received();
        r.register("q", first);
        r.register("p", Arc::new(Metrics::new("b")));
        r.register("q", Arc::new(Metrics::new("a")));
        let s = r.snapshots();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0.as_str(), s[1].0.as_str()), ("p", "q"));
        assert_eq!(s[1].1.received, 0);
    }
}
