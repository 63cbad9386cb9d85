//! Splitting a byte stream into AMQP frames, with every framing limit enforced before a payload
//! is parsed.
//!
//! The frame header is read with `amq-protocol`'s primitive parsers; method and content-header
//! payloads are parsed with `amq-protocol`'s `parse_class` and `parse_content_header`. Body
//! payloads are handed out as zero-copy [`Bytes`] slices of the read buffer (the crate's own
//! `parse_frame` copies bodies byte by byte, which is too slow for the broker's hot path).
//!
//! This module owns framing errors (501 FRAME_ERROR for oversize frames, a wrong frame-end octet
//! or an unknown frame type; 502/503 for payloads that do not parse). It does not know which
//! frames are allowed in which connection state: that is the connection state machine's job.

use amq_protocol::frame::{parsing::parse_content_header, AMQPContentHeader, ProtocolVersion};
use amq_protocol::protocol::{constants, parse_class, AMQPClass};
use amq_protocol::types::parsing::{parse_long_uint, parse_short_short_uint, parse_short_uint};
use bytes::{Bytes, BytesMut};
use nom::combinator::all_consuming;
use nom::Parser;

use crate::depth;
use crate::error::AmqpError;
use crate::limits::{FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD};

/// The 8 bytes every AMQP 0-9-1 connection starts with; also what the server answers to a wrong
/// protocol header before it closes the socket.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum InFrame {
    /// A method frame.
    Method(u16, AMQPClass),
    /// A content header frame: parsed, and its payload as received (a zero-copy slice of the
    /// read buffer), which the broker forwards verbatim on delivery instead of re-encoding the
    /// properties for every consumer.
    Header(u16, Box<AMQPContentHeader>, Bytes),
    /// A content body frame: a zero-copy slice of the read buffer.
    Body(u16, Bytes),
    /// A heartbeat frame, with the channel it arrived on (must be 0).
    Heartbeat(u16),
}

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Fewer than 8 bytes have arrived.
    Incomplete,
    /// `AMQP 0 0 9 1`.
    Accepted,
    /// Anything else: answer [`PROTOCOL_HEADER`] and close.
    Refused,
}

/// Checks the protocol header at the start of `buf`, consuming it when accepted.
pub fn check_protocol_header(buf: &mut BytesMut) -> HeaderCheck {
    if buf.len() < PROTOCOL_HEADER.len() {
        // A byte that already differs is enough to refuse.
        let n = buf.len();
        return if buf[..n] == PROTOCOL_HEADER[..n] {
            HeaderCheck::Incomplete
        } else {
            HeaderCheck::Refused
        };
    }
    let head = &buf[..PROTOCOL_HEADER.len()];
    let parsed = amq_protocol::frame::parse_frame(head);
    let ok = matches!(
        parsed,
        Ok((_, amq_protocol::frame::AMQPFrame::ProtocolHeader(v))) if v == ProtocolVersion::amqp_0_9_1()
    ) && head[4] == 0;
    if ok {
        let _ = buf.split_to(PROTOCOL_HEADER.len());
        HeaderCheck::Accepted
    } else {
        HeaderCheck::Refused
    }
}

/// Reads the 7-byte frame header: (type, channel, payload size).
fn frame_header(buf: &[u8]) -> Option<(u8, u16, u32)> {
    let (rest, kind) = parse_short_short_uint(buf).ok()?;
    let (rest, channel) = parse_short_uint(rest).ok()?;
    let (_, size) = parse_long_uint(rest).ok()?;
    Some((kind, channel, size))
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. A frame larger than `frame_max` is refused as
/// soon as its header has arrived, so an oversize frame never makes the buffer grow.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<InFrame>, AmqpError> {
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let Some((kind, channel, size)) = frame_header(&buf[..FRAME_HEADER_SIZE]) else {
        return Ok(None);
    };
    if !matches!(
        kind,
        constants::FRAME_METHOD
            | constants::FRAME_HEADER
            | constants::FRAME_BODY
            | constants::FRAME_HEARTBEAT
    ) {
        return Err(AmqpError::frame_error(format!("unknown frame type {kind}")));
    }
    let total = size as u64 + FRAME_OVERHEAD as u64;
    if total > frame_max as u64 {
        return Err(AmqpError::frame_error(format!(
            "frame of {total} bytes exceeds frame_max {frame_max}"
        )));
    }
    let total = total as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf.get(total - 1) != Some(&FRAME_END) {
        return Err(AmqpError::frame_error(format!(
            "frame-end octet missing on a frame of type {kind} (channel {channel})"
        )));
    }
    let frame = buf.split_to(total).freeze();
    let payload = frame.slice(FRAME_HEADER_SIZE..total - 1);
    let decoded = match kind {
        constants::FRAME_METHOD => InFrame::Method(channel, parse_method(payload)?),
        constants::FRAME_HEADER => {
            InFrame::Header(channel, Box::new(parse_header(payload.clone())?), payload)
        }
        constants::FRAME_BODY => InFrame::Body(channel, payload),
        _ => {
            if size != 0 {
                return Err(AmqpError::frame_error("heartbeat frame with a payload"));
            }
            InFrame::Heartbeat(channel)
        }
    };
    Ok(Some(decoded))
}

/// Why a payload did not parse: truncated (501, as RabbitMQ's "cannot decode") or holding
/// illegal values such as an unknown field type (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    Truncated,
    Illegal,
}

