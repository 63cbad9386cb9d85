//! RPC responder side: turns a completed request delivery into a reply
//! published to its `reply_to` with the request's correlation id and body.
//! Owns nothing else: the request/reply loop on the producer side lives in
//! `producer`, the delivery loop in `consumer`.

use crate::assemble::Completed;
use crate::conn::DATA_CHANNEL;
use crate::error::PerfError;
use crate::wire::encode_message;
use amq_protocol::protocol::{basic, BasicProperties};

/// Append the reply to `request` to `out`; returns false when the request has no `reply_to`.
pub fn append_reply(
    request: &Completed,
    frame_max: u32,
    out: &mut Vec<u8>,
) -> Result<bool, PerfError> {
    let Some(header) = &request.header else {
        return Ok(false);
    };
    let Some(reply_to) = header.properties.reply_to().clone() else {
        return Ok(false);
    };
    let mut properties = BasicProperties::default();
    if let Some(id) = header.properties.correlation_id().clone() {
        properties = properties.with_correlation_id(id);
    }
    let publish = basic::Publish {
        exchange: "".into(),
        routing_key: reply_to,
        mandatory: false,
        immediate: false,
    };
    encode_message(
        DATA_CHANNEL,
        publish,
        properties,
        &request.body,
        frame_max,
        out,
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PublishTemplate, CLIENT_FRAME_MAX};
    use amq_protocol::frame::{parse_frame, AMQPFrame};
    use amq_protocol::protocol::AMQPClass;

    #[test]
    fn reply_echoes_body_and_correlation_to_reply_to() -> Result<(), PerfError> {
        let props = BasicProperties::default().with_reply_to("amq.gen-x".into());
        let t = PublishTemplate::new(1, "perf-rpc", props, 16, CLIENT_FRAME_MAX, true)?;
        let mut req = Vec::new();
        t.append(&mut req, 99, 5);
        let mut frames = Vec::new();
        let mut rest: &[u8] = &req;
        while !rest.is_empty() {
            let (r, f) = parse_frame(rest).map_err(|e| PerfError::Malformed(e.to_string()))?;
            frames.push(f);
            rest = r;
        }
        let (header, body) = match (&frames[1], &frames[2]) {
            (AMQPFrame::Header(_, h), AMQPFrame::Body(_, b)) => (h.clone(), b.clone()),
            other => panic!("unexpected {other:?}"),
        };
        let request = Completed {
            stamp: Some(99),
            correlation: Some(5),
            header: Some(header),
            body: body.clone(),
        };
        let mut out = Vec::new();
        assert!(append_reply(&request, CLIENT_FRAME_MAX, &mut out)?);
        let (rest, f) =
            parse_frame(out.as_slice()).map_err(|e| PerfError::Malformed(e.to_string()))?;
        match f {
            AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(p))) => {
                assert_eq!(p.routing_key.as_str(), "amq.gen-x")
            }
            other => panic!("unexpected {other:?}"),
        }
        let (rest, f) = parse_frame(rest).map_err(|e| PerfError::Malformed(e.to_string()))?;
        match f {
            AMQPFrame::Header(_, h) => assert_eq!(
                h.properties
                    .correlation_id()
                    .clone()
                    .map(|c| c.to_string())
                    .as_deref(),
                Some("0000000000000005")
            ),
            other => panic!("unexpected {other:?}"),
        }
        let (_, f) = parse_frame(rest).map_err(|e| PerfError::Malformed(e.to_string()))?;
        assert_eq!(f, AMQPFrame::Body(DATA_CHANNEL, body));
        let bare = Completed {
            stamp: None,
            correlation: None,
            header: None,
            body: Vec::new(),
        };
        assert!(!append_reply(&bare, CLIENT_FRAME_MAX, &mut out)?);
        Ok(())
    }
}
