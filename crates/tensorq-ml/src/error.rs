//! Typed errors of tensorq-ml: tensor construction/conversion ([`TensorError`]), wire decoding
//! ([`CodecError`]) and model loading/validation/inference ([`ModelError`]).
//!
//! Owns only the error vocabulary; the code that raises them lives in `tensor`, `codec` and
//! `model`.

use crate::tensor::DataType;

#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("unsupported datatype {0:?} (supported: FP32, FP64, INT32, INT64)")]
    UnsupportedDataType(String),
    #[error("shape {shape:?} does not match the {elements} elements given")]
    ShapeDataMismatch { shape: Vec<usize>, elements: usize },
    #[error("tensor of shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    #[error("tensor rank {0} is above the limit")]
    RankTooLarge(usize),
    #[error("cannot convert {from} to {to} without loss")]
    LossyConversion { from: DataType, to: DataType },
    #[error("datatype mismatch: expected {expected}, got {got}")]
    DataTypeMismatch { expected: DataType, got: DataType },
    #[error("{bytes} bytes is not a whole number of {dtype} elements")]
    MisalignedBytes { bytes: usize, dtype: DataType },
    #[error("nothing to concatenate")]
    EmptyConcat,
    #[error("a scalar has no batch axis")]
    ScalarBatch,
    #[error("cannot concatenate shape {got:?} with {expected:?}")]
    ConcatShapeMismatch {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("cannot split shape {shape:?} into {rows} rows")]
    SplitMismatch { shape: Vec<usize>, rows: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unsupported content type {0:?}")]
    UnsupportedContentType(String),
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("invalid header {name}: {reason}")]
    BadHeader { name: &'static str, reason: String },
    #[error("body of {bytes} bytes exceeds the limit of {limit}")]
    BodyTooLarge { bytes: usize, limit: usize },
    #[error("tensor {name:?}: {source}")]
    Tensor {
        name: String,
        #[source]
        source: TensorError,
    },
    #[error("cannot encode: {0}")]
    Encode(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("model has an input or output tract cannot describe: {0}")]
    UnsupportedSignature(String),
    #[error("model has no input named {0:?}")]
    UnknownInput(String),
    #[error("model has no output named {0:?}")]
    UnknownOutput(String),
    #[error("missing input {0:?}")]
    MissingInput(String),
    #[error("input {name:?}: expected rank {expected} (shape {spec}), got shape {got:?}")]
    Rank {
        name: String,
        expected: usize,
        spec: String,
        got: Vec<usize>,
    },
    #[error(
        "input {name:?}: dimension {axis} must be {expected} (shape {spec}), got shape {got:?}"
    )]
    Dim {
        name: String,
        axis: usize,
        expected: usize,
        spec: String,
        got: Vec<usize>,
    },
    #[error("input {name:?}: batch of {batch} rows is outside 1..={limit}")]
    Batch {
        name: String,
        batch: usize,
        limit: usize,
    },
    #[error("inputs disagree on the batch size: {0:?}")]
    BatchDisagree(Vec<usize>),
    #[error("input {name:?}: {source}")]
    Tensor {
        name: String,
        #[source]
        source: TensorError,
    },
    #[error("inference failed: {0}")]
    Inference(String),
}
