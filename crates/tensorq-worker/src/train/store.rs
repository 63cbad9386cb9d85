//! The durable example log: the training worker's on-disk training set.
//!
//! Owns `<out>/dataset.jsonl` (training examples) and `<out>/eval.jsonl` (held-out examples):
//! one JSON object per line, `{"k":"<key>","features":[...],"label":0|1}`, appended in batches and
//! fsync'd before the messages they came from are acked. On start the logs are read back; a torn
//! last line (a crash mid-append, whose messages were therefore never acked and will be
//! redelivered) is dropped and truncated away. `k` identifies the source message (its AMQP
//! `message_id`, else a hash of its body, plus the row index inside a batched message) so that
//! a redelivered message whose rows were already made durable is not stored twice.
//! It does not own decoding, AMQP or training.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tensorq_train::Dataset;

/// One stored line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Source key (message id or body hash, `#row` for batched messages).
    pub k: String,
    /// Features.
    pub features: Vec<f32>,
    /// 0 or 1.
    pub label: u8,
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on the log failed.
    #[error("dataset log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A complete line was not a valid record for this model.
    #[error("dataset log {path} line {line}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// An append-only, fsync'd example log plus its in-memory copy.
#[derive(Debug)]
pub struct ExampleLog {
    path: PathBuf,
    file: File,
    keys: HashSet<String>,
    data: Dataset,
}

impl ExampleLog {
    /// Opens (creating if needed) the log at `path` for `inputs`-wide examples and loads it.
    pub fn open(path: &Path, inputs: usize) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut data = Dataset::new(inputs);
        let mut keys = HashSet::new();
        let mut good_len: u64 = 0;
        if path.exists() {
            let total = std::fs::metadata(path).map_err(io)?.len();
            let reader = BufReader::new(File::open(path).map_err(io)?);
            for (index, chunk) in reader.split(b'\n').enumerate() {
                let line_no = index + 1;
                let bytes = chunk.map_err(io)?;
                let complete_len = bytes.len() as u64 + 1;
                let is_last_unterminated = good_len + complete_len > total;
                if is_last_unterminated {
                    // Torn tail from a crash mid-append: never acked, will be redelivered.
                    break;
                }
                let rec: Record =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.display().to_string(),
                        line: line_no,
                        reason: e.to_string(),
                    })?;
                data.push(&rec.features, f64::from(rec.label))
                    .map_err(|e| StoreError::Corrupt {
                        path: path.display().to_string(),
                        line: line_no,
                        reason: e.to_string(),
                    })?;
                keys.insert(rec.k);
                good_len += complete_len;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() != good_len {
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(ExampleLog {
            path: path.to_path_buf(),
            file,
            keys,
            data,
        })
    }

    /// True when a record with this key is already durable.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Appends records and fsyncs; only after this returns may their messages be acked.
    pub fn append_durable(&mut self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let io = |source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut buf = Vec::with_capacity(records.len() * 128);
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| io(std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        for r in records {
            // Records were validated by the decoder; a failure here is a programming error
            // surfaced as corruption rather than a panic.
            self.data
                .push(&r.features, f64::from(r.label))
                .map_err(|e| StoreError::Corrupt {
                    path: self.path.display().to_string(),
                    line: self.data.len() + 1,
                    reason: e.to_string(),
                })?;
            self.keys.insert(r.k.clone());
        }
        Ok(())
    }

    /// Every durable example.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// FNV-1a 64-bit hash, used for body keys and the eval split.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, x: f32, label: u8) -> Record {
        Record {
            k: k.into(),
            features: vec![x, -x],
            label,
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tq-store-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reopen_sees_appended_records() {
        let d = tmpdir("reopen");
        let p = d.join("dataset.jsonl");
        let mut log = ExampleLog::open(&p, 2).unwrap();
        log.append_durable(&[rec("a", 1.0, 1), rec("b", 2.0, 0)])
            .unwrap();
        drop(log);
        let log = ExampleLog::open(&p, 2).unwrap();
        assert_eq!(log.data().len(), 2);
        assert!(log.contains("a") && log.contains("b") && !log.contains("c"));
        assert_eq!(log.data().labels(), &[1.0, 0.0]);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn torn_tail_is_dropped_and_truncated() {
        let d = tmpdir("torn");
        let p = d.join("dataset.jsonl");
        let mut log = ExampleLog::open(&p, 2).unwrap();
        log.append_durable(&[rec("a", 1.0, 1)]).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"k":"b","features":[2.0,"#).unwrap();
        drop(f);
        let mut log = ExampleLog::open(&p, 2).unwrap();
        assert_eq!(log.data().len(), 1);
        log.append_durable(&[rec("c", 3.0, 0)]).unwrap();
        drop(log);
        let log = ExampleLog::open(&p, 2).unwrap();
        assert_eq!(log.data().len(), 2);
        assert!(log.contains("c"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn corrupt_complete_line_is_an_error() {
        let d = tmpdir("corrupt");
        let p = d.join("dataset.jsonl");
        std::fs::write(&p, "garbage\n").unwrap();
        assert!(matches!(
            ExampleLog::open(&p, 2),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
        std::fs::write(&p, "{\"k\":\"a\",\"features\":[1.0],\"label\":1}\n").unwrap();
        assert!(matches!(
            ExampleLog::open(&p, 2),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
