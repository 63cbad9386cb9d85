//! Command-line arguments of `tensorq perf` and of its sink, and their
//! validation into a run mode. Owns no I/O (the `--body-file` is read by `run`).

use crate::error::PerfError;
use std::path::PathBuf;
use std::time::Duration;

/// Default broker URI (RabbitMQ's and tensorq's default listener).
pub const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Run length when neither `--duration` nor `--count` is given.
pub const DEFAULT_DURATION_SECS: f64 = 10.0;

/// Load generator options.
#[derive(clap::Args, Debug, Clone)]
pub struct PerfArgs {
    /// Broker URI.
    #[arg(long, default_value = DEFAULT_URI)]
    pub uri: String,
    /// Producer connections.
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: u32,
    /// Consumer connections (RPC responders in --rpc mode; with --rpc, 0 means an
    /// external responder already consumes --queue).
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: u32,
    /// Message body size in bytes (≥ 8 carries a send stamp for latency).
    #[arg(long, short = 's', default_value_t = 16)]
    pub size: usize,
    /// Publish exactly this file's bytes as every body (no send stamp, so no
    /// publish→consume latency outside --rpc).
    #[arg(long, value_name = "PATH", conflicts_with = "size")]
    pub body_file: Option<PathBuf>,
    /// content_type property of every published message.
    #[arg(long, value_name = "CT")]
    pub content_type: Option<String>,
    /// Publish with delivery mode 2.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms with at most this many unconfirmed per producer (0 = off).
    #[arg(long, default_value_t = 0)]
    pub confirm: u32,
    /// basic.qos prefetch per consumer (0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Ack with multiple=true every N deliveries (1 = each).
    #[arg(long, default_value_t = 100)]
    pub multi_ack: u32,
    /// Consume with no-ack.
    #[arg(long)]
    pub auto_ack: bool,
    /// Run for this many seconds (default 10 when --count is not given).
    #[arg(long, conflicts_with = "count")]
    pub duration: Option<f64>,
    /// Publish this many messages in total, split across producers.
    #[arg(long)]
    pub count: Option<u64>,
    /// Limit each producer to this many messages per second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Queue name (default: a fresh `perf-…` name, deleted afterwards). Required by
    /// --rpc --consumers 0, where it must already exist and is not declared.
    #[arg(long)]
    pub queue: Option<String>,
    /// Declare the queue durable (default: non-durable auto-delete).
    #[arg(long)]
    pub durable_queue: bool,
    /// RPC mode: requests carry reply_to and correlation_id; consumers (or, with
    /// --consumers 0, an external responder) answer with the same correlation_id.
    #[arg(long, conflicts_with_all = ["publish_only", "consume_only", "confirm"])]
    pub rpc: bool,
    /// Outstanding requests per producer in --rpc mode.
    #[arg(long, default_value_t = 1)]
    pub rpc_window: u32,
    /// No consumers: time until the queue holds every published message.
    #[arg(long, conflicts_with = "consume_only")]
    pub publish_only: bool,
    /// Pre-fill the queue with --count messages (untimed), then time the drain.
    #[arg(long)]
    pub consume_only: bool,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Sink options.
#[derive(clap::Args, Debug, Clone)]
pub struct PerfSinkArgs {
    /// Address to accept AMQP connections on.
    #[arg(long, default_value = "127.0.0.1:5673")]
    pub listen: String,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the final report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What kind of run the arguments ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Producers and consumers at once.
    EndToEnd,
    /// Producers only; wait for the queue to hold everything.
    PublishOnly,
    /// Pre-fill, then time consumers.
    ConsumeOnly,
    /// Request/reply.
    Rpc,
}

impl Mode {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::EndToEnd => "end-to-end",
            Mode::PublishOnly => "publish-only",
            Mode::ConsumeOnly => "consume-only",
            Mode::Rpc => "rpc",
        }
    }
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    /// Wall-clock length.
    Duration(Duration),
    /// Total messages.
    Count(u64),
}

