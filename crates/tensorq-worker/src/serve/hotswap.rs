//! Hot model swap: the slot holding the current model, and a poller that watches a checkpoint
//! file or directory and swaps a newly written model in.
//!
//! Owns model resolution (a file, or the newest `*.onnx` in a directory), version numbering (a
//! generation counter: "1" for the model served at start, then "2", "3", …) and the swap.
//! In-flight batches are never disturbed: each batch takes an `Arc` of the model when it starts
//! and keeps it to the end, while the slot already hands the new one to the next batch. A
//! checkpoint is loaded only once its size and mtime have been seen unchanged on two consecutive
//! polls (so a file still being written is not read); one that fails to load is logged and
//! skipped, and the old model keeps serving. Does not own inference or queues.

use crate::serve::metrics::Metrics;
use crate::serve::ServeError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tensorq_ml::OnnxModel;

/// File extension of checkpoints looked for in a watched directory.
pub const CHECKPOINT_EXTENSION: &str = "onnx";

/// Identity of a checkpoint on disk: path, mtime and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub modified: SystemTime,
    pub len: u64,
}

/// Finds the checkpoint `path` names: the file itself, or the newest `*.onnx` in a directory.
pub fn resolve(path: &Path) -> Result<Checkpoint, ServeError> {
    let io = |e: std::io::Error| ServeError::ModelPath {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(Checkpoint {
            path: path.to_path_buf(),
            modified: meta.modified().map_err(io)?,
            len: meta.len(),
        });
    }
    let mut best: Option<Checkpoint> = None;
    for entry in std::fs::read_dir(path).map_err(io)? {
        let Ok(entry) = entry else { continue };
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some(CHECKPOINT_EXTENSION) {
            continue;
        }
        let Ok(m) = entry.metadata() else { continue };
        let Ok(modified) = m.modified() else { continue };
        if !m.is_file() {
            continue;
        }
        let newer = best
            .as_ref()
            .is_none_or(|b| (modified, &p) > (b.modified, &b.path));
        if newer {
            best = Some(Checkpoint {
                path: p,
                modified,
                len: m.len(),
            });
        }
    }
    best.ok_or_else(|| ServeError::ModelPath {
        path: path.display().to_string(),
        reason: format!("directory holds no *.{CHECKPOINT_EXTENSION} file"),
    })
}

/// The model currently served, swappable while batches run.
#[derive(Debug)]
pub struct ModelSlot {
    current: RwLock<Arc<OnnxModel>>,
    loaded_from: RwLock<Option<Checkpoint>>,
    generation: std::sync::atomic::AtomicU64,
}

impl ModelSlot {
    /// A slot serving `model` as generation 1 (its own version string is kept as given).
    pub fn new(model: OnnxModel, loaded_from: Option<Checkpoint>) -> ModelSlot {
        ModelSlot {
            current: RwLock::new(Arc::new(model)),
            loaded_from: RwLock::new(loaded_from),
            generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The model to use for the next batch.
    pub fn current(&self) -> Arc<OnnxModel> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Next version string to give a swapped-in model.
    pub fn next_version(&self) -> String {
        (self.generation.load(std::sync::atomic::Ordering::SeqCst) + 1).to_string()
    }

    /// Replaces the served model; batches already running keep the old one.
    pub fn swap(&self, model: OnnxModel, from: Option<Checkpoint>) {
        let model = Arc::new(model);
        match self.current.write() {
            Ok(mut g) => *g = model,
            Err(poisoned) => *poisoned.into_inner() = model,
        }
        match self.loaded_from.write() {
            Ok(mut g) => *g = from,
            Err(poisoned) => *poisoned.into_inner() = from,
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn loaded_from(&self) -> Option<Checkpoint> {
        match self.loaded_from.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Polls `watch` every `interval` and swaps in new checkpoints until aborted.
pub fn spawn_watcher(
    watch: PathBuf,
    interval: Duration,
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        let mut pending: Option<Checkpoint> = None;
        let mut rejected: Option<Checkpoint> = None;
        loop {
            tick.tick().await;
            let found = match resolve(&watch) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "model watch: nothing to load");
                    continue;
                }
            };
            if slot.loaded_from().as_ref() == Some(&found) || rejected.as_ref() == Some(&found) {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&found) {
                // First sighting: wait one more poll for the write to settle.
                pending = Some(found);
                continue;
            }
            pending = None;
            let name = slot.current().name().to_string();
            let version = slot.next_version();
            let path = found.path.clone();
            let loaded =
                tokio::task::spawn_blocking(move || OnnxModel::load(&path, name, version)).await;
            match loaded {
                Ok(Ok(model)) => {
                    tracing::info!(path = %found.path.display(), version = model.version(), "model swapped in");
                    slot.swap(model, Some(found));
                    metrics.swapped();
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "new checkpoint rejected; still serving the previous model");
                    rejected = Some(found);
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint loader crashed; still serving the previous model");
                    rejected = Some(found);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_picks_newest_onnx_in_directory() {
        let dir = std::env::temp_dir().join(format!("tensorq-hotswap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.onnx"), b"a").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.join("b.onnx"), b"bb").unwrap();
        let c = resolve(&dir).unwrap();
        assert_eq!(c.path.file_name().unwrap(), "b.onnx");
        assert_eq!(c.len, 2);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(matches!(resolve(&empty), Err(ServeError::ModelPath { .. })));
        assert!(resolve(&dir.join("missing.onnx")).is_err());
    }
}
