//! Latency bookkeeping: the run-wide clock whose nanosecond stamps travel in
//! message bodies, and the HDR histogram summary. Does not decide what is
//! measured (producer, consumer and rpc modules do).

use crate::error::PerfError;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Instant;

/// Highest latency the histogram tracks, in microseconds (one hour).
const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by the histogram.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Nanoseconds per microsecond.
const NANOS_PER_MICRO: u64 = 1_000;

/// A monotonic epoch shared by all tasks of one run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// Start the clock now.
    pub fn start() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch (saturating at u64::MAX).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A latency histogram in microseconds.
pub struct Latency {
    hist: Histogram<u64>,
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Result<Self, PerfError> {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS)
            .map_err(|e| PerfError::Histogram(e.to_string()))?;
        Ok(Self { hist })
    }

    /// Record the span between two clock stamps; stamps from the future count as zero.
    pub fn record_span_ns(&mut self, sent_ns: u64, now_ns: u64) {
        let micros = now_ns.saturating_sub(sent_ns) / NANOS_PER_MICRO;
        self.hist.saturating_record(micros.max(1));
    }

    /// Fold another histogram into this one.
    pub fn merge(&mut self, other: &Latency) -> Result<(), PerfError> {
        self.hist
            .add(&other.hist)
            .map_err(|e| PerfError::Histogram(e.to_string()))
    }

    /// Percentiles, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        Some(LatencySummary {
            samples: self.hist.len(),
            p50_us: self.hist.value_at_quantile(0.50),
            p95_us: self.hist.value_at_quantile(0.95),
            p99_us: self.hist.value_at_quantile(0.99),
            max_us: self.hist.max(),
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Number of recorded samples.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reflects_recorded_spans() -> Result<(), PerfError> {
        let mut lat = Latency::new()?;
        assert!(lat.summary().is_none());
        for us in 1..=100u64 {
            lat.record_span_ns(0, us * NANOS_PER_MICRO);
        }
        let s = lat.summary().ok_or(PerfError::Histogram("empty".into()))?;
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_us, 50);
        assert_eq!(s.max_us, 100);
        Ok(())
    }
}
