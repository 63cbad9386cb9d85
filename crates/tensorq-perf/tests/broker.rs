//! Integration tests against a real broker (RabbitMQ or tensorq) at
//! `TENSORQ_AMQP_URL` (default the local RabbitMQ). They check that the
//! generator's counts are true: a lapin consumer counts what perf publishes,
//! and every mode delivers what it claims. With `CI=true` an unreachable
//! broker fails the tests; otherwise they skip with a message.

use clap::Parser;
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tensorq_perf::{run, PerfArgs, PerfError, DEFAULT_URI};

/// Messages in the lapin cross-check.
const XCHECK_COUNT: u64 = 3_000;
/// Rate of the cross-check producer (messages/s): modest, so lapin keeps up.
const XCHECK_RATE: &str = "3000";
/// How long the lapin consumer waits for the expected messages.
const XCHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to keep listening for surplus deliveries after the count is reached.
const SURPLUS_WAIT: Duration = Duration::from_millis(300);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    perf: PerfArgs,
}

fn broker_url() -> String {
    std::env::var("TENSORQ_AMQP_URL").unwrap_or_else(|_| DEFAULT_URI.to_string())
}

/// True when the broker answers; false (skip) when it does not and CI is not set.
fn broker_available() -> bool {
    let url = broker_url();
    let addr = url
        .parse::<amq_protocol::uri::AMQPUri>()
        .ok()
        .and_then(|u| {
            (u.authority.host.clone(), u.authority.port)
                .to_socket_addrs()
                .ok()
        })
        .and_then(|mut addrs| addrs.next());
    let reachable = addr
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("broker at {url} is unreachable and CI=true");
        }
        eprintln!("SKIP: broker at {url} is unreachable (set TENSORQ_AMQP_URL)");
    }
    reachable
}

fn args(extra: &[&str]) -> PerfArgs {
    let url = broker_url();
    let mut argv = vec!["perf", "--uri", url.as_str()];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli.perf,
        Err(e) => panic!("bad test arguments: {e}"),
    }
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("perf-{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn lapin_consumer_counts_what_perf_publishes() -> Result<(), Box<dyn std::error::Error>> {
    if !broker_available() {
        return Ok(());
    }
    let queue = unique("xcheck");
    let conn = Connection::connect(&broker_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let declare = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.as_str().into(), declare, FieldTable::default())
        .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "lapin-xcheck".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let counter = tokio::spawn(async move {
        let mut seen = 0u64;
        let deadline = tokio::time::Instant::now() + XCHECK_TIMEOUT;
        loop {
            let wait = if seen >= XCHECK_COUNT {
                SURPLUS_WAIT
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            };
            match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(Ok(_))) => seen += 1,
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(None) | Err(_) => return Ok(seen),
            }
        }
    });
    let count = XCHECK_COUNT.to_string();
    let report = run(args(&[
        "--queue",
        &queue,
        "--consumers",
        "0",
        "--count",
        &count,
        "--rate",
        XCHECK_RATE,
        "--confirm",
        "50",
    ]))
    .await?;
    let seen = counter.await?.map_err(std::io::Error::other)?;
    assert_eq!(report.published, XCHECK_COUNT);
    assert_eq!(report.confirmed, XCHECK_COUNT);
    assert_eq!(
        seen, XCHECK_COUNT,
        "lapin saw {seen}, perf published {}",
        report.published
    );
    assert!(
        report.publish_rate > 0.0 && report.publish_rate < 2.0 * 3000.0,
        "rate limit ignored: {}",
        report.publish_rate
    );
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn end_to_end_count_mode_consumes_every_message() -> Result<(), Box<dyn std::error::Error>> {
    if !broker_available() {
        return Ok(());
    }
    let report = run(args(&[
        "--producers",
        "2",
        "--consumers",
        "2",
        "--count",
        "40000",
        "--confirm",
        "1000",
        "--multi-ack",
        "50",
    ]))
    .await?;
    assert_eq!(report.published, 40_000);
    assert_eq!(report.confirmed, 40_000);
    assert_eq!(report.consumed, 40_000);
    let lat = report.latency.ok_or("no latency recorded")?;
    assert_eq!(lat.samples, 40_000);
    assert!(lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);
    assert!(report.confirm_latency.is_some());
    let json: serde_json::Value = serde_json::from_str(&report.render(true))?;
    assert_eq!(json["consumed"], 40_000);
    Ok(())
}

#[tokio::test]
async fn publish_only_waits_for_the_queue_then_consume_only_drains(
) -> Result<(), Box<dyn std::error::Error>> {
    if !broker_available() {
        return Ok(());
    }
    let published = run(args(&["--publish-only", "--count", "30000"])).await?;
    assert_eq!(published.published, 30_000);
    assert!(
        published.consumed >= 30_000,
        "queue held {}",
        published.consumed
    );
    assert!(published.consume_rate > 0.0);
    let drained = run(args(&[
        "--consume-only",
        "--count",
        "30000",
        "--consumers",
        "2",
    ]))
    .await?;
    assert_eq!(drained.consumed, 30_000);
    assert!(drained.consume_rate > 0.0);
    assert!(drained.latency.is_none());
    Ok(())
}

