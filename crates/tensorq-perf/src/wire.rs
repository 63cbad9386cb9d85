//! Wire helpers over `amq-protocol`: encoding frames into a reusable buffer,
//! pre-encoded publish templates (a generated body whose send stamp is patched
//! in place, or a fixed body sent verbatim) with their patched correlation ids
//! and the format of those ids, and a large-buffer frame reader that yields
//! borrowed raw frames. Owns no protocol
//! state (handshake, acks, confirms live in `conn`, `producer`, `consumer`).
//! The codec itself is `amq-protocol`'s; nothing here hand-encodes a frame.

use crate::error::PerfError;
use amq_protocol::frame::parsing::{parse_content_header, parse_frame_type, parse_raw_frame};
use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, AMQPFrameType, WriteContext};
use amq_protocol::protocol::{basic, parse_class, AMQPClass, BasicProperties};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes in a frame's header (type, channel, size).
pub const FRAME_HEADER_LEN: usize = 7;
/// Bytes in a frame's end marker.
pub const FRAME_END_LEN: usize = 1;
/// Frame size this client asks for.
pub const CLIENT_FRAME_MAX: u32 = 131_072;
/// Read buffer size; grows if a frame is larger.
pub const READ_BUFFER_BYTES: usize = 512 * 1024;
/// Free space below which the reader compacts (or grows) before reading, so reads stay large.
const MIN_READ_SPACE: usize = 64 * 1024;
/// Bytes of a body that carry the send timestamp.
pub const TIMESTAMP_LEN: usize = 8;
/// AMQP class id of `basic`.
pub const BASIC_CLASS_ID: u16 = 60;
/// Width of the correlation id patched into RPC requests.
pub const CORRELATION_ID_LEN: usize = 16;
/// Placeholder byte the correlation id template is filled with.
const CORRELATION_PLACEHOLDER: u8 = b'~';

/// Append the encoding of `frame` to `out`.
pub fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) -> Result<(), PerfError> {
    let ctx = WriteContext::from(std::mem::take(out));
    let ctx = gen_frame(frame)(ctx).map_err(|e| PerfError::Encode(e.to_string()))?;
    *out = ctx.into_inner().0;
    Ok(())
}

/// Append a method frame.
pub fn encode_method(channel: u16, class: AMQPClass, out: &mut Vec<u8>) -> Result<(), PerfError> {
    encode(&AMQPFrame::Method(channel, class), out)
}

/// Append a full message (publish method, header, body frames split at `frame_max`).
pub fn encode_message(
    channel: u16,
    publish: basic::Publish,
    properties: BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut Vec<u8>,
) -> Result<(), PerfError> {
    encode_method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
        out,
    )?;
    let header = AMQPContentHeader {
        class_id: BASIC_CLASS_ID,
        body_size: body.len() as u64,
        properties,
    };
    encode(&AMQPFrame::Header(channel, header), out)?;
    let chunk = max_body_chunk(frame_max);
    for part in body.chunks(chunk) {
        encode(&AMQPFrame::Body(channel, part.to_vec()), out)?;
    }
    Ok(())
}

/// Largest body payload per frame for a negotiated `frame_max`.
pub fn max_body_chunk(frame_max: u32) -> usize {
    let max = usize::try_from(frame_max).unwrap_or(usize::MAX);
    max.saturating_sub(FRAME_HEADER_LEN + FRAME_END_LEN).max(1)
}

/// A publish encoded once; each copy gets its timestamp (generated bodies
/// only) and, for RPC, its correlation id patched in place.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    timestamp_at: Option<usize>,
    correlation_at: Option<usize>,
}

impl PublishTemplate {
    /// Encode a publish of `size` zero bytes to `routing_key` on the default exchange;
    /// each copy carries its send stamp in the first [`TIMESTAMP_LEN`] body bytes.
    /// With `with_correlation`, a fixed-width correlation id slot is reserved.
    pub fn new(
        channel: u16,
        routing_key: &str,
        properties: BasicProperties,
        size: usize,
        frame_max: u32,
        with_correlation: bool,
    ) -> Result<Self, PerfError> {
        let zeros = vec![0u8; size];
        Self::build(
            channel,
            routing_key,
            properties,
            &zeros,
            true,
            frame_max,
            with_correlation,
        )
    }

