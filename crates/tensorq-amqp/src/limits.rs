//! Named protocol limits. Each constant sits here so that the code enforcing it can name it and a
//! reader can find every limit in one place.

use std::time::Duration;

/// The largest channel number the server offers in `connection.tune`.
pub const CHANNEL_MAX: u16 = 2047;
/// The largest frame (header + payload + frame-end) the server offers in `connection.tune`.
pub const FRAME_MAX: u32 = 131_072;
/// The smallest frame_max a client may ask for (AMQP 0-9-1 `frame-min-size`).
pub const FRAME_MIN: u32 = 4096;
/// The heartbeat interval, in seconds, the server offers in `connection.tune`.
pub const HEARTBEAT_SECS: u16 = 60;
/// Frames larger than this are refused before the handshake completes (before `tune-ok`).
pub const PRE_TUNE_FRAME_MAX: u32 = 8192;
/// Field tables (and arrays) may not be nested deeper than this.
pub const MAX_TABLE_DEPTH: usize = 100;
/// The handshake (protocol header to `connection.open`) must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default largest message body a publisher may send.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;
/// Frame header: type (1) + channel (2) + payload size (4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// Frame header plus the frame-end octet.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// The frame-end octet (`%xCE`).
pub const FRAME_END: u8 = 0xCE;
