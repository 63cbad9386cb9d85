//! The burn MLP: a stack of dense layers described by a [`ModelSpec`], with Keras-like init.
//!
//! Owns the module (`Net`, a `Vec` of burn `Linear` layers), the per-layer activations, Glorot
//! uniform weight init with zero biases (Keras' defaults, drawn from our own seeded generator so
//! init does not depend on burn's global RNG), the forward pass, and conversion to and from plain
//! `f32` weights ([`DenseWeights`]). It does not own losses or optimisation (`trainer.rs`) nor any
//! file format (`checkpoint.rs`, `onnx_export.rs`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{activation, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::spec::{Activation, ModelSpec};

/// Errors from building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Weights did not match the spec's shapes.
    #[error("weights do not match the spec: {0}")]
    Shape(String),
    /// A weight was NaN or infinite.
    #[error("layer {layer} has a non-finite weight or bias")]
    NonFinite {
        /// Layer index.
        layer: usize,
    },
    /// The backend failed to read a tensor back.
    #[error("backend error: {0}")]
    Backend(String),
}

/// The trainable part: dense layers, input side first. Weight `[inputs, units]`, bias `[units]`.
#[derive(Module, Debug)]
pub struct Net {
    /// The layers.
    pub layers: Vec<Linear>,
}

/// Plain weights of one dense layer: `y = act(x W + b)` with `W` row-major `[inputs][units]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseWeights {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub units: usize,
    /// Activation after the affine map.
    pub activation: Activation,
    /// `inputs * units` values, row-major (`weight[i * units + j]` maps input i to unit j).
    pub weight: Vec<f32>,
    /// `units` values.
    pub bias: Vec<f32>,
}

/// An MLP: the burn module plus the activations from its spec.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Trainable layers.
    pub net: Net,
    activations: Vec<Activation>,
    inputs: usize,
}

/// Applies an activation to a tensor.
pub fn apply_activation<const D: usize>(x: Tensor<D>, act: Activation) -> Tensor<D> {
    match act {
        Activation::Relu => activation::relu(x),
        Activation::Sigmoid => activation::sigmoid(x),
        Activation::Tanh => activation::tanh(x),
        Activation::Linear => x,
    }
}

/// Applies an activation to one value (used for metrics computed on the host).
pub fn activate_scalar(z: f32, act: Activation) -> f32 {
    match act {
        Activation::Relu => z.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Tanh => z.tanh(),
        Activation::Linear => z,
    }
}

fn linear_from(w: &DenseWeights, device: &Device) -> Linear {
    let weight = Tensor::<2>::from_data(
        TensorData::new(w.weight.clone(), [w.inputs, w.units]),
        device,
    );
    let bias = Tensor::<1>::from_data(TensorData::new(w.bias.clone(), [w.units]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// Glorot-uniform weights and zero biases for every layer of `spec`, from `spec.seed`.
pub fn glorot_weights(spec: &ModelSpec) -> Vec<DenseWeights> {
    let mut rng = SplitMix64::new(spec.seed);
    spec.layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let inputs = spec.layer_inputs(i);
            let limit = (6.0 / (inputs + layer.units) as f64).sqrt();
            let weight = (0..inputs * layer.units)
                .map(|_| rng.uniform(-limit, limit) as f32)
                .collect();
            DenseWeights {
                inputs,
                units: layer.units,
                activation: layer.activation,
                weight,
                bias: vec![0.0; layer.units],
            }
        })
        .collect()
}

/// Checks that `weights` has the shapes `spec` describes and only finite values.
pub fn check_weights(spec: &ModelSpec, weights: &[DenseWeights]) -> Result<(), ModelError> {
    if weights.len() != spec.layers.len() {
        return Err(ModelError::Shape(format!(
            "{} layers of weights for a {}-layer spec",
            weights.len(),
            spec.layers.len()
        )));
    }
    for (i, (w, layer)) in weights.iter().zip(&spec.layers).enumerate() {
        let inputs = spec.layer_inputs(i);
        if w.inputs != inputs || w.units != layer.units || w.activation != layer.activation {
            return Err(ModelError::Shape(format!(
                "layer {i} is {}x{} {:?}, spec says {}x{} {:?}",
                w.inputs, w.units, w.activation, inputs, layer.units, layer.activation
            )));
        }
        if w.weight.len() != inputs * layer.units || w.bias.len() != layer.units {
            return Err(ModelError::Shape(format!(
                "layer {i} has {} weights and {} biases, expected {} and {}",
                w.weight.len(),
                w.bias.len(),
                inputs * layer.units,
                layer.units
            )));
        }
        if !w.weight.iter().chain(&w.bias).all(|v| v.is_finite()) {
            return Err(ModelError::NonFinite { layer: i });
        }
    }
    Ok(())
}

impl Mlp {
    /// A freshly initialised model for `spec` (Glorot uniform, zero bias, seeded by `spec.seed`).
    pub fn init(spec: &ModelSpec, device: &Device) -> Self {
        let weights = glorot_weights(spec);
        Self::build(spec, &weights, device)
    }

    /// A model with the given plain weights, after checking them against `spec`.
    pub fn from_weights(
        spec: &ModelSpec,
        weights: &[DenseWeights],
        device: &Device,
    ) -> Result<Self, ModelError> {
        check_weights(spec, weights)?;
        Ok(Self::build(spec, weights, device))
    }

    fn build(spec: &ModelSpec, weights: &[DenseWeights], device: &Device) -> Self {
        Mlp {
            net: Net {
                layers: weights.iter().map(|w| linear_from(w, device)).collect(),
            },
            activations: spec.layers.iter().map(|l| l.activation).collect(),
            inputs: spec.inputs,
        }
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Activation of the output layer.
    pub fn output_activation(&self) -> Activation {
        self.activations
            .last()
            .copied()
            .unwrap_or(Activation::Linear)
    }

    /// Replaces the trainable layers (after an optimiser step).
    pub fn set_net(&mut self, net: Net) {
        self.net = net;
    }

    /// Forward pass up to the output layer's pre-activation (logits for a sigmoid output).
    pub fn pre_activation(net: &Net, activations: &[Activation], x: Tensor<2>) -> Tensor<2> {
        let last = net.layers.len().saturating_sub(1);
        let mut h = x;
        for (i, (layer, act)) in net.layers.iter().zip(activations).enumerate() {
            h = layer.forward(h);
            if i != last {
                h = apply_activation(h, *act);
            }
        }
        h
    }

    /// Activations per layer.
    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }

    /// Predicted outputs (after the output activation) for row-major `rows`, one per row.
    /// Runs in inference mode (no autodiff graph).
    pub fn predict(&self, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
        if self.inputs == 0 || !rows.len().is_multiple_of(self.inputs) {
            return Err(ModelError::Shape(format!(
                "{} values is not a whole number of {}-feature rows",
                rows.len(),
                self.inputs
            )));
        }
        let n = rows.len() / self.inputs;
        if n == 0 {
            return Ok(Vec::new());
        }
        let net = self.net.valid();
        let Some(device) = net.layers.first().map(|l| l.weight.val().device()) else {
            return Err(ModelError::Shape("model has no layers".into()));
        };
        let x = Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [n, self.inputs]), &device);
        let z = Self::pre_activation(&net, &self.activations, x);
        let y = apply_activation(z, self.output_activation());
        tensor_to_vec(y)
    }

    /// Plain `f32` copies of every layer's weights.
    pub fn weights(&self) -> Result<Vec<DenseWeights>, ModelError> {
        self.net
            .layers
            .iter()
            .zip(&self.activations)
            .map(|(layer, act)| {
                let [inputs, units] = layer.weight.val().dims();
                let weight = tensor_to_vec(layer.weight.val())?;
                let bias = match &layer.bias {
                    Some(b) => tensor_to_vec(b.val())?,
                    None => vec![0.0; units],
                };
                Ok(DenseWeights {
                    inputs,
                    units,
                    activation: *act,
                    weight,
                    bias,
                })
            })
            .collect()
    }
}

