//! A chunk of the write buffer: records bound for one contiguous range of a
//! segment file, waiting for the sync thread.
//!
//! Owns: the two shapes a chunk takes and what can happen to its records
//! before they are written: lookup for reads, skipping (acked before being
//! written), and encoding with runs of skipped records as skipped-run heads.
//! - **Encoded**: the records' bytes as they will be on disk (every record
//!   somebody waits on, lazy records listing several queues, and the segment
//!   header). Written as they are.
//! - **Deferred**: lazy single-queue records kept as their payload's head and a
//!   reference to the message body, encoded by the sync thread only if they are
//!   still live when written, so the publishing connection neither copies nor
//!   checksums them, and a skipped one frees its memory at once.
//!
//! Does not own: placement and accounting (`log.rs`) or writing (`writer.rs`).

use std::time::Instant;

use bytes::Bytes;

use crate::handle::MsgRef;
use crate::record::{encode_record_parts, encode_skip_head};

/// A lazy record kept unencoded until the sync thread writes it.
#[derive(Debug, Clone)]
pub(crate) struct Deferred {
    /// Offset of the record from the chunk's start.
    pub rel: u32,
    /// Record length on disk.
    pub len: u32,
    pub id: u64,
    pub queue: u32,
    /// The payload's first part: a range of the chunk's `heads`.
    pub head: (u32, u32),
    /// The rest of the payload; dropped once the record is skipped.
    pub body: Bytes,
    pub skipped: bool,
}

/// Where a record found in the write buffer lives.
pub(crate) enum Found<'a> {
    /// The record's encoded bytes (CRC to be checked by the reader).
    Encoded(&'a [u8]),
    /// A deferred record's payload.
    Payload(Bytes),
}

/// A run of contiguous records destined for one segment file.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub seg: u32,
    pub offset: u32,
    /// Encoded bytes (empty for a deferred chunk).
    pub data: Vec<u8>,
    /// Deferred records, in offset order (only in a deferred chunk).
    pub deferred: Vec<Deferred>,
    /// Payload heads of the deferred records, back to back.
    pub heads: Vec<u8>,
    /// True for a chunk of deferred records.
    pub is_deferred: bool,
    /// Bytes the chunk covers in the file.
    pub span: usize,
    /// Bytes it holds for the write-buffer accounting: its records, less
    /// the deferred ones already skipped.
    pub mem: usize,
    /// First and last message id inside (0 = none, e.g. a header chunk).
    pub first_id: u64,
    pub last_id: u64,
    /// Holds a record somebody waits on (a confirm): written in the next round.
    pub urgent: bool,
    /// When the chunk was started; lazy chunks are written once this is
    /// `lazy_write_delay` old.
    pub opened: Instant,
}

impl Chunk {
    /// An encoded chunk starting with `data`.
    pub(crate) fn new(seg: u32, offset: u32, data: Vec<u8>, urgent: bool) -> Chunk {
        let len = data.len();
        Chunk {
            seg,
            offset,
            data,
            deferred: Vec::new(),
            heads: Vec::new(),
            is_deferred: false,
            span: len,
            mem: len,
            first_id: 0,
            last_id: 0,
            urgent,
            opened: Instant::now(),
        }
    }

    /// An empty chunk of deferred records.
    pub(crate) fn new_deferred(seg: u32, offset: u32) -> Chunk {
        Chunk {
            is_deferred: true,
            ..Chunk::new(seg, offset, Vec::new(), false)
        }
    }

    /// Whether `r` starts inside this chunk.
    pub(crate) fn holds(&self, r: &MsgRef) -> bool {
        self.seg == r.segment
            && r.offset >= self.offset
            && ((r.offset - self.offset) as usize) < self.span
    }

    fn deferred_ix(&self, r: &MsgRef) -> Option<usize> {
        if !self.holds(r) {
            return None;
        }
        let rel = r.offset - self.offset;
        let ix = self.deferred.binary_search_by_key(&rel, |d| d.rel).ok()?;
        let d = &self.deferred[ix];
        (d.id == r.id && d.len == r.len).then_some(ix)
    }

