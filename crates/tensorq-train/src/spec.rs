//! Model spec files: the TOML description of a Keras-style MLP and its training settings.
//!
//! Owns parsing (`#[serde(deny_unknown_fields)]`, so a misspelt key is an error naming it) and
//! semantic validation (each bad value is reported with the key it came from). It does not own
//! the model itself (`model.rs`) nor the training loop (`trainer.rs`).
//!
//! Format (see `examples/specs/seed_mlp.toml`):
//!
//! ```toml
//! inputs = 8                    # features per example
//! loss = "binary_crossentropy"  # or "mean_squared_error"
//! optimizer = "adam"            # or "sgd"
//! lr = 0.001
//! epochs = 10
//! batch_size = 32
//! seed = 42                     # optional, default 0: weight init and shuffling
//!
//! [[layers]]
//! units = 10
//! activation = "relu"           # relu | sigmoid | tanh | linear
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Largest layer width accepted; keeps a typo (`units = 1000000000`) from exhausting memory.
pub const MAX_UNITS: usize = 65_536;
/// Largest batch size accepted.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Largest number of epochs accepted.
pub const MAX_EPOCHS: usize = 100_000;

/// Errors from reading or validating a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read spec {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML did not parse, or had unknown keys or bad variants (the message names them).
    #[error("invalid spec: {0}")]
    Parse(String),
    /// A key had a value outside its allowed range.
    #[error("invalid spec value for `{field}`: {reason}")]
    Invalid {
        /// The offending key (`layers[1].units`, `lr`, ...).
        field: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// A layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Identity.
    Linear,
}

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Binary cross-entropy, computed from logits (needs a sigmoid output layer of one unit).
    BinaryCrossentropy,
    /// Mean squared error between the output and the 0/1 label.
    MeanSquaredError,
}

/// Optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam with Keras' defaults (beta1 0.9, beta2 0.999, epsilon 1e-7).
    Adam,
    /// Plain stochastic gradient descent.
    Sgd,
}

/// One dense layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Output width.
    pub units: usize,
    /// Activation applied after the affine map.
    pub activation: Activation,
}

/// A whole model + training spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Number of input features.
    pub inputs: usize,
    /// Dense layers, input side first.
    pub layers: Vec<LayerSpec>,
    /// Loss function.
    pub loss: Loss,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Epochs per `fit`.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed for weight init and shuffling.
    #[serde(default)]
    pub seed: u64,
}

impl ModelSpec {
    /// The source document's model: Dense(10, relu) -> Dense(1, sigmoid) on 8 features, Adam
    /// 1e-3, binary cross-entropy, 10 epochs at batch 32.
    pub fn seed_mlp() -> Self {
        ModelSpec {
            inputs: 8,
            layers: vec![
                LayerSpec {
                    units: 10,
                    activation: Activation::Relu,
                },
                LayerSpec {
                    units: 1,
                    activation: Activation::Sigmoid,
                },
            ],
            loss: Loss::BinaryCrossentropy,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            epochs: 10,
            batch_size: 32,
            seed: 42,
        }
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, SpecError> {
        let spec: ModelSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads, parses and validates a spec file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Serialises to TOML (used for checkpoints' human-readable copy).
    pub fn to_toml_string(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Parse(e.to_string()))
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field: &str, reason: String| SpecError::Invalid {
            field: field.to_string(),
            reason,
        };
        if self.inputs == 0 || self.inputs > MAX_UNITS {
            return Err(invalid(
                "inputs",
                format!("must be in 1..={MAX_UNITS}, got {}", self.inputs),
            ));
        }
        if self.layers.is_empty() {
            return Err(invalid("layers", "at least one layer is required".into()));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if layer.units == 0 || layer.units > MAX_UNITS {
                return Err(invalid(
                    &format!("layers[{i}].units"),
                    format!("must be in 1..={MAX_UNITS}, got {}", layer.units),
                ));
            }
        }
        let last_index = self.layers.len() - 1;
        if let Some(last) = self.layers.last() {
            if last.units != 1 {
                return Err(invalid(
                    &format!("layers[{last_index}].units"),
                    format!(
                        "the output layer must have 1 unit (binary label), got {}",
                        last.units
                    ),
                ));
            }
            if self.loss == Loss::BinaryCrossentropy && last.activation != Activation::Sigmoid {
                return Err(invalid(
                    &format!("layers[{last_index}].activation"),
                    format!(
                        "loss \"binary_crossentropy\" needs a \"sigmoid\" output layer, got {:?}",
                        last.activation
                    )
                    .to_lowercase(),
                ));
            }
        }
        if !self.lr.is_finite() || self.lr <= 0.0 || self.lr > 10.0 {
            return Err(invalid(
                "lr",
                format!("must be a finite number in (0, 10], got {}", self.lr),
            ));
        }
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(invalid(
                "epochs",
                format!("must be in 1..={MAX_EPOCHS}, got {}", self.epochs),
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(invalid(
                "batch_size",
                format!("must be in 1..={MAX_BATCH_SIZE}, got {}", self.batch_size),
            ));
        }
        Ok(())
    }

    /// Input width of layer `i` (the previous layer's units, or `inputs` for the first).
    pub fn layer_inputs(&self, i: usize) -> usize {
        if i == 0 {
            self.inputs
        } else {
            self.layers.get(i - 1).map_or(self.inputs, |l| l.units)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../examples/specs/seed_mlp.toml");

    #[test]
    fn committed_seed_spec_is_the_source_model() {
        let spec = ModelSpec::from_toml_str(SEED).unwrap();
        assert_eq!(spec, ModelSpec::seed_mlp());
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let text = format!("{SEED}\nlearning_rate = 0.1\n");
        let err = ModelSpec::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("learning_rate"), "{err}");
    }

    #[test]
    fn unknown_layer_key_is_named() {
        let text = SEED.replace("units = 10", "units = 10\ndropout = 0.5");
        let err = ModelSpec::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("dropout"), "{err}");
    }

    #[test]
    fn unknown_activation_is_named() {
        let text = SEED.replace("\"relu\"", "\"gelu\"");
        let err = ModelSpec::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("gelu"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("lr = 0.001", "lr = -1.0", "lr"),
            ("epochs = 10", "epochs = 0", "epochs"),
            ("batch_size = 32", "batch_size = 0", "batch_size"),
            ("inputs = 8", "inputs = 0", "inputs"),
            ("units = 10", "units = 0", "layers[0].units"),
            ("units = 1\n", "units = 2\n", "layers[1].units"),
            (
                "activation = \"sigmoid\"",
                "activation = \"relu\"",
                "layers[1].activation",
            ),
        ];
        for (from, to, key) in cases {
            let text = SEED.replace(from, to);
            assert_ne!(text, SEED, "replacement {from} not applied");
            match ModelSpec::from_toml_str(&text) {
                Err(SpecError::Invalid { field, .. }) => assert_eq!(field, key),
                other => panic!("{to}: expected Invalid({key}), got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_key_is_named() {
        let text = SEED.replace("batch_size = 32", "");
        let err = ModelSpec::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("batch_size"), "{err}");
    }

    #[test]
    fn toml_round_trip() {
        let spec = ModelSpec::seed_mlp();
        let text = spec.to_toml_string().unwrap();
        assert_eq!(ModelSpec::from_toml_str(&text).unwrap(), spec);
    }
}
