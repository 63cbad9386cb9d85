//! tensorq-store: the durable store beneath tensorq's queues.
//!
//! Owns the data directory: its exclusive lock, the durable definitions
//! (exchanges, queues, bindings), the registry of durable queue ids, and the
//! append-only segment log of persistent messages with group-commit fsync,
//! lazy writes (a record nobody waits on is written only if it is still
//! unacked after a short delay), per-segment ack files, segment garbage
//! collection and crash recovery.
//! Does not own: routing, queue ordering in memory, consumers, AMQP framing or
//! the encoding of message payloads (the broker's job; payloads are opaque).
//!
//! # Shape
//! ```no_run
//! # async fn demo() -> Result<(), tensorq_store::StoreError> {
//! use tensorq_store::{Store, StoreOptions};
//! let (store, recovered) = Store::open("./tensorq-data", StoreOptions::default())?;
//! for q in &recovered.queues {
//!     for m in &q.messages {
//!         let _redelivered = q.redelivered.contains(m);
//!         // push `*m` (a 24-byte MsgRef) onto the broker's in-memory queue
//!     }
//! }
//! let a = store.declare_queue("/", "orders")?;
//! let b = store.declare_queue("/", "audit")?;
//! let (msg, ticket) = store.append(&[a, b], b"encoded message")?; // written once
//! store.wait_durable(ticket).await?;      // now send basic.ack (confirm)
//! let payload = store.read(&msg)?;         // on delivery
//! store.ack(a, &msg)?;                     // consumer acks in each queue
//! store.ack(b, &msg)?;
//! store.close(&[])?;                       // clean shutdown marker
//! # Ok(()) }
//! ```
//! See docs/STORAGE.md for the on-disk format and guarantees.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod chunk;
pub mod definitions;
pub mod disk;
pub mod error;
mod fsutil;
pub mod handle;
pub mod lock;
mod log;
pub mod options;
mod queues;
pub mod record;
pub mod recovery;
pub mod segment;
mod store;
pub mod sync;
mod writer;

pub use definitions::{BindingDef, Definitions, DestinationKind, ExchangeDef, QueueDef};
pub use disk::{free_bytes, DiskStatus, DEFAULT_DISK_FREE_LIMIT};
pub use error::{ParsePolicyError, Result, StoreError};
pub use handle::{MsgRef, QueueId, SyncTicket};
pub use log::ROLL_ON_DRAIN_BYTES;
pub use options::{StoreOptions, DEFAULT_DATA_DIR, DEFAULT_SEGMENT_SIZE};
pub use record::{MAX_PAYLOAD_LEN, MAX_QUEUES_PER_MESSAGE};
pub use recovery::{RecoveredQueue, RecoveryReport, Redelivered};
pub use store::{RecoveredState, Store, CLEAN_FILE};
pub use sync::{DurableState, SyncPolicy, SyncStats, TicketStatus};
