//! Checkpoints: the trained weights, the spec and the training history in one JSON file.
//!
//! Owns the format and its validation. The file is JSON (UTF-8):
//!
//! ```json
//! { "format": "tensorq-train-checkpoint", "version": 1,
//!   "spec": { ...the ModelSpec... },
//!   "layers": [ { "inputs": 8, "units": 10, "activation": "relu",
//!                 "weight": [80 f32, row-major inputs x units], "bias": [10 f32] }, ... ],
//!   "examples_seen": 8000, "history": [ { "epoch": 1, "loss": 0.4, ... }, ... ] }
//! ```
//!
//! f32 values are written in shortest round-trip form, so loading gives bit-identical weights.
//! Writes are atomic (`atomic.rs`). Optimiser state is not saved: a resumed trainer restarts Adam's
//! moments. It does not own the model (`model.rs`) or exports (`onnx_export.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::model::{check_weights, DenseWeights, ModelError};
use crate::spec::ModelSpec;
use crate::trainer::EpochStats;

/// The `format` field's value.
pub const CHECKPOINT_FORMAT: &str = "tensorq-train-checkpoint";
/// The current (and only) format version.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File I/O failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Not valid JSON for this format.
    #[error("checkpoint {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Unknown format name or version.
    #[error("checkpoint {path} has format {format:?} version {version}; expected {CHECKPOINT_FORMAT:?} version {CHECKPOINT_VERSION}")]
    Version {
        /// The file.
        path: String,
        /// Its format field.
        format: String,
        /// Its version field.
        version: u32,
    },
    /// The weights do not fit the spec.
    #[error("checkpoint {path}: {source}")]
    Weights {
        /// The file.
        path: String,
        /// The mismatch.
        source: ModelError,
    },
}

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// Always [`CHECKPOINT_VERSION`] when written by this crate.
    pub version: u32,
    /// The spec the weights belong to.
    pub spec: ModelSpec,
    /// Per-layer weights.
    pub layers: Vec<DenseWeights>,
    /// Training examples the model was trained on (informational).
    pub examples_seen: u64,
    /// Epoch history (for the training curve).
    pub history: Vec<EpochStats>,
}

impl Checkpoint {
    /// A checkpoint of the current format.
    pub fn new(
        spec: ModelSpec,
        layers: Vec<DenseWeights>,
        examples_seen: u64,
        history: Vec<EpochStats>,
    ) -> Self {
        Checkpoint {
            format: CHECKPOINT_FORMAT.to_string(),
            version: CHECKPOINT_VERSION,
            spec,
            layers,
            examples_seen,
            history,
        }
    }

    /// Writes atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(self).map_err(|e| CheckpointError::Malformed {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        write_atomic(path, &bytes).map_err(|source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads and validates a checkpoint.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: p.clone(),
            source,
        })?;
        let ck: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Malformed {
                path: p.clone(),
                reason: e.to_string(),
            })?;
        if ck.format != CHECKPOINT_FORMAT || ck.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                path: p,
                format: ck.format,
                version: ck.version,
            });
        }
        ck.spec.validate().map_err(|e| CheckpointError::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        check_weights(&ck.spec, &ck.layers)
            .map_err(|source| CheckpointError::Weights { path: p, source })?;
        Ok(ck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::generate;
    use crate::trainer::Trainer;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tq-ck-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("model.ckpt.json")
    }

    #[test]
    fn round_trip_gives_identical_predictions() {
        let spec = ModelSpec::seed_mlp();
        let data = generate(1000, 11);
        let mut t = Trainer::new(spec.clone());
        t.fit(&data, 2, 32, |_| {}).unwrap();
        let path = tmp("rt");
        Checkpoint::new(spec, t.weights().unwrap(), 1000, t.history().to_vec())
            .save(&path)
            .unwrap();
        let ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.layers, t.weights().unwrap());
        assert_eq!(ck.history.len(), 2);
        let t2 = Trainer::from_weights(ck.spec, &ck.layers, ck.history).unwrap();
        let rows = data.features();
        let a = t.predict(rows).unwrap();
        let b = t2.predict(rows).unwrap();
        assert_eq!(a, b, "predictions must be bit-identical");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn rejects_bad_version_truncation_and_shape() {
        let spec = ModelSpec::seed_mlp();
        let t = Trainer::new(spec.clone());
        let path = tmp("bad");
        let mut ck = Checkpoint::new(spec.clone(), t.weights().unwrap(), 0, vec![]);
        ck.version = 99;
        ck.save(&path).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Version { .. })
        ));

        let good = Checkpoint::new(spec.clone(), t.weights().unwrap(), 0, vec![]);
        good.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Malformed { .. })
        ));

        let mut short = good.clone();
        short.layers[0].weight.truncate(3);
        short.save(&path).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Weights { .. })
        ));
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
