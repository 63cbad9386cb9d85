//! Byte format of everything in a segment directory: segment header,
//! message records and ack entries, each protected by CRC32C.
//!
//! Owns: encoding/decoding and validation of bytes, and the format limits.
//! Does not own: files, offsets bookkeeping or I/O (see `segment.rs`,
//! `writer.rs`, `recovery.rs`). Nothing here panics on malformed input.
//!
//! All integers are little-endian. See docs/STORAGE.md for the layout.

use crate::handle::MsgRef;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TQSEGv01";
/// On-disk format version written in segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// Segment header length in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// `len` (u32) + `crc32c` (u32) in front of every record body.
pub const RECORD_PREFIX_LEN: usize = 8;
/// `kind` (u8) + `flags` (u8) + `nqueues` (u16) + `id` (u64).
pub const RECORD_FIXED_BODY_LEN: usize = 12;
/// Record kind: a message routed to one or more queues.
pub const KIND_MESSAGE: u8 = 1;
/// Record kind: a run of messages acked before they were written. Only its
/// 20-byte head is written; the CRC covers the 12 fixed body bytes, and the
/// rest of the run (`len` − 12 bytes) is never written (a hole in the file).
pub const KIND_SKIPPED: u8 = 2;
/// Bytes of a skipped run that reach the file: prefix and fixed body.
pub const SKIP_HEAD_LEN: usize = RECORD_PREFIX_LEN + RECORD_FIXED_BODY_LEN;
/// Most queues one message record may list.
pub const MAX_QUEUES_PER_MESSAGE: usize = 4096;
/// Largest payload accepted.
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024 * 1024;
/// Largest valid record body (`len` field) that recovery accepts.
pub const MAX_RECORD_BODY_LEN: usize =
    RECORD_FIXED_BODY_LEN + 4 * MAX_QUEUES_PER_MESSAGE + MAX_PAYLOAD_LEN;
/// Size of one ack entry: queue id u32, record offset u32, crc32c u32.
pub const ACK_ENTRY_LEN: usize = 12;
/// Magic of the clean-shutdown marker file.
pub const CLEAN_MAGIC: [u8; 8] = *b"TQCLEAN1";
/// Fixed part of the clean marker: magic + next_id u64 + count u32.
pub const CLEAN_FIXED_LEN: usize = 20;
/// One entry of the clean marker: queue id u32 + message id u64.
pub const CLEAN_ENTRY_LEN: usize = 12;

/// Why a byte range is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the record needs (torn tail).
    Incomplete,
    /// The `len` field is outside the valid range.
    BadLength(u32),
    /// CRC mismatch.
    BadCrc,
    /// Unknown record kind.
    BadKind(u8),
    /// The queue count is zero, too large, or does not fit in `len`.
    BadQueueCount(u16),
}

/// Parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment number (must match the file name).
    pub segment: u32,
    /// The next message id at the time the segment was created.
    pub first_id: u64,
}

/// A validated message record borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Message id.
    pub id: u64,
    queues: &'a [u8],
    /// Opaque payload.
    pub payload: &'a [u8],
    /// Offset of the payload from the record start.
    pub payload_offset: usize,
    /// Total record length (prefix + body).
    pub total_len: usize,
}

impl<'a> RecordView<'a> {
    /// Queue ids listed in the record, in append order.
    pub fn queues(&self) -> impl Iterator<Item = u32> + 'a {
        self.queues
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }
    /// Number of queues listed.
    pub fn queue_count(&self) -> usize {
        self.queues.len() / 4
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Encode a segment header.
pub fn encode_segment_header(segment: u32, first_id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&segment.to_le_bytes());
    h[16..24].copy_from_slice(&first_id.to_le_bytes());
    // 24..28 reserved, zero.
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decode and validate a segment header.
pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, &'static str> {
    let h = b
        .get(0..SEGMENT_HEADER_LEN)
        .ok_or("header shorter than 32 bytes")?;
    if h.get(0..8) != Some(&SEGMENT_MAGIC[..]) {
        return Err("bad magic");
    }
    let crc = le_u32(h, 28).ok_or("short header")?;
    if crc32c::crc32c(h.get(0..28).ok_or("short header")?) != crc {
        return Err("header CRC mismatch");
    }
    if le_u32(h, 8) != Some(FORMAT_VERSION) {
        return Err("unsupported format version");
    }
    Ok(SegmentHeader {
        segment: le_u32(h, 12).ok_or("short header")?,
        first_id: le_u64(h, 16).ok_or("short header")?,
    })
}

