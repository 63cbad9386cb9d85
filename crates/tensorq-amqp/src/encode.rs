//! Serialising frames with `amq-protocol`'s generators into a connection's output buffer.
//!
//! Every function appends to a `Vec<u8>`, so a connection can gather many frames (deliveries,
//! confirms, replies) and write them with one system call. This module owns frame layout only;
//! what to send, and when, belongs to the broker.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};

use crate::limits::FRAME_OVERHEAD;

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
        assert!(matches!(&parts[0], InFrame::Header(3, h) if h.body_size == 10_000));
        let sizes: Vec<usize> = parts[1..]
            .iter()
            .map(|f| match f {
                InFrame::Body(_, b) => b.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![4088, 4088, 1824]);
    }
}
