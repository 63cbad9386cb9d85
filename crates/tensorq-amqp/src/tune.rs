//! Negotiating connection parameters (`connection.tune` / `tune-ok`).
//!
//! The server offers [`CHANNEL_MAX`], [`FRAME_MAX`] and [`HEARTBEAT_SECS`]; the client answers
//! with values at or below them (0 means "no limit" for channel_max and frame_max, and "no
//! heartbeats" for heartbeat). Values above the offer, or a frame_max below the protocol minimum,
//! are refused with 530 NOT_ALLOWED, as RabbitMQ does.

use amq_protocol::protocol::connection::{Tune, TuneOk};

use crate::error::AmqpError;
use crate::limits::{CHANNEL_MAX, FRAME_MAX, FRAME_MIN, HEARTBEAT_SECS};

/// The parameters in force after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuned {
    pub channel_max: u16,
    pub frame_max: u32,
    /// Seconds; 0 disables heartbeats.
    pub heartbeat: u16,
}

/// What the server offers.
pub fn offer() -> Tune {
    Tune {
        channel_max: CHANNEL_MAX,
        frame_max: FRAME_MAX,
        heartbeat: HEARTBEAT_SECS,
    }
}

/// Checks the client's `tune-ok` against the offer.
pub fn negotiate(ok: &TuneOk) -> Result<Tuned, AmqpError> {
    let channel_max = match ok.channel_max {
        0 => CHANNEL_MAX,
        n if n > CHANNEL_MAX => {
            return Err(AmqpError::not_allowed(format!(
            "negotiated channel_max = {n} is higher than the maximum allowed value ({CHANNEL_MAX})"
        )))
        }
        n => n,
    };
    let frame_max = match ok.frame_max {
        0 => FRAME_MAX,
        n if n > FRAME_MAX => {
            return Err(AmqpError::not_allowed(format!(
                "negotiated frame_max = {n} is higher than the maximum allowed value ({FRAME_MAX})"
            )))
        }
        n if n < FRAME_MIN => {
            return Err(AmqpError::not_allowed(format!(
                "negotiated frame_max = {n} is lower than the minimum allowed value ({FRAME_MIN})"
            )))
        }
        n => n,
    };
    Ok(Tuned {
        channel_max,
        frame_max,
        heartbeat: ok.heartbeat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> TuneOk {
        TuneOk {
            channel_max,
            frame_max,
            heartbeat,
        }
    }

    #[test]
    fn zero_means_the_offer() {
        let t = negotiate(&ok(0, 0, 0)).unwrap();
        assert_eq!(
            (t.channel_max, t.frame_max, t.heartbeat),
            (2047, 131_072, 0)
        );
    }

    #[test]
    fn out_of_range_is_refused() {
        assert_eq!(negotiate(&ok(4000, 0, 60)).unwrap_err().code, 530);
        assert_eq!(negotiate(&ok(0, 1 << 20, 60)).unwrap_err().code, 530);
        assert_eq!(negotiate(&ok(0, 1000, 60)).unwrap_err().code, 530);
        assert_eq!(negotiate(&ok(10, 4096, 5)).unwrap().channel_max, 10);
    }
}
