//! Reassembles deliveries from their method, header and body frames and
//! pulls out the send stamp (body) and perf's correlation number (header).
//! Optionally keeps the header and body (the RPC responder echoes them).
//! Owns no acking, counting or replying.

use crate::error::PerfError;
use crate::wire::{parse_correlation, parse_header, read_timestamp, TIMESTAMP_LEN};
use amq_protocol::frame::AMQPContentHeader;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    AwaitHeader,
    AwaitBody,
}

/// A delivery whose body is complete.
#[derive(Debug)]
pub struct Completed {
    /// Send stamp from the body, when the body carries one.
    pub stamp: Option<u64>,
    /// Request number from a perf-made correlation id, when the header carries one.
    pub correlation: Option<u64>,
    /// The content header (only when keeping).
    pub header: Option<AMQPContentHeader>,
    /// The body (only when keeping).
    pub body: Vec<u8>,
}

/// Frame-by-frame delivery state.
#[derive(Debug, Default)]
pub struct Assembler {
    state: State,
    keep: bool,
    remaining: u64,
    first_body: bool,
    stamp: Option<u64>,
    correlation: Option<u64>,
    header: Option<AMQPContentHeader>,
    body: Vec<u8>,
}

impl Assembler {
    /// An assembler that keeps header and body when `keep`.
    pub fn new(keep: bool) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    /// A deliver (or get-ok) method arrived.
    pub fn start(&mut self) -> Result<(), PerfError> {
        if self.state != State::Idle {
            return Err(PerfError::Unexpected(
                "deliver before previous body ended".into(),
            ));
        }
        self.state = State::AwaitHeader;
        Ok(())
    }

    /// A content header arrived; completes the delivery when the body is empty.
    pub fn header(&mut self, payload: &[u8]) -> Result<Option<Completed>, PerfError> {
        if self.state != State::AwaitHeader {
            return Err(PerfError::Unexpected(
                "content header without deliver".into(),
            ));
        }
        let header = parse_header(payload)?;
        self.remaining = header.body_size;
        self.first_body = true;
        self.stamp = None;
        self.correlation = header
            .properties
            .correlation_id()
            .as_ref()
            .and_then(|id| parse_correlation(id.as_str().as_bytes()));
        self.body.clear();
        if self.keep {
            self.header = Some(header);
        }
        if self.remaining == 0 {
            return Ok(Some(self.finish()));
        }
        self.state = State::AwaitBody;
        Ok(None)
    }

    /// A body frame arrived; completes the delivery on its last byte.
    pub fn body(&mut self, payload: &[u8]) -> Result<Option<Completed>, PerfError> {
        if self.state != State::AwaitBody {
            return Err(PerfError::Unexpected("body frame without header".into()));
        }
        let len = payload.len() as u64;
        if len > self.remaining {
            return Err(PerfError::Malformed(
                "body longer than header's size".into(),
            ));
        }
        if self.first_body && payload.len() >= TIMESTAMP_LEN {
            self.stamp = read_timestamp(payload);
        }
        self.first_body = false;
        if self.keep {
            self.body.extend_from_slice(payload);
        }
        self.remaining -= len;
        if self.remaining == 0 {
            return Ok(Some(self.finish()));
        }
        Ok(None)
    }

    fn finish(&mut self) -> Completed {
        self.state = State::Idle;
        Completed {
            stamp: self.stamp.take(),
            correlation: self.correlation.take(),
            header: self.header.take(),
            body: std::mem::take(&mut self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, BASIC_CLASS_ID, FRAME_END_LEN, FRAME_HEADER_LEN};
    use amq_protocol::frame::AMQPFrame;
    use amq_protocol::protocol::BasicProperties;

    fn header_payload(size: u64) -> Result<Vec<u8>, PerfError> {
        header_payload_with(size, BasicProperties::default())
    }

    fn header_payload_with(size: u64, properties: BasicProperties) -> Result<Vec<u8>, PerfError> {
        let mut out = Vec::new();
        let h = AMQPContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: size,
            properties,
        };
        encode(&AMQPFrame::Header(1, h), &mut out)?;
        Ok(out[FRAME_HEADER_LEN..out.len() - FRAME_END_LEN].to_vec())
    }

    #[test]
    fn split_body_completes_once_with_stamp() -> Result<(), PerfError> {
        let mut a = Assembler::new(true);
        a.start()?;
        assert!(a.header(&header_payload(12)?)?.is_none());
        let mut body = 77u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 2, 3, 4]);
        assert!(a.body(&body[..9])?.is_none());
        let done = a.body(&body[9..])?.ok_or(PerfError::Closed)?;
        assert_eq!(done.stamp, Some(77));
        assert_eq!(done.body, body);
        assert!(a.body(&body).is_err());
        Ok(())
    }

    #[test]
    fn empty_body_and_protocol_violations() -> Result<(), PerfError> {
        let mut a = Assembler::new(false);
        assert!(a.header(&header_payload(0)?).is_err());
        a.start()?;
        assert!(a.start().is_err());
        let done = a.header(&header_payload(0)?)?.ok_or(PerfError::Closed)?;
        assert_eq!(done.stamp, None);
        a.start()?;
        a.header(&header_payload(4)?)?;
        assert!(a.body(&[0; 5]).is_err());
        Ok(())
    }

    #[test]
    fn correlation_number_comes_from_the_header() -> Result<(), PerfError> {
        let mut a = Assembler::new(false);
        let ours = BasicProperties::default().with_correlation_id("00000000000000ff".into());
        a.start()?;
        a.header(&header_payload_with(3, ours)?)?;
        let done = a.body(b"{ }")?.ok_or(PerfError::Closed)?;
        assert_eq!((done.correlation, done.stamp), (Some(0xff), None));
        let foreign = BasicProperties::default().with_correlation_id("req-17".into());
        a.start()?;
        let done = a
            .header(&header_payload_with(0, foreign)?)?
            .ok_or(PerfError::Closed)?;
        assert_eq!(done.correlation, None);
        a.start()?;
        let done = a.header(&header_payload(0)?)?.ok_or(PerfError::Closed)?;
        assert_eq!(done.correlation, None);
        Ok(())
    }
}