fn classify<E>(e: nom::Err<E>) -> Malformed {
    match e {
        nom::Err::Incomplete(_) => Malformed::Truncated,
        _ => Malformed::Illegal,
    }
}

fn parse_method(payload: Bytes) -> Result<AMQPClass, AmqpError> {
    let ids = (
        parse_short_uint(&payload[..]).map(|(_, c)| c).unwrap_or(0),
        parse_short_uint(payload.get(2..).unwrap_or(&[]))
            .map(|(_, m)| m)
            .unwrap_or(0),
    );
    if ids == (60, 10) {
        // basic.qos: amq-protocol drops prefetch_size, which RabbitMQ refuses with 540 unless 0.
        let size = payload
            .get(4..8)
            .and_then(|b| parse_long_uint(b).ok())
            .map_or(0, |(_, n)| n);
        if size != 0 {
            return Err(
                AmqpError::not_implemented(format!("prefetch_size!=0 ({size})")).on_method(60, 10),
            );
        }
    }
    let parsed = depth::guarded(payload, |p| {
        all_consuming(parse_class)
            .parse(p)
            .map(|(_, m)| m)
            .map_err(classify)
    })?;
    parsed.map_err(|why| {
        let (class, method) = ids;
        if !known_method(class, method) {
            AmqpError::command_invalid(format!("unknown method {class}.{method}"))
        } else if why == Malformed::Truncated {
            AmqpError::frame_error(format!(
                "cannot decode the arguments of method {class}.{method}: truncated"
            ))
        } else {
            AmqpError::syntax_error(format!(
                "illegal value in the arguments of method {class}.{method}"
            ))
        }
        .on_method(class, method)
    })
}

fn parse_header(payload: Bytes) -> Result<AMQPContentHeader, AmqpError> {
    depth::guarded(payload, |p| {
        all_consuming(parse_content_header)
            .parse(p)
            .map(|(_, h)| h)
            .map_err(classify)
    })?
    .map_err(|why| match why {
        Malformed::Truncated => {
            AmqpError::frame_error("cannot decode the content header frame: truncated")
        }
        Malformed::Illegal => AmqpError::syntax_error("illegal value in the content header frame"),
    })
}

/// Whether `class.method` names a method of AMQP 0-9-1.
fn known_method(class: u16, method: u16) -> bool {
    matches!(
        (class, method),
        (10, 10..=61)
            | (20, 10..=41)
            | (30, 10 | 11)
            | (40, 10..=51)
            | (50, 10..=51)
            | (60, 10..=120)
            | (85, 10 | 11)
            | (90, 10..=31)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use amq_protocol::protocol::{basic, queue};

    fn encoded(method: &AMQPClass) -> BytesMut {
        let mut out = Vec::new();
        encode::method(&mut out, 1, method);
        BytesMut::from(&out[..])
    }

    #[test]
    fn method_round_trip_and_partial_input() {
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        }));
        let full = encoded(&m);
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode_frame(&mut part, 131_072).unwrap(), None, "cut {cut}");
        }
        let mut all = full.clone();
        assert_eq!(
            decode_frame(&mut all, 131_072).unwrap(),
            Some(InFrame::Method(1, m))
        );
        assert!(all.is_empty());
    }

    #[test]
    fn oversize_frame_is_refused_from_its_header() {
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 1, 0, 0][..]);
        let err = decode_frame(&mut buf, 8192).unwrap_err();
        assert_eq!(err.code, 501);
    }

    #[test]
    fn wrong_frame_end_and_unknown_type() {
        let mut body = BytesMut::from(&[3u8, 0, 1, 0, 0, 0, 1, b'x', 0xCD][..]);
        assert_eq!(decode_frame(&mut body, 8192).unwrap_err().code, 501);
        let mut kind = BytesMut::from(&[9u8, 0, 1, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(decode_frame(&mut kind, 8192).unwrap_err().code, 501);
    }

    #[test]
    fn body_is_a_slice() {
        let mut out = Vec::new();
        encode::content(
            &mut out,
            2,
            &basic::AMQPProperties::default(),
            b"hello",
            131_072,
        );
        let mut buf = BytesMut::from(&out[..]);
        assert!(matches!(
            decode_frame(&mut buf, 131_072).unwrap(),
            Some(InFrame::Header(2, _, _))
        ));
        assert_eq!(
            decode_frame(&mut buf, 131_072).unwrap(),
            Some(InFrame::Body(2, Bytes::from_static(b"hello")))
        );
    }

    #[test]
    fn protocol_header_checks() {
        let mut ok = BytesMut::from(&PROTOCOL_HEADER[..]);
        assert_eq!(check_protocol_header(&mut ok), HeaderCheck::Accepted);
        let mut part = BytesMut::from(&b"AMQ"[..]);
        assert_eq!(check_protocol_header(&mut part), HeaderCheck::Incomplete);
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(check_protocol_header(&mut http), HeaderCheck::Refused);
        let mut old = BytesMut::from(&b"AMQP\x01\x01\x00\x09"[..]);
        assert_eq!(check_protocol_header(&mut old), HeaderCheck::Refused);
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder, and a decoded frame always consumed bytes.
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            loop {
                let before = buf.len();
                match decode_frame(&mut buf, 4096) {
                    Ok(Some(_)) => proptest::prop_assert!(buf.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