    /// Encode a publish whose body is exactly `body` (never patched: no send stamp).
    pub fn fixed(
        channel: u16,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
        frame_max: u32,
        with_correlation: bool,
    ) -> Result<Self, PerfError> {
        Self::build(
            channel,
            routing_key,
            properties,
            body,
            false,
            frame_max,
            with_correlation,
        )
    }

    fn build(
        channel: u16,
        routing_key: &str,
        mut properties: BasicProperties,
        body: &[u8],
        stamped: bool,
        frame_max: u32,
        with_correlation: bool,
    ) -> Result<Self, PerfError> {
        if with_correlation {
            let slot = String::from_utf8(vec![CORRELATION_PLACEHOLDER; CORRELATION_ID_LEN])
                .map_err(|e| PerfError::Encode(e.to_string()))?;
            properties = properties.with_correlation_id(slot.as_str().into());
        }
        let publish = basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        };
        let mut method = Vec::new();
        encode_method(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
            &mut method,
        )?;
        let mut header = Vec::new();
        let content = AMQPContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size: body.len() as u64,
            properties,
        };
        encode(&AMQPFrame::Header(channel, content), &mut header)?;
        let correlation_at = if with_correlation {
            let pos = header
                .windows(CORRELATION_ID_LEN)
                .position(|w| w.iter().all(|b| *b == CORRELATION_PLACEHOLDER))
                .ok_or_else(|| PerfError::Encode("correlation id slot not found".into()))?;
            Some(method.len() + pos)
        } else {
            None
        };
        let mut bytes = method;
        bytes.extend_from_slice(&header);
        let body_start = bytes.len();
        for part in body.chunks(max_body_chunk(frame_max)) {
            encode(&AMQPFrame::Body(channel, part.to_vec()), &mut bytes)?;
        }
        let timestamp_at =
            if stamped && body.len() >= TIMESTAMP_LEN && max_body_chunk(frame_max) >= TIMESTAMP_LEN
            {
                Some(body_start + FRAME_HEADER_LEN)
            } else {
                None
            };
        Ok(Self {
            bytes,
            timestamp_at,
            correlation_at,
        })
    }

    /// Encoded length of one message.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Append one message stamped with `stamp_ns` and correlation number `seq`.
    pub fn append(&self, out: &mut Vec<u8>, stamp_ns: u64, seq: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.timestamp_at {
            if let Some(slot) = out.get_mut(start + at..start + at + TIMESTAMP_LEN) {
                slot.copy_from_slice(&stamp_ns.to_le_bytes());
            }
        }
        if let Some(at) = self.correlation_at {
            if let Some(slot) = out.get_mut(start + at..start + at + CORRELATION_ID_LEN) {
                let id = format_correlation(seq);
                slot.copy_from_slice(&id);
            }
        }
    }
}

/// The fixed-width correlation id of request `seq` (lower-case hex).
pub fn format_correlation(seq: u64) -> [u8; CORRELATION_ID_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; CORRELATION_ID_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 4 * (CORRELATION_ID_LEN - 1 - i);
        let nibble = ((seq >> shift) & 0xf) as usize;
        *slot = HEX.get(nibble).copied().unwrap_or(b'0');
    }
    out
}

/// The request number in a correlation id made by [`format_correlation`], or
/// `None` when `id` is not exactly [`CORRELATION_ID_LEN`] hex digits.
pub fn parse_correlation(id: &[u8]) -> Option<u64> {
    if id.len() != CORRELATION_ID_LEN {
        return None;
    }
    id.iter().try_fold(0u64, |acc, b| {
        let digit = char::from(*b).to_digit(16)?;
        Some((acc << 4) | u64::from(digit))
    })
}

