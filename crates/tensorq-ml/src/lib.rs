//! tensorq-ml: tensors, wire codecs and ONNX inference for tensorq's serving path.
//!
//! Owns the format-neutral request/response types, the codecs that turn AMQP message bodies
//! (content type + headers + bytes, with no AMQP types involved) into them and back, and ONNX
//! inference through `tract-onnx` (pure Rust, nothing downloaded). It does not own queues,
//! batching policy, replies or acknowledgements: those are the serving worker's
//! (`tensorq-worker::serve`).
//!
//! Typical use:
//! ```no_run
//! use tensorq_ml::{codec, OnnxModel};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = OnnxModel::load("fixtures/models/seed_mlp.onnx", "seed_mlp", "1")?;
//! let body = br#"{"id":"r1","inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[0,0,0,0,0,0,0,0]}]}"#;
//! let request = codec::decode_request(Some("application/json"), &codec::NoHeaders, body)?;
//! let format = request.format;
//! let response = model.infer(request)?;
//! let reply = codec::encode_response(format, &response)?;
//! # let _ = reply; Ok(()) }
//! ```

pub mod codec;
pub mod error;
pub mod model;
pub mod request;
pub mod tensor;

pub use codec::{decode_request, encode_error, encode_response, Encoded, Headers};
pub use error::{CodecError, ModelError, TensorError};
pub use model::{Dim, OnnxModel, Prepared, TensorSpec, MAX_BATCH_ROWS};
pub use request::{InferRequest, InferResponse, WireFormat};
pub use tensor::{DataType, Tensor, TensorData};
