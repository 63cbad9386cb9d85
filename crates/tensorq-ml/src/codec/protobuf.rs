//! KServe Open Inference Protocol v2 over protobuf: `ModelInferRequest` in,
//! `ModelInferResponse` out, encoded with `prost`.
//!
//! The message structs are written by hand with `#[derive(prost::Message)]` and the field numbers
//! of the OIP v2 `grpc_predict_v2.proto` (no protoc, no build script). The `parameters` maps are
//! not modelled: prost skips them as unknown fields. Input data may come either in
//! `InferTensorContents` (typed repeated fields) or in `raw_input_contents` (little-endian bytes,
//! one entry per input in order). Responses use the typed contents. Owns only these messages.

use crate::codec::{raw, Encoded, CONTENT_TYPE_PROTOBUF};
use crate::error::CodecError;
use crate::request::{InferRequest, InferResponse, WireFormat};
use crate::tensor::{DataType, Tensor, TensorData};
use prost::Message;

/// OIP v2 `InferTensorContents`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

/// OIP v2 `ModelInferRequest.InferInputTensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferInputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// OIP v2 `ModelInferRequest.InferRequestedOutputTensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// OIP v2 `ModelInferRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

/// OIP v2 `ModelInferResponse.InferOutputTensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// OIP v2 `ModelInferResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

pub fn decode(body: &[u8]) -> Result<InferRequest, CodecError> {
    let msg = ModelInferRequest::decode(body).map_err(|e| CodecError::Protobuf(e.to_string()))?;
    if msg.inputs.is_empty() {
        return Err(CodecError::Invalid("request has no inputs".into()));
    }
    let use_raw = !msg.raw_input_contents.is_empty();
    if use_raw && msg.raw_input_contents.len() != msg.inputs.len() {
        return Err(CodecError::Invalid(format!(
            "{} raw_input_contents for {} inputs",
            msg.raw_input_contents.len(),
            msg.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(msg.inputs.len());
    for (i, input) in msg.inputs.into_iter().enumerate() {
        let wrap = |source| CodecError::Tensor {
            name: input.name.clone(),
            source,
        };
        let dtype = DataType::parse(&input.datatype).map_err(wrap)?;
        let shape = input
            .shape
            .iter()
            .map(|d| usize::try_from(*d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                CodecError::Invalid(format!("input {:?}: negative dimension", input.name))
            })?;
        let data = if use_raw {
            let bytes = msg
                .raw_input_contents
                .get(i)
                .ok_or_else(|| CodecError::Invalid("missing raw contents".into()))?;
            raw::bytes_to_data(bytes, dtype).map_err(wrap)?
        } else {
            let c = input.contents.clone().unwrap_or_default();
            match dtype {
                DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
                DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
                DataType::Int32 => TensorData::Int32(c.int_contents),
                DataType::Int64 => TensorData::Int64(c.int64_contents),
            }
        };
        inputs.push(Tensor::new(input.name.clone(), shape, data).map_err(wrap)?);
    }
    Ok(InferRequest {
        id: (!msg.id.is_empty()).then_some(msg.id),
        inputs,
        outputs: (!msg.outputs.is_empty())
            .then(|| msg.outputs.into_iter().map(|o| o.name).collect()),
        format: WireFormat::Protobuf,
    })
}

pub fn encode_response(response: &InferResponse) -> Result<Encoded, CodecError> {
    let outputs = response
        .outputs
        .iter()
        .map(|t| {
            let mut contents = InferTensorContents::default();
            match &t.data {
                TensorData::Fp32(v) => contents.fp32_contents = v.clone(),
                TensorData::Fp64(v) => contents.fp64_contents = v.clone(),
                TensorData::Int32(v) => contents.int_contents = v.clone(),
                TensorData::Int64(v) => contents.int64_contents = v.clone(),
            }
            let shape = t
                .shape
                .iter()
                .map(|d| i64::try_from(*d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| CodecError::Encode("dimension exceeds int64".into()))?;
            Ok(InferOutputTensor {
                name: t.name.clone(),
                datatype: t.dtype().as_str().to_string(),
                shape,
                contents: Some(contents),
            })
        })
        .collect::<Result<Vec<_>, CodecError>>()?;
    let msg = ModelInferResponse {
        model_name: response.model_name.clone(),
        model_version: response.model_version.clone(),
        id: response.id.clone().unwrap_or_default(),
        outputs,
        raw_output_contents: Vec::new(),
    };
    Ok(Encoded {
        content_type: CONTENT_TYPE_PROTOBUF,
        headers: Vec::new(),
        body: msg.encode_to_vec(),
    })
}

/// Decodes a response body (for clients and tests).
pub fn decode_response(body: &[u8]) -> Result<InferResponse, CodecError> {
    let msg = ModelInferResponse::decode(body).map_err(|e| CodecError::Protobuf(e.to_string()))?;
    let outputs = msg
        .outputs
        .into_iter()
        .map(|o| {
            let wrap = |source| CodecError::Tensor {
                name: o.name.clone(),
                source,
            };
            let dtype = DataType::parse(&o.datatype).map_err(wrap)?;
            let c = o.contents.clone().unwrap_or_default();
            let data = match dtype {
                DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
                DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
                DataType::Int32 => TensorData::Int32(c.int_contents),
                DataType::Int64 => TensorData::Int64(c.int64_contents),
            };
            let shape = o
                .shape
                .iter()
                .map(|d| usize::try_from(*d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| CodecError::Invalid("negative dimension".into()))?;
            Tensor::new(o.name.clone(), shape, data).map_err(wrap)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InferResponse {
        model_name: msg.model_name,
        model_version: msg.model_version,
        id: (!msg.id.is_empty()).then_some(msg.id),
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(data: Vec<f32>, shape: Vec<i64>) -> Vec<u8> {
        ModelInferRequest {
            id: "p1".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape,
                contents: Some(InferTensorContents {
                    fp32_contents: data,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn typed_and_raw_contents_decode_alike() {
        let typed = decode(&request(vec![1.0, 2.0], vec![1, 2])).unwrap();
        let raw_msg = ModelInferRequest {
            id: "p1".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                contents: None,
            }],
            raw_input_contents: vec![[1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()],
            ..Default::default()
        };
        let raw = decode(&raw_msg.encode_to_vec()).unwrap();
        assert_eq!(typed, raw);
        assert_eq!(typed.id.as_deref(), Some("p1"));
    }

    #[test]
    fn rejects_bad_messages() {
        assert!(decode(&request(vec![1.0], vec![1, 2])).is_err());
        assert!(decode(&request(vec![1.0], vec![-1])).is_err());
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff]),
            Err(CodecError::Protobuf(_))
        ));
    }

    #[test]
    fn response_round_trips() {
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: "2".into(),
            id: Some("r".into()),
            outputs: vec![Tensor::new("y", vec![1, 3], TensorData::Int64(vec![1, -2, 3])).unwrap()],
        };
        let enc = encode_response(&resp).unwrap();
        assert_eq!(decode_response(&enc.body).unwrap(), resp);
    }
}
