//! `tensorq server`: loads the configuration, binds, writes the port file, and runs the broker
//! until Ctrl-C or SIGTERM (then every connection is closed with 320 and the process exits 0).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tensorq_broker::Server;

/// Flags of `tensorq server`; each overrides the same key of the config file and environment.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on, e.g. 0.0.0.0:5672 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the bound port here once listening (for tests and scripts).
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Directory of the durable store (default ./tensorq-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Confirm policy for persistent messages: always | interval=<ms> | never.
    #[arg(long)]
    sync: Option<String>,
    /// Longest time (ms, 0..=1000) a persistent message published without confirms or a
    /// transaction waits in memory before it is written; acked within it, it is never written.
    /// 0 writes it at once.
    #[arg(long, value_name = "MS")]
    lazy_write_ms: Option<u64>,
    /// Largest message body in bytes.
    #[arg(long)]
    max_message_size: Option<u64>,
    /// Block publishers while the data dir's disk has fewer free bytes than this.
    #[arg(long)]
    disk_free_limit: Option<u64>,
    /// Memory high watermark as a fraction of RAM.
    #[arg(long)]
    memory_high_watermark: Option<f64>,
    /// Memory high watermark in bytes (overrides the fraction).
    #[arg(long)]
    memory_high_watermark_bytes: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Serve a model from a queue inside this process: QUEUE=MODEL.onnx, optionally followed by
    /// `tensorq worker serve` flags as `,flag=value` (e.g. `,max-batch=32`); repeatable. The
    /// worker uses the broker's queues directly (see --serve-transport) and starts again if its
    /// queue is deleted.
    #[arg(long = "serve", value_name = "QUEUE=MODEL[,flag=value...]")]
    serve: Vec<String>,
    /// How --serve workers reach the broker: in process (no sockets or frames), or over
    /// loopback AMQP as the guest user, exactly as `tensorq worker serve` would (kept to
    /// measure one against the other).
    #[arg(long, value_enum, default_value_t = ServeTransport::InProcess)]
    serve_transport: ServeTransport,
    /// Serve metrics over HTTP on this address (e.g. 127.0.0.1:9419): every queue's ready
    /// messages and consumers, and the --serve workers' counters, as Prometheus text at
    /// /metrics; the workers' snapshots as JSON at /metrics.json.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// See `--serve-transport`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeTransport {
    InProcess,
    Loopback,
}

/// Where an embedded worker finds the broker.
#[derive(Clone)]
enum Target {
    InProcess(Arc<tensorq_broker::Broker>),
    Loopback(String),
}

/// Wraps the worker's flags so `--serve` can build them with their defaults.
#[derive(clap::Parser)]
struct EmbeddedServe {
    #[command(flatten)]
    args: tensorq_worker::serve::ServeArgs,
}

impl ServerArgs {
    fn flags(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if let Some(v) = &self.listen {
            f.push(("listen", toml_string(v)));
        }
        if let Some(v) = &self.data_dir {
            f.push(("data_dir", toml_string(&v.to_string_lossy())));
        }
        if let Some(v) = &self.sync {
            f.push(("sync", toml_string(v)));
        }
        if let Some(v) = self.lazy_write_ms {
            f.push(("lazy_write_ms", v.to_string()));
        }
        if let Some(v) = self.disk_free_limit {
            f.push(("disk_free_limit", v.to_string()));
        }
        if let Some(v) = self.max_message_size {
            f.push(("max_message_size", v.to_string()));
        }
        if let Some(v) = self.memory_high_watermark {
            f.push(("memory_high_watermark", v.to_string()));
        }
        if let Some(v) = self.memory_high_watermark_bytes {
            f.push(("memory_high_watermark_bytes", v.to_string()));
        }
        f
    }
}

