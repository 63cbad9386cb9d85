//! Backend selection: burn's NdArray CPU backend, optionally wrapped in autodiff.
//!
//! Owns the one place the backend is chosen, and the determinism story: this crate enables
//! burn's `ndarray` backend *without* its `rayon`/`multi-threads` feature, so every tensor op runs
//! on the calling thread and a fixed seed gives bit-identical training runs. It does not own
//! model code (`model.rs`) or training (`trainer.rs`).
//!
//! burn 0.22 deprecates NdArray in favour of its "flex" CPU backend; the brief asked for NdArray,
//! so the deprecation is allowed here and nowhere else.

use burn::tensor::Device;

/// The plain (inference) CPU device.
#[allow(deprecated)]
pub fn cpu_device() -> Device {
    Device::ndarray()
}

/// The CPU device with autodiff enabled, for training.
pub fn autodiff_device() -> Device {
    cpu_device().autodiff()
}
