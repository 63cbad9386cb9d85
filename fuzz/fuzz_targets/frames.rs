//! Drives the frame decoder and the per-channel content assembler with arbitrary bytes, as a
//! connection would after the protocol header: no input may panic, hang or grow memory beyond
//! the frame limit.
#![no_main]

use std::collections::HashMap;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tensorq_amqp::amq_protocol::protocol::{basic, AMQPClass};
use tensorq_amqp::assembler::Assembler;
use tensorq_amqp::frame::{check_protocol_header, decode_frame, HeaderCheck, InFrame};
use tensorq_amqp::limits::{FRAME_MAX, PRE_TUNE_FRAME_MAX};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the mode: even starts as a fresh connection (protocol header, pre-tune
    // frame limit), odd as a connection past the handshake.
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(rest);
    let frame_max = if mode & 1 == 0 {
        if check_protocol_header(&mut buf) != HeaderCheck::Accepted {
            return;
        }
        PRE_TUNE_FRAME_MAX
    } else {
        FRAME_MAX
    };
    let mut channels: HashMap<u16, Assembler> = HashMap::new();
    while let Ok(Some(frame)) = decode_frame(&mut buf, frame_max) {
        let result = match frame {
            InFrame::Method(ch, AMQPClass::Basic(basic::AMQPMethod::Publish(p))) => channels
                .entry(ch)
                .or_insert_with(|| Assembler::new(1 << 20))
                .publish(p)
                .map(|_| None),
            InFrame::Header(ch, h, raw) => channels
                .entry(ch)
                .or_insert_with(|| Assembler::new(1 << 20))
                .header(*h, raw),
            InFrame::Body(ch, b) => channels
                .entry(ch)
                .or_insert_with(|| Assembler::new(1 << 20))
                .body(b),
            _ => Ok(None),
        };
        if result.is_err() {
            break;
        }
    }
});
