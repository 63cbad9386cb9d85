//! The training loop: Keras-style `fit` / `evaluate` for an [`Mlp`] on a [`Dataset`].
//!
//! Owns mini-batching with per-epoch shuffling (seeded: `spec.seed` and the epoch number), the
//! losses (binary cross-entropy computed from logits, which is numerically stable for large
//! |logit|, or mean squared error), the optimiser (Adam with Keras' defaults or SGD) and the
//! accuracy metric (output > 0.5 compared with the 0/1 label). Reports progress through a
//! callback so callers can drive a progress bar. It does not own data sources, files or the
//! progress bar itself.

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backend::autodiff_device;
use crate::dataset::Dataset;
use crate::model::{activate_scalar, tensor_to_vec, DenseWeights, Mlp, ModelError};
use crate::rng::SplitMix64;
use crate::spec::{Activation, Loss, ModelSpec, OptimizerKind};

/// Rows per forward pass in `evaluate`.
const EVAL_CHUNK: usize = 8192;

/// Errors from training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Model construction or tensor read-back failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The dataset does not fit the model.
    #[error("dataset has {got} features per row, the model takes {expected}")]
    Width {
        /// Model input width.
        expected: usize,
        /// Dataset width.
        got: usize,
    },
    /// Nothing to train or evaluate on.
    #[error("dataset is empty")]
    Empty,
    /// The loss became NaN or infinite.
    #[error("loss diverged to {0} in epoch {1}")]
    Diverged(f32, usize),
}

/// Loss and accuracy over a dataset, as Keras' `evaluate` returns them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean loss per example.
    pub loss: f32,
    /// Fraction of examples classified correctly.
    pub accuracy: f32,
}

impl std::fmt::Display for EvalResult {
    /// Keras' `evaluate` line: `loss: 0.1234 - accuracy: 0.9650`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loss: {:.4} - accuracy: {:.4}", self.loss, self.accuracy)
    }
}

/// Statistics of one finished epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number over the trainer's life.
    pub epoch: usize,
    /// Mean training loss per example over the epoch.
    pub loss: f32,
    /// Training accuracy over the epoch.
    pub accuracy: f32,
    /// Examples seen in the epoch.
    pub examples: usize,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// Progress inside an epoch, sent after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// 1-based epoch number over the trainer's life.
    pub epoch: usize,
    /// 1-based batch number within the epoch.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// Running mean loss in this epoch.
    pub loss: f32,
    /// Running accuracy in this epoch.
    pub accuracy: f32,
    /// Training throughput so far in this epoch.
    pub examples_per_sec: f64,
}

/// What `fit` reports to its callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FitEvent {
    /// A batch finished.
    Batch(BatchProgress),
    /// An epoch finished.
    Epoch(EpochStats),
}

/// A model with its optimiser state and training history.
pub struct Trainer {
    spec: ModelSpec,
    model: Mlp,
    optim: ModuleOptimizer,
    device: Device,
    history: Vec<EpochStats>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("spec", &self.spec)
            .field("epochs_trained", &self.history.len())
            .finish_non_exhaustive()
    }
}

fn optimizer(spec: &ModelSpec) -> ModuleOptimizer {
    match spec.optimizer {
        // Keras' Adam defaults; burn's default epsilon is 1e-5.
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-7)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new().init(),
    }
}

/// The loss of pre-activations `z` against labels `y` (both `[n, 1]`), averaged over rows.
fn loss_tensor(loss: Loss, out_act: Activation, z: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    match loss {
        // max(z, 0) - z*y + log(1 + exp(-|z|)): the logits form of BCE, exact for any |z|.
        Loss::BinaryCrossentropy => {
            let positive = z.clone().clamp_min(0.0);
            let zy = z.clone() * y;
            let softplus = z.abs().mul_scalar(-1.0).exp().log1p();
            (positive - zy + softplus).mean()
        }
        Loss::MeanSquaredError => {
            let out = crate::model::apply_activation(z, out_act);
            let d = out - y;
            (d.clone() * d).mean()
        }
    }
}

fn correct(out_act: Activation, z: &[f32], y: &[f32]) -> usize {
    z.iter()
        .zip(y)
        .filter(|(z, y)| (activate_scalar(**z, out_act) > 0.5) == (**y > 0.5))
        .count()
}

impl Trainer {
    /// A trainer with a freshly initialised model for `spec` on the CPU autodiff backend.
    pub fn new(spec: ModelSpec) -> Self {
        let device = autodiff_device();
        let model = Mlp::init(&spec, &device);
        Trainer {
            optim: optimizer(&spec),
            spec,
            model,
            device,
            history: Vec::new(),
        }
    }

