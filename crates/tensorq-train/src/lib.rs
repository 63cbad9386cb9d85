//! tensorq-train: Keras-style training of small MLPs in Rust with burn (NdArray + autodiff).
//!
//! Owns the model spec format (`spec`), the MLP (`model`), the training loop (`trainer`), the
//! seeded dataset generator (`dataset`), checkpoints (`checkpoint`), ONNX export for the tract
//! serving path (`onnx_export`) and the training-curve picture (`curve`). It does not own any
//! AMQP plumbing (the training worker in `tensorq-worker` does) nor serving.
//!
//! The source document's Keras program maps to:
//!
//! ```no_run
//! use tensorq_train::{dataset::generate, spec::ModelSpec, trainer::Trainer};
//! let spec = ModelSpec::seed_mlp(); // Dense(10, relu) -> Dense(1, sigmoid), adam, BCE
//! let (train, test) = generate(10_000, 1).split_tail(0.2);
//! let mut t = Trainer::new(spec.clone());
//! t.fit(&train, spec.epochs, spec.batch_size, |_| {}).unwrap();
//! println!("{}", t.evaluate(&test).unwrap()); // loss: 0.0xxx - accuracy: 0.9xxx
//! ```

pub mod atomic;
pub mod backend;
pub mod checkpoint;
pub mod curve;
pub mod dataset;
pub mod model;
pub mod onnx_export;
pub mod rng;
pub mod spec;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use dataset::{generate, Dataset, DatasetError};
pub use model::{DenseWeights, Mlp, ModelError};
pub use onnx_export::{export_onnx, publish_onnx, ExportError};
pub use spec::{ModelSpec, SpecError};
pub use trainer::{EpochStats, EvalResult, FitEvent, TrainError, Trainer};
