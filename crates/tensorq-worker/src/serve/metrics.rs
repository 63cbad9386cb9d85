//! Per-model serving metrics: request/error counters and histograms for batch size, queue wait
//! and inference time, kept in atomics and exported as a serialisable [`MetricsSnapshot`] (ready
//! for a metrics endpoint) and periodically logged through `tracing`.
//!
//! Owns only counting; it does not decide what is an error or when a batch closes (that is the
//! worker's and the batcher's job).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the batch-size buckets (a last, unbounded bucket follows).
pub const BATCH_SIZE_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];
/// Upper bounds, in microseconds, of the latency buckets (queue wait and inference).
pub const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A fixed-bucket histogram with sum, count and max.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
    max: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`]: `buckets[i]` counts values `<= bounds[i]`
/// (non-cumulative), the extra last bucket counts values above every bound.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<u64>,
    pub buckets: Vec<u64>,
    pub sum: u64,
    pub count: u64,
    pub max: u64,
}

impl HistogramSnapshot {
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        let ix = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(ix) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            buckets: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// Metrics of one served model (all versions of it across hot swaps).
#[derive(Debug)]
pub struct Metrics {
    model: String,
    /// Messages taken off the queue (before any processing).
    received: AtomicU64,
    /// Requests answered with a result.
    requests: AtomicU64,
    /// Requests answered with an error (and copied to the errors queue).
    errors: AtomicU64,
    /// Inferences run (one per batch, plus retries).
    batches: AtomicU64,
    /// Batches that failed as a whole and were retried message by message.
    batch_retries: AtomicU64,
    /// Model versions swapped in after the first.
    swaps: AtomicU64,
    batch_size: Histogram,
    queue_wait_us: Histogram,
    inference_us: Histogram,
}

/// A serialisable copy of [`Metrics`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    pub model: String,
    pub received: u64,
    pub requests: u64,
    pub errors: u64,
    pub batches: u64,
    pub batch_retries: u64,
    pub swaps: u64,
    pub batch_size: HistogramSnapshot,
    pub queue_wait_us: HistogramSnapshot,
    pub inference_us: HistogramSnapshot,
}

impl Metrics {
    pub fn new(model: impl Into<String>) -> Metrics {
        Metrics {
            model: model.into(),
            received: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_retries: AtomicU64::new(0),
            swaps: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            queue_wait_us: Histogram::new(LATENCY_BUCKETS_US),
            inference_us: Histogram::new(LATENCY_BUCKETS_US),
        }
    }

    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn answered(&self, ok: bool) {
        if ok {
            self.requests.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn inference(&self, batch_size: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_size
            .record(u64::try_from(batch_size).unwrap_or(u64::MAX));
        self.inference_us.record(micros(took));
    }

    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait_us.record(micros(waited));
    }

    pub fn batch_retry(&self) {
        self.batch_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn swapped(&self) {
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            model: self.model.clone(),
            received: self.received.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batch_retries: self.batch_retries.load(Ordering::Relaxed),
            swaps: self.swaps.load(Ordering::Relaxed),
            batch_size: self.batch_size.snapshot(),
            queue_wait_us: self.queue_wait_us.snapshot(),
            inference_us: self.inference_us.snapshot(),
        }
    }

    /// Logs a summary line every `interval` until the returned task is aborted.
    pub fn spawn_logger(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let metrics = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = metrics.snapshot();
                tracing::info!(
                    model = %s.model,
                    received = s.received,
                    requests = s.requests,
                    errors = s.errors,
                    batches = s.batches,
                    batch_retries = s.batch_retries,
                    swaps = s.swaps,
                    mean_batch = s.batch_size.mean(),
                    max_batch = s.batch_size.max,
                    mean_queue_wait_us = s.queue_wait_us.mean(),
                    mean_inference_us = s.inference_us.mean(),
                    "serve metrics"
                );
            }
        })
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_values() {
        let h = Histogram::new(BATCH_SIZE_BUCKETS);
        for v in [1, 3, 64, 1000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.max, 1000);
        assert_eq!(s.sum, 1068);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[2], 1);
        assert_eq!(s.buckets[6], 1);
        assert_eq!(*s.buckets.last().unwrap(), 1);
    }

    #[test]
    fn metrics_count() {
        let m = Metrics::new("m");
        m.received();
        m.answered(true);
        m.answered(false);
        m.inference(3, Duration::from_micros(120));
        let s = m.snapshot();
        assert_eq!((s.received, s.requests, s.errors, s.batches), (1, 1, 1, 1));
        assert_eq!(s.batch_size.max, 3);
        assert_eq!(s.inference_us.sum, 120);
    }
}
