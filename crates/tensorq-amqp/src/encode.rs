//! Serialising frames with `amq-protocol`'s generators into a connection's output buffer.
//!
//! Every function appends to a `Vec<u8>`, so a connection can gather many frames (deliveries,
//! confirms, replies) and write them with one system call. This module owns frame layout only;
//! what to send, and when, belongs to the broker.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic::AMQPProperties, constants, AMQPClass};
use amq_protocol::types::generation::{gen_id, gen_long_uint, gen_short_short_uint};

use crate::limits::{FRAME_HEADER_SIZE, FRAME_OVERHEAD};

fn append(out: &mut Vec<u8>, frame: &AMQPFrame) {
    let buf = std::mem::take(out);
    let restore_len = buf.len();
    match gen_frame(frame)(WriteContext::from(buf)) {
        Ok(ctx) => *out = ctx.write,
        Err(e) => {
            // Generation into a growable Vec only fails on values that cannot be encoded
            // (which the broker never builds); the buffer is lost with the error, so start over
            // from what was there before rather than send a partial frame.
            tracing::error!(error = ?e, "frame generation failed");
            out.truncate(restore_len);
        }
    }
}

/// Appends one method frame.
pub fn method(out: &mut Vec<u8>, channel: u16, method: &AMQPClass) {
    append(out, &AMQPFrame::Method(channel, method.clone()));
}

/// Appends one method frame, taking the method by value (no clone).
pub fn method_owned(out: &mut Vec<u8>, channel: u16, method: AMQPClass) {
    append(out, &AMQPFrame::Method(channel, method));
}

/// Appends a content header frame and the body frames, split to fit `frame_max`.
pub fn content(
    out: &mut Vec<u8>,
    channel: u16,
    properties: &AMQPProperties,
    body: &[u8],
    frame_max: u32,
) {
    let header = AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: properties.clone(),
        },
    );
    append(out, &header);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        append(out, &AMQPFrame::Body(channel, part.to_vec()));
    }
}

/// Encodes a content header's payload (class, weight, body size, properties): what
/// [`content_raw`] forwards, for a message whose header did not come off the wire as it is.
pub fn header_payload(properties: &AMQPProperties, body_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    append(
        &mut out,
        &AMQPFrame::Header(
            0,
            AMQPContentHeader {
                class_id: 60,
                body_size,
                properties: properties.clone(),
            },
        ),
    );
    if out.len() < FRAME_OVERHEAD {
        return Vec::new();
    }
    out.truncate(out.len() - 1);
    out.split_off(FRAME_HEADER_SIZE)
}

/// Appends one frame whose payload is already encoded: the frame header and frame-end octet
/// from amq-protocol's primitive generators around `payload`, copied as it is.
fn frame_with_payload(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    let restore_len = out.len();
    let ctx = WriteContext::from(std::mem::take(out));
    let head = gen_short_short_uint(kind)(ctx)
        .and_then(gen_id(channel))
        .and_then(gen_long_uint(payload.len() as u32));
    match head {
        Ok(ctx) => {
            *out = ctx.write;
            out.extend_from_slice(payload);
            out.push(constants::FRAME_END);
        }
        Err(e) => {
            tracing::error!(error = ?e, "frame generation failed");
            out.truncate(restore_len);
        }
    }
}

/// Appends a content header frame carrying `header_payload` (a received header's payload, or
/// one from [`header_payload`]) and the body frames, split to fit `frame_max`, without
/// re-encoding the properties or copying the body into an intermediate buffer.
pub fn content_raw(
    out: &mut Vec<u8>,
    channel: u16,
    header_payload: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    out.reserve(header_payload.len() + body.len() + 2 * FRAME_OVERHEAD);
    frame_with_payload(out, constants::FRAME_HEADER, channel, header_payload);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        frame_with_payload(out, constants::FRAME_BODY, channel, part);
    }
}

/// Appends a heartbeat frame.
pub fn heartbeat(out: &mut Vec<u8>) {
    append(out, &AMQPFrame::Heartbeat);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame, InFrame};
    use bytes::BytesMut;

    #[test]
    fn content_is_split_by_frame_max() {
        let body = vec![7u8; 10_000];
        let mut out = Vec::new();
        content(&mut out, 3, &AMQPProperties::default(), &body, 4096);
        let mut buf = BytesMut::from(&out[..]);
        let mut parts = Vec::new();
        while let Some(f) = decode_frame(&mut buf, 4096).unwrap() {
            parts.push(f);
        }
        assert!(matches!(&parts[0], InFrame::Header(3, h, _) if h.body_size == 10_000));
        let sizes: Vec<usize> = parts[1..]
            .iter()
            .map(|f| match f {
                InFrame::Body(_, b) => b.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![4088, 4088, 1824]);
    }

    #[test]
    fn raw_content_matches_encoded_content() {
        let props = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id("c-1".into());
        let body = vec![3u8; 9_000];
        let mut encoded = Vec::new();
        content(&mut encoded, 7, &props, &body, 4096);
        let mut raw = Vec::new();
        content_raw(
            &mut raw,
            7,
            &header_payload(&props, body.len() as u64),
            &body,
            4096,
        );
        assert_eq!(raw, encoded);
    }

    #[test]
    fn received_header_payload_is_forwarded_unchanged() {
        let props = AMQPProperties::default().with_message_id("m".into());
        let mut wire = Vec::new();
        content(&mut wire, 1, &props, b"abc", 131_072);
        let mut buf = BytesMut::from(&wire[..]);
        let Some(InFrame::Header(1, parsed, payload)) = decode_frame(&mut buf, 131_072).unwrap()
        else {
            panic!("expected a header frame");
        };
        assert_eq!(parsed.properties, props);
        let mut again = Vec::new();
        content_raw(&mut again, 1, &payload, b"abc", 131_072);
        assert_eq!(again, wire);
    }
}
