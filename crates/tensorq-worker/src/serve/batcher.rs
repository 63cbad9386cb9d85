//! Dynamic batching: once a first message has arrived, keep taking messages until the batch holds
//! `max_batch` of them or `max_delay` has passed since that first message.
//!
//! Owns only the closing rule, over any `Stream` (a lapin consumer in production, a channel in
//! tests). It does not decode, infer, reply or acknowledge.

use futures_lite::{Stream, StreamExt};
use std::time::Duration;
use tokio::time::Instant;

/// Largest `--max-batch` accepted.
pub const MAX_BATCH_LIMIT: usize = 4096;

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_batch: usize,
    pub max_delay: Duration,
}

/// Why a batch closed.
#[derive(Debug, PartialEq)]
pub enum BatchEnd<E> {
    /// It reached `max_batch`.
    Full,
    /// `max_delay` passed since its first message.
    Deadline,
    /// The stream ended (the consumer was cancelled or the connection closed).
    StreamEnded,
    /// The stream yielded an error.
    StreamError(E),
}

/// Completes a batch that starts with `first`, reading more items from `stream`.
pub async fn fill<T, E, S>(first: T, stream: &mut S, limits: BatchLimits) -> (Vec<T>, BatchEnd<E>)
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    let max = limits.max_batch.clamp(1, MAX_BATCH_LIMIT);
    let deadline = Instant::now() + limits.max_delay;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return (batch, BatchEnd::Deadline),
            Ok(None) => return (batch, BatchEnd::StreamEnded),
            Ok(Some(Err(e))) => return (batch, BatchEnd::StreamError(e)),
            Ok(Some(Ok(item))) => batch.push(item),
        }
    }
    (batch, BatchEnd::Full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::stream;

    fn limits(max_batch: usize, ms: u64) -> BatchLimits {
        BatchLimits {
            max_batch,
            max_delay: Duration::from_millis(ms),
        }
    }

    #[tokio::test]
    async fn closes_when_full() {
        let mut s = stream::iter((2..10).map(Ok::<i32, ()>));
        let (b, end) = fill(1, &mut s, limits(4, 10_000)).await;
        assert_eq!(b, vec![1, 2, 3, 4]);
        assert_eq!(end, BatchEnd::Full);
        let (b, _) = fill(0, &mut s, limits(4, 10_000)).await;
        assert_eq!(b, vec![0, 5, 6, 7]);
    }

    #[tokio::test]
    async fn closes_at_deadline_from_first_message() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<i32, ()>>();
        let mut s = Box::pin(stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|v| (v, rx))
        }));
        tx.send(Ok(2)).unwrap();
        let start = std::time::Instant::now();
        let (b, end) = fill(1, &mut s, limits(64, 50)).await;
        assert_eq!(b, vec![1, 2]);
        assert_eq!(end, BatchEnd::Deadline);
        assert!(start.elapsed() >= Duration::from_millis(45));
        drop(tx);
        let (b, end) = fill(9, &mut s, limits(64, 1_000)).await;
        assert_eq!(b, vec![9]);
        assert_eq!(end, BatchEnd::StreamEnded);
    }

    #[tokio::test]
    async fn stream_error_closes_batch() {
        let mut s = stream::iter(vec![Ok(2), Err("boom"), Ok(3)]);
        let (b, end) = fill(1, &mut s, limits(8, 1_000)).await;
        assert_eq!(b, vec![1, 2]);
        assert_eq!(end, BatchEnd::StreamError("boom"));
    }
}
