//! The sink and the generator against each other, no broker needed: every
//! publish the generator reports is one the sink counted, and confirms flow
//! back from the sink.

use clap::Parser;
use std::time::Duration;
use tensorq_perf::{run, run_sink, PerfArgs, PerfSinkArgs};

/// Messages published into the sink.
const COUNT: u64 = 200_000;
/// How long the sink stays up (the publish takes well under a second).
const SINK_SECS: &str = "4";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    perf: PerfArgs,
}

#[derive(Parser)]
struct SinkCli {
    #[command(flatten)]
    sink: PerfSinkArgs,
}

#[tokio::test]
async fn sink_counts_every_publish_and_confirms_them() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let sink_args =
        SinkCli::try_parse_from(["sink", "--listen", &listen, "--duration", SINK_SECS])?.sink;
    let sink = tokio::spawn(run_sink(sink_args));
    let addr: std::net::SocketAddr = listen.parse()?;
    let mut up = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "sink did not start");
    let uri = format!("amqp://guest:guest@{listen}/%2f");
    let count = COUNT.to_string();
    let args = Cli::try_parse_from([
        "perf",
        "--uri",
        &uri,
        "--consumers",
        "0",
        "--count",
        &count,
        "--confirm",
        "1000",
        "--producers",
        "2",
    ])?
    .perf;
    let report = run(args).await?;
    assert_eq!(report.published, COUNT);
    assert_eq!(report.confirmed, COUNT);
    assert!(report.confirm_latency.is_some());
    let sink_report = sink.await??;
    // One probe connection from the readiness loop, one control and two producers.
    assert_eq!(sink_report.connections, 4);
    assert_eq!(sink_report.publishes, COUNT);
    assert!(sink_report.publish_rate > 0.0);
    Ok(())
}