    /// The record `r`, if it is in this chunk.
    pub(crate) fn find(&self, r: &MsgRef) -> Option<Found<'_>> {
        if self.is_deferred {
            let d = &self.deferred[self.deferred_ix(r)?];
            if d.skipped {
                return None;
            }
            let head = &self.heads[d.head.0 as usize..(d.head.0 + d.head.1) as usize];
            return Some(Found::Payload(if head.is_empty() {
                d.body.clone()
            } else {
                Bytes::from([head, &d.body[..]].concat())
            }));
        }
        if !self.holds(r) {
            return None;
        }
        let start = (r.offset - self.offset) as usize;
        let end = start.checked_add(r.len as usize)?;
        self.data.get(start..end).map(Found::Encoded)
    }

    /// Mark the deferred record `r` skipped if it is in this chunk and lists
    /// queue `q`. Returns the bytes it stops holding, or `None` if it did not
    /// skip it (encoded records are written as they are).
    pub(crate) fn skip(&mut self, q: u32, r: &MsgRef) -> Option<usize> {
        let ix = self.deferred_ix(r)?;
        let d = &mut self.deferred[ix];
        if d.skipped || d.queue != q {
            return None;
        }
        d.skipped = true;
        d.body = Bytes::new();
        let freed = d.len as usize;
        self.mem -= freed;
        Some(freed)
    }

    /// For a deferred chunk: encode what must reach the file into `out` (the
    /// live records, and one head per run of skipped ones) and list it as
    /// `(offset in the segment file, range of out)` pieces; a piece ends after
    /// each head, where the run's hole begins.
    pub(crate) fn encode_deferred(&self, out: &mut Vec<u8>, pieces: &mut Vec<(u64, usize, usize)>) {
        out.clear();
        pieces.clear();
        let base = u64::from(self.offset);
        let mut open: Option<(u64, usize)> = None; // file offset and out index of the piece
        let mut i = 0;
        while i < self.deferred.len() {
            let d = &self.deferred[i];
            let at = base + u64::from(d.rel);
            let start = *open.get_or_insert((at, out.len()));
            if !d.skipped {
                let head = &self.heads[d.head.0 as usize..(d.head.0 + d.head.1) as usize];
                encode_record_parts(out, d.id, &[d.queue], &[head, &d.body[..]]);
                i += 1;
                continue;
            }
            let mut j = i;
            while j < self.deferred.len() && self.deferred[j].skipped {
                j += 1;
            }
            let last = &self.deferred[j - 1];
            let run_len = (last.rel + last.len - d.rel) as usize;
            out.extend_from_slice(&encode_skip_head(run_len, d.id));
            pieces.push((start.0, start.1, out.len()));
            open = None;
            i = j;
        }
        if let Some((at, from)) = open {
            pieces.push((at, from, out.len()));
        }
    }

    /// Whether the file must be extended past the last written byte to cover
    /// this chunk (it ends in a skipped run).
    pub(crate) fn ends_in_hole(&self) -> bool {
        self.deferred.last().is_some_and(|d| d.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode_record, parse_prefix, parse_skip, RECORD_PREFIX_LEN};

    fn deferred_chunk(n: u32) -> (Chunk, Vec<MsgRef>) {
        let mut c = Chunk::new_deferred(3, 100);
        let mut refs = Vec::new();
        for i in 0..n {
            let head = vec![i as u8; (i % 3) as usize];
            let body = Bytes::from(vec![0xA0 + i as u8; 10 + i as usize]);
            let len = (RECORD_PREFIX_LEN + 12 + 4 + head.len() + body.len()) as u32;
            let rel = c.span as u32;
            c.deferred.push(Deferred {
                rel,
                len,
                id: 10 + u64::from(i),
                queue: 7,
                head: (c.heads.len() as u32, head.len() as u32),
                body,
                skipped: false,
            });
            c.heads.extend_from_slice(&head);
            c.span += len as usize;
            c.mem += len as usize;
            refs.push(MsgRef {
                id: 10 + u64::from(i),
                segment: 3,
                offset: 100 + rel,
                len,
            });
        }
        (c, refs)
    }

    #[test]
    fn deferred_records_are_found_skipped_and_encoded_around_holes() {
        let (mut c, refs) = deferred_chunk(6);
        match c.find(&refs[2]) {
            Some(Found::Payload(p)) => {
                assert_eq!(&p[..2], &[2, 2]);
                assert_eq!(p.len(), 2 + 12);
            }
            _ => panic!("record 2 not found"),
        }
        assert_eq!(
            c.skip(8, &refs[1]),
            None,
            "another queue's ack skips nothing"
        );
        let mem = c.mem;
        for i in [1usize, 2, 5] {
            assert_eq!(c.skip(7, &refs[i]), Some(refs[i].len as usize));
        }
        assert_eq!(c.skip(7, &refs[1]), None, "skipped once");
        assert_eq!(
            c.mem,
            mem - (refs[1].len + refs[2].len + refs[5].len) as usize
        );
        assert!(c.find(&refs[1]).is_none());
        assert!(c.ends_in_hole());
        let (mut out, mut pieces) = (Vec::new(), Vec::new());
        c.encode_deferred(&mut out, &mut pieces);
        // [0, head of run 1-2] then [3, 4, head of run 5]
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].0, 100);
        assert_eq!(pieces[1].0, u64::from(refs[3].offset));
        let first = &out[pieces[0].1..pieces[0].2];
        let v = decode_record(first).expect("record 0");
        assert_eq!(v.id, 10);
        let run = &first[v.total_len..];
        let (body_len, crc) = parse_prefix(run).expect("run head");
        assert_eq!(parse_skip(&run[RECORD_PREFIX_LEN..], crc), Some(11));
        assert_eq!(
            RECORD_PREFIX_LEN + body_len,
            (refs[1].len + refs[2].len) as usize
        );
        let second = &out[pieces[1].1..pieces[1].2];
        let v3 = decode_record(second).expect("record 3");
        assert_eq!(v3.id, 13);
        assert_eq!(v3.payload, &[0xA3u8; 13][..]);
    }
}
