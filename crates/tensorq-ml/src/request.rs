//! Format-neutral inference requests and responses, as decoded from and encoded to the wire.
//!
//! Owns [`InferRequest`], [`InferResponse`] and [`WireFormat`] (which codec a request arrived in,
//! so that its reply is written back in the same one). Does not parse or write any bytes
//! (`codec`) nor check tensors against a model (`model`).

use crate::tensor::Tensor;

/// Wire format of a request, chosen by content type (and, for JSON, by the keys present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// KServe Open Inference Protocol v2, JSON body (`application/json` with `"inputs"`).
    OipJson,
    /// TF-Serving row format (`application/json` with `"instances"`).
    TfServing,
    /// OIP v2 `ModelInferRequest`/`ModelInferResponse` protobuf.
    Protobuf,
    /// One raw little-endian tensor, shape and dtype in headers.
    Raw,
}

/// A decoded inference request.
///
/// An input with an empty `name` stands for "the model's only input" (TF-Serving rows and raw
/// bodies carry no names).
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// Client-chosen id, echoed in the reply so duplicates can be detected.
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Names of the outputs wanted; `None` means all of them.
    pub outputs: Option<Vec<String>>,
    pub format: WireFormat,
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}
