//! Content assembly: a `basic.publish` method, then a content header, then body frames until the
//! declared body size is reached.
//!
//! One [`Assembler`] lives in each channel. It checks the order of frames (505 UNEXPECTED_FRAME),
//! that body frames do not run past the size the header declared (501 FRAME_ERROR), and the
//! configured largest message size (406 PRECONDITION_FAILED, as RabbitMQ). It never reserves
//! memory for a declared size before the bytes arrive, so a header announcing a huge body costs
//! nothing. Routing the finished message is the broker's job.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::basic::{AMQPProperties, Publish};
use bytes::{Bytes, BytesMut};

use crate::error::AmqpError;

/// A complete published message, ready to route.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub publish: Publish,
    pub properties: AMQPProperties,
    /// The content header's payload as received (see [`crate::encode::content_raw`]).
    pub header_payload: Bytes,
    pub body: Bytes,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    AwaitHeader(Publish),
    AwaitBody(Box<Pending>),
}

#[derive(Debug)]
struct Pending {
    publish: Publish,
    properties: AMQPProperties,
    header_payload: Bytes,
    size: u64,
    first: Option<Bytes>,
    rest: BytesMut,
}

/// The per-channel content assembly state machine.
#[derive(Debug)]
pub struct Assembler {
    state: State,
    max_body: u64,
}

impl Assembler {
    /// An idle assembler refusing bodies above `max_body` bytes.
    pub fn new(max_body: u64) -> Self {
        Assembler {
            state: State::Idle,
            max_body,
        }
    }

    /// True between messages: a method frame other than `basic.publish` may arrive now.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Drops any half-assembled message (channel closing).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// A `basic.publish` arrived.
    pub fn publish(&mut self, publish: Publish) -> Result<(), AmqpError> {
        if !self.is_idle() {
            return Err(AmqpError::unexpected_frame(
                "expected content header or body for the pending basic.publish, got a method",
            )
            .on_method(60, 40));
        }
        self.state = State::AwaitHeader(publish);
        Ok(())
    }

    /// A content header arrived. Returns the message when its body is empty.
    pub fn header(
        &mut self,
        header: AMQPContentHeader,
        header_payload: Bytes,
    ) -> Result<Option<Content>, AmqpError> {
        let publish = match std::mem::take(&mut self.state) {
            State::AwaitHeader(p) => p,
            other => {
                self.state = other;
                return Err(AmqpError::unexpected_frame(
                    "content header frame without a preceding basic.publish",
                ));
            }
        };
        if header.class_id != 60 {
            return Err(AmqpError::unexpected_frame(format!(
                "content header for class {} (expected 60, basic)",
                header.class_id
            )));
        }
        if header.body_size > self.max_body {
            return Err(AmqpError::precondition_failed(format!(
                "message size {} is larger than configured max size {}",
                header.body_size, self.max_body
            ))
            .on_method(60, 40));
        }
        if header.body_size == 0 {
            return Ok(Some(Content {
                publish,
                properties: header.properties,
                header_payload,
                body: Bytes::new(),
            }));
        }
        self.state = State::AwaitBody(Box::new(Pending {
            publish,
            properties: header.properties,
            header_payload,
            size: header.body_size,
            first: None,
            rest: BytesMut::new(),
        }));
        Ok(None)
    }

    /// A body frame arrived. Returns the message once the declared size is reached.
    pub fn body(&mut self, chunk: Bytes) -> Result<Option<Content>, AmqpError> {
        let State::AwaitBody(pending) = &mut self.state else {
            return Err(AmqpError::unexpected_frame(
                "content body frame without a preceding content header",
            ));
        };
        let Pending {
            size, first, rest, ..
        } = pending.as_mut();
        let have = first.as_ref().map_or(0, |b| b.len()) + rest.len();
        let now = have as u64 + chunk.len() as u64;
        if now > *size {
            return Err(AmqpError::frame_error(format!(
                "content body of {now} bytes exceeds the declared body size {size}"
            )));
        }
        match first {
            None if rest.is_empty() => *first = Some(chunk),
            _ => {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&chunk);
            }
        }
        if now < *size {
            return Ok(None);
        }
        match std::mem::take(&mut self.state) {
            State::AwaitBody(p) => {
                let Pending {
                    publish,
                    properties,
                    header_payload,
                    first,
                    rest,
                    ..
                } = *p;
                Ok(Some(Content {
                    publish,
                    properties,
                    header_payload,
                    body: first.unwrap_or_else(|| rest.freeze()),
                }))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn publish() -> Publish {
        Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        }
    }

    fn header(size: u64) -> AMQPContentHeader {
        AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: AMQPProperties::default(),
        }
    }

    #[test]
    fn order_is_enforced() {
        let mut a = Assembler::new(1024);
        assert_eq!(a.header(header(1), Bytes::new()).unwrap_err().code, 505);
        assert_eq!(a.body(Bytes::from_static(b"x")).unwrap_err().code, 505);
        a.publish(publish()).unwrap();
        assert_eq!(a.publish(publish()).unwrap_err().code, 505);
    }

    #[test]
    fn limits() {
        let mut a = Assembler::new(10);
        a.publish(publish()).unwrap();
        assert_eq!(a.header(header(11), Bytes::new()).unwrap_err().code, 406);
        let mut a = Assembler::new(10);
        a.publish(publish()).unwrap();
        a.header(header(3), Bytes::new()).unwrap();
        assert_eq!(a.body(Bytes::from_static(b"abcd")).unwrap_err().code, 501);
    }

    #[test]
    fn empty_body_completes_at_header() {
        let mut a = Assembler::new(10);
        a.publish(publish()).unwrap();
        let c = a.header(header(0), Bytes::new()).unwrap().unwrap();
        assert!(c.body.is_empty());
        assert!(a.is_idle());
    }

    proptest! {
        /// However the body is split into frames, the assembled body equals the original.
        #[test]
        fn any_split_reassembles(body in proptest::collection::vec(any::<u8>(), 1..2000),
                                 cuts in proptest::collection::vec(1usize..300, 0..20)) {
            let mut a = Assembler::new(1 << 20);
            a.publish(publish()).unwrap();
            prop_assert!(a.header(header(body.len() as u64), Bytes::new()).unwrap().is_none());
            let mut rest = &body[..];
            let mut out = None;
            for c in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
                if rest.is_empty() { break; }
                let n = (*c).min(rest.len());
                let (now, later) = rest.split_at(n);
                rest = later;
                out = a.body(Bytes::copy_from_slice(now)).unwrap();
                prop_assert_eq!(out.is_some(), rest.is_empty());
            }
            prop_assert_eq!(&out.unwrap().body[..], &body[..]);
            prop_assert!(a.is_idle());
        }
    }
}