#[tokio::test]
async fn rpc_mode_gets_a_reply_for_every_request() -> Result<(), Box<dyn std::error::Error>> {
    if !broker_available() {
        return Ok(());
    }
    let report = run(args(&[
        "--rpc",
        "--count",
        "2000",
        "--rpc-window",
        "8",
        "--producers",
        "2",
    ]))
    .await?;
    assert_eq!(report.published, 2_000);
    assert_eq!(report.consumed, 2_000);
    assert_eq!(
        report.latency.ok_or("no round-trip latency")?.samples,
        2_000
    );
    Ok(())
}

/// Requests in the external-responder test.
const EXTERNAL_COUNT: u64 = 500;
/// What the external responder answers, whatever the request.
const EXTERNAL_REPLY: &[u8] = br#"{"predictions":[[0.4]]}"#;

#[tokio::test]
async fn rpc_with_an_external_responder_times_replies_by_correlation_id(
) -> Result<(), Box<dyn std::error::Error>> {
    if !broker_available() {
        return Ok(());
    }
    let queue = unique("external");
    let request = br#"{"instances":[[0.1,0.2,0.3,0.4]]}"#;
    let body_file = std::env::temp_dir().join(format!("{queue}.json"));
    std::fs::write(&body_file, request)?;
    let conn = Connection::connect(&broker_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut requests = ch
        .basic_consume(
            queue.as_str().into(),
            "lapin-responder".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let reply_ch = ch.clone();
    let bad = Arc::new(AtomicU64::new(0));
    let bad_seen = Arc::clone(&bad);
    let responder = tokio::spawn(async move {
        while let Some(delivery) = requests.next().await {
            let d = delivery.map_err(|e| e.to_string())?;
            let ct = d.properties.content_type().as_ref().map(|c| c.to_string());
            if d.data != request || ct.as_deref() != Some("application/json") {
                bad_seen.fetch_add(1, Ordering::Relaxed);
            }
            let Some(reply_to) = d.properties.reply_to().clone() else {
                bad_seen.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut props = BasicProperties::default();
            if let Some(id) = d.properties.correlation_id().clone() {
                props = props.with_correlation_id(id);
            }
            reply_ch
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    EXTERNAL_REPLY,
                    props,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    });
    let count = EXTERNAL_COUNT.to_string();
    let path = body_file.display().to_string();
    let report = run(args(&[
        "--rpc",
        "--consumers",
        "0",
        "--queue",
        &queue,
        "--body-file",
        &path,
        "--content-type",
        "application/json",
        "--count",
        &count,
        "--rpc-window",
        "8",
    ]))
    .await;
    let _ = std::fs::remove_file(&body_file);
    let report = report?;
    assert_eq!(bad.load(Ordering::Relaxed), 0, "responder saw bad requests");
    responder.abort();
    assert_eq!(report.published, EXTERNAL_COUNT);
    assert_eq!(report.consumed, EXTERNAL_COUNT);
    assert_eq!(report.unmatched, 0);
    assert_eq!(report.consumers, 0);
    assert_eq!(report.size, request.len());
    let lat = report.latency.ok_or("no round-trip latency")?;
    assert_eq!(lat.samples, EXTERNAL_COUNT);
    // Were the reply body's first bytes read as a send stamp, every span would be 1 µs.
    assert!(
        lat.p50_us > 1,
        "round trip not timed from the send: {lat:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.render(true))?;
    assert_eq!(json["mode"], "rpc");
    assert_eq!(json["consumed"], EXTERNAL_COUNT);
    // perf neither declared (auto-delete) nor deleted the responder's queue.
    let ok = ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    assert_eq!(ok.message_count(), 0);
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn rpc_with_an_external_responder_needs_an_existing_queue() {
    if !broker_available() {
        return;
    }
    let queue = unique("no-such-responder");
    match run(args(&[
        "--rpc",
        "--consumers",
        "0",
        "--queue",
        &queue,
        "--count",
        "1",
    ]))
    .await
    {
        Err(PerfError::MissingQueue { queue: q, reason }) => {
            assert_eq!(q, queue);
            assert!(reason.contains("404"), "{reason}");
        }
        other => panic!(
            "expected MissingQueue, got {:?}",
            other.map(|r| r.published)
        ),
    }
}

#[tokio::test]
async fn refused_credentials_are_an_error() {
    if !broker_available() {
        return;
    }
    let mut bad = args(&["--count", "1"]);
    bad.uri = match bad.uri.parse::<amq_protocol::uri::AMQPUri>() {
        Ok(u) => format!(
            "amqp://perf-no-such-user:wrong@{}:{}/%2f",
            u.authority.host, u.authority.port
        ),
        Err(e) => panic!("bad url: {e}"),
    };
    assert!(run(bad).await.is_err());
}