/// Reads a float tensor back to the host as `f32`s.
pub fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    let data = t
        .try_into_data()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu_device;

    #[test]
    fn glorot_init_is_keras_like_and_seeded() {
        let spec = ModelSpec::seed_mlp();
        let w = glorot_weights(&spec);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].inputs, w[0].units), (8, 10));
        assert_eq!((w[1].inputs, w[1].units), (10, 1));
        let limit0 = (6.0f32 / 18.0).sqrt();
        assert!(w[0].weight.iter().all(|v| v.abs() <= limit0));
        assert!(w[0].weight.iter().any(|v| v.abs() > limit0 * 0.8));
        assert!(w.iter().all(|l| l.bias.iter().all(|b| *b == 0.0)));
        assert_eq!(w, glorot_weights(&spec));
        let mut other = spec.clone();
        other.seed += 1;
        assert_ne!(w, glorot_weights(&other));
    }

    #[test]
    fn weights_round_trip_through_burn() {
        let spec = ModelSpec::seed_mlp();
        let device = cpu_device();
        let m = Mlp::init(&spec, &device);
        assert_eq!(m.weights().unwrap(), glorot_weights(&spec));
    }

    #[test]
    fn predict_matches_a_hand_computed_forward_pass() {
        let spec = ModelSpec::seed_mlp();
        let mut w = glorot_weights(&spec);
        w[0].bias = (0..10).map(|i| i as f32 * 0.01 - 0.05).collect();
        w[1].bias = vec![0.3];
        let m = Mlp::from_weights(&spec, &w, &cpu_device()).unwrap();
        let rows: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) / 4.0).collect();
        let got = m.predict(&rows).unwrap();
        for (r, row) in rows.chunks(8).enumerate() {
            let mut h = [0f32; 10];
            for (j, hj) in h.iter_mut().enumerate() {
                let s: f32 = (0..8).map(|i| row[i] * w[0].weight[i * 10 + j]).sum();
                *hj = (s + w[0].bias[j]).max(0.0);
            }
            let z: f32 = (0..10).map(|j| h[j] * w[1].weight[j]).sum::<f32>() + w[1].bias[0];
            let want = 1.0 / (1.0 + (-z).exp());
            assert!((got[r] - want).abs() < 1e-6, "{} vs {}", got[r], want);
        }
    }

    #[test]
    fn from_weights_rejects_wrong_shapes_and_nan() {
        let spec = ModelSpec::seed_mlp();
        let device = cpu_device();
        let mut w = glorot_weights(&spec);
        w[0].weight.pop();
        assert!(matches!(
            Mlp::from_weights(&spec, &w, &device),
            Err(ModelError::Shape(_))
        ));
        let mut w = glorot_weights(&spec);
        w[1].bias[0] = f32::NAN;
        assert!(matches!(
            Mlp::from_weights(&spec, &w, &device),
            Err(ModelError::NonFinite { layer: 1 })
        ));
        let m = Mlp::init(&spec, &device);
        assert!(matches!(m.predict(&[1.0; 7]), Err(ModelError::Shape(_))));
    }
}