    /// A trainer resuming from plain weights (e.g. a checkpoint). The optimiser state starts
    /// fresh; `history` is kept for the curve.
    pub fn from_weights(
        spec: ModelSpec,
        weights: &[DenseWeights],
        history: Vec<EpochStats>,
    ) -> Result<Self, TrainError> {
        let device = autodiff_device();
        let model = Mlp::from_weights(&spec, weights, &device)?;
        Ok(Trainer {
            optim: optimizer(&spec),
            spec,
            model,
            device,
            history,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model.
    pub fn model(&self) -> &Mlp {
        &self.model
    }

    /// Every epoch trained so far.
    pub fn history(&self) -> &[EpochStats] {
        &self.history
    }

    /// Plain weights of the current model.
    pub fn weights(&self) -> Result<Vec<DenseWeights>, TrainError> {
        Ok(self.model.weights()?)
    }

    /// Predictions (after the output activation) for row-major rows.
    pub fn predict(&self, rows: &[f32]) -> Result<Vec<f32>, TrainError> {
        Ok(self.model.predict(rows)?)
    }

    fn check_width(&self, data: &Dataset) -> Result<(), TrainError> {
        if data.width() != self.spec.inputs {
            return Err(TrainError::Width {
                expected: self.spec.inputs,
                got: data.width(),
            });
        }
        if data.is_empty() {
            return Err(TrainError::Empty);
        }
        Ok(())
    }

    /// Keras' `fit(epochs, batch_size)`: shuffles each epoch (seeded by `spec.seed` and the epoch
    /// number), one optimiser step per mini-batch, and reports every batch and epoch to
    /// `on_event`. Returns the stats of the epochs run by this call.
    pub fn fit(
        &mut self,
        data: &Dataset,
        epochs: usize,
        batch_size: usize,
        mut on_event: impl FnMut(FitEvent),
    ) -> Result<Vec<EpochStats>, TrainError> {
        self.check_width(data)?;
        let width = data.width();
        let batch_size = batch_size.max(1);
        let n = data.len();
        let batches = n.div_ceil(batch_size);
        let out_act = self.model.output_activation();
        let activations = self.model.activations().to_vec();
        let lr = self.spec.lr;
        let mut net = self.model.net.clone();
        let mut order: Vec<usize> = (0..n).collect();
        let mut xb: Vec<f32> = Vec::with_capacity(batch_size * width);
        let mut yb: Vec<f32> = Vec::with_capacity(batch_size);
        let mut done = Vec::with_capacity(epochs);
        for _ in 0..epochs {
            let epoch = self.history.len() + 1;
            let started = Instant::now();
            let mut rng = SplitMix64::new(self.spec.seed ^ (epoch as u64).wrapping_mul(0x9E37));
            rng.shuffle(&mut order);
            let (mut loss_sum, mut right, mut seen) = (0f64, 0usize, 0usize);
            for (b, idx) in order.chunks(batch_size).enumerate() {
                xb.clear();
                yb.clear();
                for &i in idx {
                    if let Some(row) = data.row(i) {
                        xb.extend_from_slice(row);
                    }
                    yb.push(data.labels().get(i).copied().unwrap_or(0.0));
                }
                let rows = yb.len();
                let x = Tensor::<2>::from_data(
                    TensorData::new(xb.clone(), [rows, width]),
                    &self.device,
                );
                let y =
                    Tensor::<2>::from_data(TensorData::new(yb.clone(), [rows, 1]), &self.device);
                let z = Mlp::pre_activation(&net, &activations, x);
                let loss = loss_tensor(self.spec.loss, out_act, z.clone(), y);
                let loss_value = tensor_to_vec(loss.clone())?
                    .first()
                    .copied()
                    .unwrap_or(f32::NAN);
                if !loss_value.is_finite() {
                    return Err(TrainError::Diverged(loss_value, epoch));
                }
                let z_host = tensor_to_vec(z)?;
                right += correct(out_act, &z_host, &yb);
                loss_sum += f64::from(loss_value) * rows as f64;
                seen += rows;
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = self.optim.step(lr, net, grads);
                let secs = started.elapsed().as_secs_f64();
                on_event(FitEvent::Batch(BatchProgress {
                    epoch,
                    batch: b + 1,
                    batches,
                    loss: (loss_sum / seen as f64) as f32,
                    accuracy: right as f32 / seen as f32,
                    examples_per_sec: if secs > 0.0 { seen as f64 / secs } else { 0.0 },
                }));
            }
            let stats = EpochStats {
                epoch,
                loss: (loss_sum / seen.max(1) as f64) as f32,
                accuracy: right as f32 / seen.max(1) as f32,
                examples: seen,
                seconds: started.elapsed().as_secs_f64(),
            };
            self.history.push(stats);
            done.push(stats);
            self.model.set_net(net.clone());
            on_event(FitEvent::Epoch(stats));
        }
        self.model.set_net(net);
        Ok(done)
    }

    /// Keras' `evaluate`: mean loss and accuracy over `data`, in inference mode.
    pub fn evaluate(&self, data: &Dataset) -> Result<EvalResult, TrainError> {
        self.check_width(data)?;
        let width = data.width();
        let out_act = self.model.output_activation();
        let net = burn::module::Module::valid(&self.model.net);
        let Some(device) = net.layers.first().map(|l| l.weight.val().device()) else {
            return Err(TrainError::Empty);
        };
        let (mut loss_sum, mut right) = (0f64, 0usize);
        let rows_per_chunk = EVAL_CHUNK;
        for (xs, ys) in data
            .features()
            .chunks(rows_per_chunk * width)
            .zip(data.labels().chunks(rows_per_chunk))
        {
            let rows = ys.len();
            let x = Tensor::<2>::from_data(TensorData::new(xs.to_vec(), [rows, width]), &device);
            let y = Tensor::<2>::from_data(TensorData::new(ys.to_vec(), [rows, 1]), &device);
            let z = Mlp::pre_activation(&net, self.model.activations(), x);
            let loss = loss_tensor(self.spec.loss, out_act, z.clone(), y);
            let loss_value = tensor_to_vec(loss)?.first().copied().unwrap_or(f32::NAN);
            loss_sum += f64::from(loss_value) * rows as f64;
            right += correct(out_act, &tensor_to_vec(z)?, ys);
        }
        Ok(EvalResult {
            loss: (loss_sum / data.len() as f64) as f32,
            accuracy: right as f32 / data.len() as f32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::generate;

    #[test]
    fn seed_mlp_reaches_95_percent_in_10_epochs_at_batch_32() {
        let spec = ModelSpec::seed_mlp();
        let (train, test) = generate(10_000, 1).split_tail(0.2);
        let mut t = Trainer::new(spec.clone());
        let before = t.evaluate(&test).unwrap();
        let mut epochs_seen = 0;
        let stats = t
            .fit(&train, spec.epochs, spec.batch_size, |e| {
                if let FitEvent::Epoch(_) = e {
                    epochs_seen += 1;
                }
            })
            .unwrap();
        assert_eq!(stats.len(), 10);
        assert_eq!(epochs_seen, 10);
        let after = t.evaluate(&test).unwrap();
        assert!(after.accuracy >= 0.95, "test {after} (before: {before})");
        assert!(after.loss < before.loss);
        assert!(stats[9].loss < stats[0].loss);
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let spec = ModelSpec::seed_mlp();
        let data = generate(600, 5);
        let run = || {
            let mut t = Trainer::new(spec.clone());
            t.fit(&data, 2, 32, |_| {}).unwrap();
            t.weights().unwrap()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn bce_from_logits_is_stable_and_correct() {
        let device = crate::backend::cpu_device();
        let z = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 100.0, -100.0, 2.0], [4, 1]),
            &device,
        );
        let y = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [4, 1]),
            &device,
        );
        let got = tensor_to_vec(loss_tensor(
            Loss::BinaryCrossentropy,
            Activation::Sigmoid,
            z,
            y,
        ))
        .unwrap()[0];
        // ln 2, 100 (+tiny), ~0, softplus(-2)
        let want = (2f32.ln() + 100.0 + 0.0 + (1.0 + (-2f32).exp()).ln()) / 4.0;
        assert!(got.is_finite());
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn evaluate_display_is_keras_like() {
        let r = EvalResult {
            loss: 0.12344,
            accuracy: 0.965,
        };
        assert_eq!(r.to_string(), "loss: 0.1234 - accuracy: 0.9650");
    }

    #[test]
    fn wrong_width_and_empty_are_errors() {
        let mut t = Trainer::new(ModelSpec::seed_mlp());
        assert!(matches!(
            t.fit(&Dataset::new(3), 1, 32, |_| {}),
            Err(TrainError::Width { .. })
        ));
        assert!(matches!(
            t.evaluate(&Dataset::new(8)),
            Err(TrainError::Empty)
        ));
    }
}
