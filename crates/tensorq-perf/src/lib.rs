//! tensorq perf: a pipelined AMQP 0-9-1 load generator (in the manner of
//! RabbitMQ's PerfTest and lavinmqperf) and a discard sink that measures the
//! generator's own ceiling.
//!
//! Owns: the CLI arguments ([`PerfArgs`], [`PerfSinkArgs`]), the run
//! orchestration ([`run`], [`run_sink`]) and the report ([`PerfReport`]).
//! Does not own: the `tensorq` binary (it flattens these arguments and prints
//! the report) nor any broker logic. The AMQP codec is `amq-protocol`'s; this
//! crate only frames, batches and patches what that crate encodes.

mod args;
mod assemble;
mod conn;
mod consumer;
mod error;
mod latency;
mod producer;
mod report;
mod rpc;
mod run;
mod sink;
mod stop;
mod wire;

pub use args::{PerfArgs, PerfSinkArgs, DEFAULT_URI};
pub use error::PerfError;
pub use latency::LatencySummary;
pub use report::{PerfReport, SinkReport};
pub use run::run;
pub use sink::run_sink;
