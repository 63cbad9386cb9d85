//! The results of a perf run and of the sink, as human text and as one JSON
//! line. Owns formatting only; the numbers come from `run` and `sink`.

use crate::latency::LatencySummary;
use serde::Serialize;
use std::fmt;

/// Result of one perf run.
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// "end-to-end", "publish-only", "consume-only" or "rpc".
    pub mode: &'static str,
    /// Producer connections.
    pub producers: u32,
    /// Consumer connections.
    pub consumers: u32,
    /// Body size in bytes (the `--body-file` length when one is given).
    pub size: usize,
    /// Messages published (written to the broker).
    pub published: u64,
    /// Messages confirmed by the broker.
    pub confirmed: u64,
    /// Messages negatively confirmed.
    pub nacked: u64,
    /// Messages consumed (RPC: replies matched to a request by correlation id).
    pub consumed: u64,
    /// RPC replies whose correlation id named no outstanding request (not in `consumed`).
    pub unmatched: u64,
    /// Seconds the measured phase lasted.
    pub elapsed_s: f64,
    /// Published per second.
    pub publish_rate: f64,
    /// Confirmed per second.
    pub confirm_rate: f64,
    /// Consumed per second (publish-only: taken in by the queue per second).
    pub consume_rate: f64,
    /// Publish-to-consume latency (or RPC round trip in rpc mode).
    pub latency: Option<LatencySummary>,
    /// Publish-to-confirm latency.
    pub confirm_latency: Option<LatencySummary>,
}

impl PerfReport {
    /// Render as text, or as one JSON line.
    pub fn render(&self, json: bool) -> String {
        if json {
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        } else {
            self.to_string()
        }
    }
}

fn write_latency(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    l: &Option<LatencySummary>,
) -> fmt::Result {
    if let Some(l) = l {
        writeln!(
            f,
            "{label:<20} p50 {} µs  p95 {} µs  p99 {} µs  max {} µs  ({} samples)",
            l.p50_us, l.p95_us, l.p99_us, l.max_us, l.samples
        )?;
    }
    Ok(())
}

impl fmt::Display for PerfReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tensorq perf: {} | {} producer(s), {} consumer(s), {} B bodies, {:.2} s",
            self.mode, self.producers, self.consumers, self.size, self.elapsed_s
        )?;
        writeln!(
            f,
            "{:<20} {:>12} msgs  {:>12.0} msgs/s",
            "published", self.published, self.publish_rate
        )?;
        if self.confirmed > 0 || self.nacked > 0 {
            writeln!(
                f,
                "{:<20} {:>12} msgs  {:>12.0} msgs/s  ({} nacked)",
                "confirmed", self.confirmed, self.confirm_rate, self.nacked
            )?;
        }
        let label = match self.mode {
            "publish-only" => "queued",
            "rpc" => "replies",
            _ => "consumed",
        };
        writeln!(
            f,
            "{:<20} {:>12} msgs  {:>12.0} msgs/s",
            label, self.consumed, self.consume_rate
        )?;
        let lat_label = if self.mode == "rpc" {
            "rpc round trip"
        } else {
            "publish→consume"
        };
        if self.unmatched > 0 {
            writeln!(f, "{:<20} {:>12} msgs", "unmatched replies", self.unmatched)?;
        }
        write_latency(f, lat_label, &self.latency)?;
        write_latency(f, "publish→confirm", &self.confirm_latency)
    }
}

/// Result of a sink session.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// Connections accepted.
    pub connections: u64,
    /// basic.publish methods received.
    pub publishes: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds from the first publish to the last.
    pub elapsed_s: f64,
    /// Publishes per second over that span.
    pub publish_rate: f64,
}

impl SinkReport {
    /// Render as text, or as one JSON line.
    pub fn render(&self, json: bool) -> String {
        if json {
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        } else {
            format!(
                "tensorq perf sink: {} connection(s), {} publishes, {} bytes in {:.2} s = {:.0} publishes/s",
                self.connections, self.publishes, self.bytes, self.elapsed_s, self.publish_rate
            )
        }
    }
}