impl PerfArgs {
    /// Check consistency and derive the mode and length.
    pub fn validate(&self) -> Result<(Mode, Length), PerfError> {
        let mode = if self.rpc {
            Mode::Rpc
        } else if self.publish_only {
            Mode::PublishOnly
        } else if self.consume_only {
            Mode::ConsumeOnly
        } else {
            Mode::EndToEnd
        };
        let length = match (self.count, self.duration) {
            (Some(c), _) => Length::Count(c),
            (None, Some(d)) if d.is_finite() && d > 0.0 => {
                Length::Duration(Duration::from_secs_f64(d))
            }
            (None, Some(d)) => {
                return Err(PerfError::Args(format!("--duration {d} must be positive")))
            }
            (None, None) => Length::Duration(Duration::from_secs_f64(DEFAULT_DURATION_SECS)),
        };
        if self.producers == 0 && mode != Mode::EndToEnd {
            return Err(PerfError::Args("--producers must be at least 1".into()));
        }
        if self.multi_ack == 0 {
            return Err(PerfError::Args("--multi-ack must be at least 1".into()));
        }
        if !self.auto_ack && self.prefetch > 0 && self.multi_ack > u32::from(self.prefetch) {
            return Err(PerfError::Args(format!(
                "--multi-ack {} above --prefetch {} would stall the consumer",
                self.multi_ack, self.prefetch
            )));
        }
        if mode == Mode::ConsumeOnly && self.consumers == 0 {
            return Err(PerfError::Args(format!(
                "{} needs --consumers ≥ 1",
                mode.name()
            )));
        }
        if self.external_responder() && self.queue.is_none() {
            return Err(PerfError::Args(
                "--rpc --consumers 0 needs --queue (the external responder's queue)".into(),
            ));
        }
        if mode == Mode::ConsumeOnly && !matches!(length, Length::Count(_)) {
            return Err(PerfError::Args("--consume-only needs --count".into()));
        }
        if mode == Mode::Rpc && self.rpc_window == 0 {
            return Err(PerfError::Args("--rpc-window must be at least 1".into()));
        }
        if let Some(q) = &self.queue {
            if q.is_empty() || q.len() > usize::from(u8::MAX) {
                return Err(PerfError::Args("--queue must be 1..=255 bytes".into()));
            }
        }
        if let Some(ct) = &self.content_type {
            if ct.is_empty() || ct.len() > usize::from(u8::MAX) {
                return Err(PerfError::Args(
                    "--content-type must be 1..=255 bytes".into(),
                ));
            }
        }
        Ok((mode, length))
    }

    /// True when RPC requests are answered by a responder outside perf
    /// (`--rpc --consumers 0`): the queue is then checked, never declared or deleted.
    pub fn external_responder(&self) -> bool {
        self.rpc && self.consumers == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        perf: PerfArgs,
    }

    fn parse_args(args: &[&str]) -> Result<PerfArgs, PerfError> {
        let cli = Cli::try_parse_from(std::iter::once("perf").chain(args.iter().copied()))
            .map_err(|e| PerfError::Args(e.to_string()))?;
        Ok(cli.perf)
    }

    fn parse(args: &[&str]) -> Result<(Mode, Length), PerfError> {
        parse_args(args)?.validate()
    }

    #[test]
    fn modes_and_lengths() -> Result<(), PerfError> {
        assert_eq!(
            parse(&[])?,
            (Mode::EndToEnd, Length::Duration(Duration::from_secs(10)))
        );
        assert_eq!(
            parse(&["--publish-only", "--count", "5"])?,
            (Mode::PublishOnly, Length::Count(5))
        );
        assert_eq!(parse(&["--rpc", "--duration", "2"])?.0, Mode::Rpc);
        assert!(parse(&["--consume-only", "--duration", "2"]).is_err());
        assert!(parse(&["--rpc", "--confirm", "5"]).is_err());
        assert!(parse(&["--multi-ack", "2000", "--prefetch", "100"]).is_err());
        assert!(parse(&["--multi-ack", "2000", "--auto-ack"]).is_ok());
        assert!(parse(&["--count", "1", "--duration", "1"]).is_err());
        Ok(())
    }
    #[test]
    fn body_file_and_content_type() -> Result<(), PerfError> {
        let a = parse_args(&[
            "--body-file",
            "req.json",
            "--content-type",
            "application/json",
        ])?;
        assert_eq!(a.body_file, Some(PathBuf::from("req.json")));
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        assert_eq!(a.validate()?.0, Mode::EndToEnd);
        let plain = parse_args(&[])?;
        assert_eq!((plain.body_file, plain.content_type), (None, None));
        assert!(parse(&["--body-file", "req.json", "--size", "64"]).is_err());
        assert!(parse(&["--content-type", ""]).is_err());
        let long = "x".repeat(256);
        assert!(parse(&["--content-type", &long]).is_err());
        Ok(())
    }

    #[test]
    fn rpc_with_an_external_responder_needs_a_queue() -> Result<(), PerfError> {
        assert!(parse(&["--rpc", "--consumers", "0"]).is_err());
        let a = parse_args(&["--rpc", "--consumers", "0", "--queue", "bench.seed"])?;
        assert!(a.external_responder());
        assert_eq!(a.validate()?.0, Mode::Rpc);
        assert!(!parse_args(&["--rpc", "--queue", "q"])?.external_responder());
        assert!(!parse_args(&["--consumers", "0", "--queue", "q"])?.external_responder());
        assert_eq!(parse(&["--consumers", "0"])?.0, Mode::EndToEnd);
        assert!(parse(&["--consume-only", "--count", "5", "--consumers", "0"]).is_err());
        Ok(())
    }
}