/// The send stamp carried by a body's first bytes, if present.
pub fn read_timestamp(body: &[u8]) -> Option<u64> {
    let bytes: [u8; TIMESTAMP_LEN] = body.get(..TIMESTAMP_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// One frame borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFrame<'a> {
    /// A method frame's payload.
    Method(u16, &'a [u8]),
    /// A content header frame's payload.
    Header(u16, &'a [u8]),
    /// A content body frame's payload.
    Body(u16, &'a [u8]),
    /// A heartbeat.
    Heartbeat,
}

/// Parse a method payload into its class.
pub fn parse_method(payload: &[u8]) -> Result<AMQPClass, PerfError> {
    parse_class(payload)
        .map(|(_, class)| class)
        .map_err(|e| PerfError::Malformed(format!("method: {e}")))
}

/// Parse a content header payload.
pub fn parse_header(payload: &[u8]) -> Result<AMQPContentHeader, PerfError> {
    parse_content_header(payload)
        .map(|(_, header)| header)
        .map_err(|e| PerfError::Malformed(format!("content header: {e}")))
}

/// Reads with large buffers and splits the bytes into raw frames without copying.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self {
            buf: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    /// Read once from `src` (at least one byte); `Closed` at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, src: &mut R) -> Result<usize, PerfError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < MIN_READ_SPACE {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        let free = self.buf.get_mut(self.end..).ok_or(PerfError::Closed)?;
        let n = src.read(free).await?;
        if n == 0 {
            return Err(PerfError::Closed);
        }
        self.end += n;
        Ok(n)
    }

    /// Read exactly `n` raw bytes (the protocol header exchange).
    pub async fn take_bytes<R: AsyncRead + Unpin>(
        &mut self,
        src: &mut R,
        n: usize,
    ) -> Result<Vec<u8>, PerfError> {
        while self.end - self.start < n {
            self.fill(src).await?;
        }
        let out = self.buf.get(self.start..self.start + n).map(<[u8]>::to_vec);
        self.start += n;
        out.ok_or(PerfError::Closed)
    }

    /// The next complete frame in the buffer, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>, PerfError> {
        let input = self.buf.get(self.start..self.end).unwrap_or(&[]);
        if input.is_empty() {
            return Ok(None);
        }
        let parsed = parse_frame_type(input).and_then(|(rest, kind)| {
            parse_raw_frame(kind)(rest)
                .map(|(rest, raw)| (rest, kind, raw.channel_id, raw.payload.len()))
        });
        let (kind, channel, payload_len, consumed) = match parsed {
            Ok((rest, kind, channel, len)) => (kind, channel, len, input.len() - rest.len()),
            Err(nom::Err::Incomplete(_)) => return Ok(None),
            Err(e) => return Err(PerfError::Malformed(format!("frame: {e}"))),
        };
        let begin = self.start + FRAME_HEADER_LEN;
        self.start += consumed;
        let payload = self
            .buf
            .get(begin..begin + payload_len)
            .ok_or_else(|| PerfError::Malformed("frame bounds".into()))?;
        Ok(Some(match kind {
            AMQPFrameType::Method => RawFrame::Method(channel, payload),
            AMQPFrameType::Header => RawFrame::Header(channel, payload),
            AMQPFrameType::Body => RawFrame::Body(channel, payload),
            AMQPFrameType::Heartbeat => RawFrame::Heartbeat,
            AMQPFrameType::ProtocolHeader => {
                return Err(PerfError::Unexpected("protocol header mid-stream".into()))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;

    #[test]
    fn template_round_trips_through_amq_protocol() -> Result<(), PerfError> {
        let props = BasicProperties::default().with_reply_to("replies".into());
        let t = PublishTemplate::new(3, "perf-q", props, 32, CLIENT_FRAME_MAX, true)?;
        let mut buf = Vec::new();
        t.append(&mut buf, 0x0102_0304_0506_0708, 0xabc);
        t.append(&mut buf, 42, 7);
        assert_eq!(buf.len(), 2 * t.len());
        let mut rest: &[u8] = &buf;
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let (r, f) = parse_frame(rest).map_err(|e| PerfError::Malformed(e.to_string()))?;
            frames.push(f);
            rest = r;
        }
        assert_eq!(frames.len(), 6);
        match (&frames[1], &frames[2], &frames[5]) {
            (AMQPFrame::Header(3, h), AMQPFrame::Body(3, b1), AMQPFrame::Body(3, b2)) => {
                assert_eq!(h.body_size, 32);
                let corr = h.properties.correlation_id().clone().map(|s| s.to_string());
                assert_eq!(corr.as_deref(), Some("0000000000000abc"));
                assert_eq!(read_timestamp(b1), Some(0x0102_0304_0506_0708));
                assert_eq!(read_timestamp(b2), Some(42));
            }
            other => panic!("unexpected frames {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn fixed_body_is_sent_verbatim_with_properties() -> Result<(), PerfError> {
        let body = br#"{"instances":[[0.1,0.2]]}"#;
        let props = BasicProperties::default()
            .with_reply_to("replies".into())
            .with_content_type("application/json".into());
        let t = PublishTemplate::fixed(1, "bench.seed", props, body, CLIENT_FRAME_MAX, true)?;
        let mut buf = Vec::new();
        t.append(&mut buf, u64::MAX, 0x1f);
        let (rest, _) =
            parse_frame(buf.as_slice()).map_err(|e| PerfError::Malformed(e.to_string()))?;
        let (rest, header) = parse_frame(rest).map_err(|e| PerfError::Malformed(e.to_string()))?;
        let (rest, payload) = parse_frame(rest).map_err(|e| PerfError::Malformed(e.to_string()))?;
        assert!(rest.is_empty());
        match (header, payload) {
            (AMQPFrame::Header(1, h), AMQPFrame::Body(1, b)) => {
                assert_eq!(h.body_size, body.len() as u64);
                let ct = h.properties.content_type().clone().map(|s| s.to_string());
                assert_eq!(ct.as_deref(), Some("application/json"));
                let corr = h.properties.correlation_id().clone().map(|s| s.to_string());
                assert_eq!(corr.as_deref(), Some("000000000000001f"));
                assert_eq!(b.as_slice(), body);
            }
            other => panic!("unexpected frames {other:?}"),
        }
        let empty = PublishTemplate::fixed(
            1,
            "q",
            BasicProperties::default(),
            &[],
            CLIENT_FRAME_MAX,
            false,
        )?;
        let mut one = Vec::new();
        empty.append(&mut one, 7, 1);
        assert_eq!(one.len(), empty.len());
        Ok(())
    }

    #[test]
    fn correlation_ids_round_trip() {
        for seq in [1, 0xabc, u64::from(u32::MAX) + 7, u64::MAX] {
            assert_eq!(parse_correlation(&format_correlation(seq)), Some(seq));
        }
        assert_eq!(parse_correlation(b"0000000000000ABC"), Some(0xabc));
        assert_eq!(parse_correlation(b"abc"), None);
        assert_eq!(parse_correlation(b"00000000000000000"), None);
        assert_eq!(parse_correlation(b"000000000000000g"), None);
        assert_eq!(parse_correlation(b"+00000000000000f"), None);
    }

    #[test]
    fn reader_splits_frames_across_reads() -> Result<(), PerfError> {
        let t = PublishTemplate::new(
            1,
            "q",
            BasicProperties::default(),
            16,
            CLIENT_FRAME_MAX,
            false,
        )?;
        let mut wire = Vec::new();
        for i in 0..1000 {
            t.append(&mut wire, i, i);
        }
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        rt.block_on(async {
            let (mut a, mut b) = tokio::io::duplex(333);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                a.write_all(&wire).await
            });
            let mut reader = FrameReader::new();
            let (mut bodies, mut methods) = (0u64, 0u64);
            while bodies < 1000 {
                reader.fill(&mut b).await?;
                while let Some(f) = reader.next_frame()? {
                    match f {
                        RawFrame::Method(_, p) => {
                            assert!(matches!(
                                parse_method(p)?,
                                AMQPClass::Basic(basic::AMQPMethod::Publish(_))
                            ));
                            methods += 1;
                        }
                        RawFrame::Body(_, p) => {
                            assert_eq!(read_timestamp(p), Some(bodies));
                            bodies += 1;
                        }
                        RawFrame::Header(_, p) => assert_eq!(parse_header(p)?.body_size, 16),
                        RawFrame::Heartbeat => {}
                    }
                }
            }
            assert_eq!(methods, 1000);
            writer.await.map_err(|e| PerfError::Task(e.to_string()))??;
            Ok(())
        })
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let mut r = FrameReader::new();
        r.buf[..8].copy_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0xce]);
        r.end = 8;
        assert!(r.next_frame().is_err());
    }
}