/// Total on-disk length of a message record.
pub fn record_len(nqueues: usize, payload_len: usize) -> usize {
    RECORD_PREFIX_LEN + RECORD_FIXED_BODY_LEN + 4 * nqueues + payload_len
}

/// Append an encoded message record to `out`. The caller validated the
/// queue count and payload length against the limits above.
pub fn encode_record<Q: Copy + Into<u32>>(
    out: &mut Vec<u8>,
    id: u64,
    queues: &[Q],
    payload: &[u8],
) {
    encode_record_parts(out, id, queues, &[payload]);
}

/// [`encode_record`] for a payload given as consecutive parts.
pub fn encode_record_parts<Q: Copy + Into<u32>>(
    out: &mut Vec<u8>,
    id: u64,
    queues: &[Q],
    parts: &[&[u8]],
) {
    let start = out.len();
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let body_len = RECORD_FIXED_BODY_LEN + 4 * queues.len() + payload_len;
    out.reserve(RECORD_PREFIX_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc placeholder
    out.push(KIND_MESSAGE);
    out.push(0); // flags
    out.extend_from_slice(&(queues.len() as u16).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    for q in queues {
        out.extend_from_slice(&(*q).into().to_le_bytes());
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    let body_start = start + RECORD_PREFIX_LEN;
    let crc = crc32c::crc32c(&out[body_start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The head of a skipped run of `run_len` bytes (the records it replaces,
/// back to back) whose first message had id `id`.
pub fn encode_skip_head(run_len: usize, id: u64) -> [u8; SKIP_HEAD_LEN] {
    let mut h = [0u8; SKIP_HEAD_LEN];
    h[0..4].copy_from_slice(&((run_len - RECORD_PREFIX_LEN) as u32).to_le_bytes());
    h[8] = KIND_SKIPPED;
    // flags and queue count stay 0
    h[12..20].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[RECORD_PREFIX_LEN..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// If the fixed body bytes `fixed` (after a prefix with `crc`) start a
/// valid skipped run, its first message id.
pub fn parse_skip(fixed: &[u8], crc: u32) -> Option<u64> {
    let f = fixed.get(..RECORD_FIXED_BODY_LEN)?;
    (f[0] == KIND_SKIPPED && le_u16(f, 2) == Some(0) && crc32c::crc32c(f) == crc)
        .then(|| le_u64(f, 4))
        .flatten()
}

/// Parse a record prefix: returns `(body_len, crc)`.
pub fn parse_prefix(p: &[u8]) -> Result<(usize, u32), RecordError> {
    let len = le_u32(p, 0).ok_or(RecordError::Incomplete)?;
    let crc = le_u32(p, 4).ok_or(RecordError::Incomplete)?;
    let body = len as usize;
    if !(RECORD_FIXED_BODY_LEN + 4..=MAX_RECORD_BODY_LEN).contains(&body) {
        return Err(RecordError::BadLength(len));
    }
    Ok((body, crc))
}

/// Validate a record body against its CRC and return a view of it.
/// `body` must be exactly `body_len` bytes (as returned by [`parse_prefix`]).
pub fn parse_body(body: &[u8], crc: u32) -> Result<RecordView<'_>, RecordError> {
    if crc32c::crc32c(body) != crc {
        return Err(RecordError::BadCrc);
    }
    let kind = *body.first().ok_or(RecordError::Incomplete)?;
    if kind != KIND_MESSAGE {
        return Err(RecordError::BadKind(kind));
    }
    let nq = le_u16(body, 2).ok_or(RecordError::Incomplete)?;
    let id = le_u64(body, 4).ok_or(RecordError::Incomplete)?;
    let n = nq as usize;
    let qend = RECORD_FIXED_BODY_LEN + 4 * n;
    if n == 0 || n > MAX_QUEUES_PER_MESSAGE || qend > body.len() {
        return Err(RecordError::BadQueueCount(nq));
    }
    let queues = body
        .get(RECORD_FIXED_BODY_LEN..qend)
        .ok_or(RecordError::BadQueueCount(nq))?;
    let payload = body.get(qend..).ok_or(RecordError::Incomplete)?;
    Ok(RecordView {
        id,
        queues,
        payload,
        payload_offset: RECORD_PREFIX_LEN + qend,
        total_len: RECORD_PREFIX_LEN + body.len(),
    })
}

/// Decode one record from the start of `buf` (which may hold more bytes).
pub fn decode_record(buf: &[u8]) -> Result<RecordView<'_>, RecordError> {
    let (body_len, crc) = parse_prefix(buf)?;
    let end = RECORD_PREFIX_LEN
        .checked_add(body_len)
        .ok_or(RecordError::BadLength(body_len as u32))?;
    let body = buf
        .get(RECORD_PREFIX_LEN..end)
        .ok_or(RecordError::Incomplete)?;
    parse_body(body, crc)
}

/// Check that a decoded record is the one a [`MsgRef`] names.
pub fn matches_ref(view: &RecordView<'_>, r: &MsgRef) -> bool {
    view.id == r.id && view.total_len == r.len as usize
}

/// Encode an ack entry: "queue `qid` acked the record at `offset`".
pub fn encode_ack(qid: u32, offset: u32) -> [u8; ACK_ENTRY_LEN] {
    let mut e = [0u8; ACK_ENTRY_LEN];
    e[0..4].copy_from_slice(&qid.to_le_bytes());
    e[4..8].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&e[0..8]);
    e[8..12].copy_from_slice(&crc.to_le_bytes());
    e
}

/// Decode an ack entry; `None` if short or the CRC does not match.
pub fn decode_ack(e: &[u8]) -> Option<(u32, u32)> {
    let qid = le_u32(e, 0)?;
    let off = le_u32(e, 4)?;
    let crc = le_u32(e, 8)?;
    (crc32c::crc32c(e.get(0..8)?) == crc).then_some((qid, off))
}

/// Encode the clean-shutdown marker: next id plus the (queue, message id)
/// pairs that were delivered but not acked at shutdown.
pub fn encode_clean_marker(next_id: u64, delivered: &[(u32, u64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CLEAN_FIXED_LEN + CLEAN_ENTRY_LEN * delivered.len() + 4);
    v.extend_from_slice(&CLEAN_MAGIC);
    v.extend_from_slice(&next_id.to_le_bytes());
    v.extend_from_slice(&(delivered.len() as u32).to_le_bytes());
    for (q, id) in delivered {
        v.extend_from_slice(&q.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Decoded clean-shutdown marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanMarker {
    /// Next message id at shutdown.
    pub next_id: u64,
    /// (queue id, message id) delivered but unacked at shutdown.
    pub delivered: Vec<(u32, u64)>,
}

/// Decode and validate the clean-shutdown marker.
pub fn decode_clean_marker(b: &[u8]) -> Result<CleanMarker, &'static str> {
    if b.get(0..8) != Some(&CLEAN_MAGIC[..]) {
        return Err("bad magic");
    }
    let body_len = b.len().checked_sub(4).ok_or("short marker")?;
    let crc = le_u32(b, body_len).ok_or("short marker")?;
    if crc32c::crc32c(b.get(..body_len).ok_or("short marker")?) != crc {
        return Err("CRC mismatch");
    }
    let next_id = le_u64(b, 8).ok_or("short marker")?;
    let count = le_u32(b, 16).ok_or("short marker")? as usize;
    let expect = count
        .checked_mul(CLEAN_ENTRY_LEN)
        .and_then(|n| n.checked_add(CLEAN_FIXED_LEN))
        .ok_or("bad count")?;
    if expect != body_len {
        return Err("length does not match entry count");
    }
    let entries = b.get(CLEAN_FIXED_LEN..body_len).ok_or("short marker")?;
    let delivered = entries
        .chunks_exact(CLEAN_ENTRY_LEN)
        .filter_map(|c| Some((le_u32(c, 0)?, le_u64(c, 4)?)))
        .collect();
    Ok(CleanMarker { next_id, delivered })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = encode_segment_header(7, 42);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                segment: 7,
                first_id: 42
            })
        );
        let mut bad = h;
        bad[13] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
        assert!(decode_segment_header(&h[..31]).is_err());
    }

    #[test]
    fn skip_head_round_trip_and_damage() -> Result<(), RecordError> {
        let mut run = Vec::new();
        encode_record(&mut run, 7, &[1u32], b"first");
        encode_record(&mut run, 8, &[1u32], b"second");
        let h = encode_skip_head(run.len(), 7);
        let (body_len, crc) = parse_prefix(&h)?;
        assert_eq!(RECORD_PREFIX_LEN + body_len, run.len());
        assert_eq!(parse_skip(&h[RECORD_PREFIX_LEN..], crc), Some(7));
        // A skipped head is not a message, and a message is not a skipped run.
        assert!(matches!(
            decode_record(&[&h[..], &run[SKIP_HEAD_LEN..]].concat()),
            Err(RecordError::BadCrc)
        ));
        let (_, msg_crc) = parse_prefix(&run)?;
        assert_eq!(parse_skip(&run[RECORD_PREFIX_LEN..], msg_crc), None);
        let mut bad = h;
        bad[15] ^= 1;
        assert_eq!(parse_skip(&bad[RECORD_PREFIX_LEN..], crc), None);
        Ok(())
    }

    #[test]
    fn ack_round_trip_and_damage() {
        let e = encode_ack(3, 1000);
        assert_eq!(decode_ack(&e), Some((3, 1000)));
        let mut bad = e;
        bad[5] ^= 0x80;
        assert_eq!(decode_ack(&bad), None);
        assert_eq!(decode_ack(&e[..11]), None);
    }

    #[test]
    fn clean_marker_round_trip() {
        let m = encode_clean_marker(99, &[(1, 5), (2, 7)]);
        let d = decode_clean_marker(&m);
        assert_eq!(
            d,
            Ok(CleanMarker {
                next_id: 99,
                delivered: vec![(1, 5), (2, 7)]
            })
        );
        let mut bad = m.clone();
        bad[10] ^= 1;
        assert!(decode_clean_marker(&bad).is_err());
        assert!(decode_clean_marker(&m[..m.len() - 1]).is_err());
    }

    #[test]
    fn zeroed_bytes_are_not_a_record() {
        assert_eq!(
            decode_record(&[0u8; 64]).err(),
            Some(RecordError::BadLength(0))
        );
    }

    proptest! {
        #[test]
        fn record_round_trip(id in any::<u64>(),
                             queues in proptest::collection::vec(any::<u32>(), 1..20),
                             payload in proptest::collection::vec(any::<u8>(), 0..2000),
                             junk in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut buf = Vec::new();
            encode_record(&mut buf, id, &queues, &payload);
            prop_assert_eq!(buf.len(), record_len(queues.len(), payload.len()));
            let rec_len = buf.len();
            buf.extend_from_slice(&junk);
            let v = decode_record(&buf).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(v.id, id);
            prop_assert_eq!(v.queues().collect::<Vec<_>>(), queues);
            prop_assert_eq!(v.payload, &payload[..]);
            prop_assert_eq!(v.total_len, rec_len);
            prop_assert_eq!(&buf[v.payload_offset..v.payload_offset + payload.len()], &payload[..]);
        }

        #[test]
        fn any_single_bit_flip_or_truncation_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            bit in any::<usize>(),
            cut in any::<usize>()) {
            let mut buf = Vec::new();
            encode_record(&mut buf, 9, &[1u32, 2], &payload);
            let mut flipped = buf.clone();
            let b = bit % (flipped.len() * 8);
            flipped[b / 8] ^= 1 << (b % 8);
            prop_assert!(decode_record(&flipped).is_err());
            let c = cut % buf.len();
            prop_assert!(decode_record(&buf[..c]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&bytes);
            let _ = decode_segment_header(&bytes);
            let _ = decode_ack(&bytes);
            let _ = decode_clean_marker(&bytes);
        }
    }
}