/// A TOML string literal for a flag's value.
fn toml_string(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let config = crate::config::load(args.config.as_deref(), &args.flags())?;
    if args.print_config {
        print!("{}", toml::to_string(&config).context("printing config")?);
        return Ok(());
    }
    // Models load before the listener binds: one that cannot be loaded stops start-up.
    let mut embedded = Vec::new();
    for spec in &args.serve {
        let parsed = parse_serve_spec(spec)?;
        let worker = tensorq_worker::serve::load(&parsed.args)
            .await
            .with_context(|| format!("--serve {spec}"))?;
        embedded.push((parsed.args, worker));
    }
    let registry = tensorq_worker::serve::exporter::Registry::new();
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(tensorq_worker::serve::exporter::bind(addr).await?),
        None => None,
    };
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.port().to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write port file {}", path.display()))?;
    }
    let args_transport = args.serve_transport;
    let (stop_workers, _) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for (args, first) in embedded {
        let stop = stop_workers.subscribe();
        let target = match args_transport {
            ServeTransport::InProcess => Target::InProcess(server.broker()),
            ServeTransport::Loopback => {
                Target::Loopback(format!("amqp://guest:guest@127.0.0.1:{}/%2f", addr.port()))
            }
        };
        let registry = Arc::clone(&registry);
        workers.push(tokio::spawn(run_embedded(
            target, args, first, stop, registry,
        )));
    }
    registry.watch_broker(server.broker());
    let _endpoint =
        metrics_listener.map(|l| tensorq_worker::serve::exporter::spawn(l, Arc::clone(&registry)));
    let stop = async {
        stop_signal().await;
        let _ = stop_workers.send(true);
        for w in workers {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
        }
    };
    server.run(stop).await;
    tracing::info!("stopped");
    Ok(())
}

/// Parses one `--serve QUEUE=MODEL[,flag=value...]`: the optional flags are `tensorq worker
/// serve`'s, without their dashes (e.g. `max-batch=1`, `max-delay-us=500`).
fn parse_serve_spec(spec: &str) -> Result<EmbeddedServe> {
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let Some((queue, model)) = head.split_once('=') else {
        anyhow::bail!("--serve takes QUEUE=MODEL.onnx[,flag=value...], got '{spec}'");
    };
    let mut argv = vec![
        "serve".to_owned(),
        "--queue".into(),
        queue.into(),
        "--model".into(),
        model.into(),
    ];
    for opt in parts {
        let Some((k, v)) = opt.split_once('=') else {
            anyhow::bail!("--serve {spec}: option '{opt}' is not flag=value");
        };
        if k == "broker" {
            anyhow::bail!("--serve {spec}: the embedded worker always uses this broker");
        }
        if k == "metrics-listen" {
            anyhow::bail!(
                "--serve {spec}: embedded workers' metrics are served by the server's \
                 --metrics-listen"
            );
        }
        argv.push(format!("--{k}"));
        argv.push(v.to_owned());
    }
    <EmbeddedServe as clap::Parser>::try_parse_from(argv)
        .map_err(|e| anyhow::anyhow!("--serve {spec}: {e}"))
}

/// Runs one embedded serving worker until `stop` turns true; if its consumer goes away (its
/// queue was deleted, or the loopback connection dropped), it starts again after a second
/// (reloading the model), which declares the queue anew.
async fn run_embedded(
    target: Target,
    args: tensorq_worker::serve::ServeArgs,
    first: tensorq_worker::serve::Server,
    mut stop: tokio::sync::watch::Receiver<bool>,
    registry: Arc<tensorq_worker::serve::exporter::Registry>,
) {
    let mut worker = Some(first);
    loop {
        let server = match worker.take() {
            Some(s) => s,
            None => match tensorq_worker::serve::load(&args).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(queue = %args.queue, "embedded serving worker: {e}");
                    return;
                }
            },
        };
        registry.register(&args.queue, server.metrics());
        let mut rx = stop.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let result = match &target {
            Target::InProcess(broker) => server.run_in_process(broker, shutdown).await,
            Target::Loopback(url) => server.run(url, shutdown).await,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(queue = %args.queue, "embedded serving worker: {e}; restarting")
            }
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}
