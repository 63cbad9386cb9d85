//! `tensorq server`: loads the configuration, binds, writes the port file, and runs the broker
//! until Ctrl-C or SIGTERM (then every connection is closed with 320 and the process exits 0).

use std::path::PathBuf;

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

async fn stop_signal() {
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
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.port().to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write port file {}", path.display()))?;
    }
    server.run(stop_signal()).await;
    tracing::info!("stopped");
    Ok(())
}
