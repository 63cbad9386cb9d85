//! Typed errors for the load generator and the sink. Owns nothing else.

use std::io;

/// Everything that can stop a perf run or the sink.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The arguments are inconsistent (for example `--multi-ack` above `--prefetch`).
    #[error("invalid arguments: {0}")]
    Args(String),
    /// The AMQP URI did not parse.
    #[error("invalid AMQP URI: {0}")]
    Uri(String),
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the TCP connection.
    #[error("connection closed by peer")]
    Closed,
    /// `amq-protocol` could not encode a frame.
    #[error("frame encoding failed: {0}")]
    Encode(String),
    /// The peer sent bytes that are not a valid AMQP frame.
    #[error("malformed frame from peer: {0}")]
    Malformed(String),
    /// The peer sent a frame the protocol state did not allow.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    /// The broker closed the connection or a channel with an error.
    #[error("broker closed {scope}: {code} {text}")]
    BrokerClosed {
        /// "connection" or "channel".
        scope: &'static str,
        /// AMQP reply code.
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// `--rpc --consumers 0` names a queue the broker does not have (perf
    /// never declares the external responder's queue).
    #[error(
        "queue {queue} must already exist for --rpc --consumers 0 \
         (its external responder declares and consumes it): {reason}"
    )]
    MissingQueue {
        /// The `--queue` name.
        queue: String,
        /// What the broker said.
        reason: String,
    },
    /// The broker refused the credentials or offered no usable mechanism.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Nothing progressed for too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A worker task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Task(String),
    /// The latency histogram rejected its bounds.
    #[error("histogram error: {0}")]
    Histogram(String),
}
