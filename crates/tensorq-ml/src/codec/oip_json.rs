//! KServe Open Inference Protocol v2, JSON body.
//!
//! Request: `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?: [{"name"}]}`.
//! `data` may be flat (row-major) or nested to any depth, as KServe accepts; it is flattened and
//! must then hold exactly `product(shape)` numbers. Response:
//! `{"model_name", "model_version", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}`
//! with flat data. Non-finite floats are written as `null` (JSON has no NaN).
//!
//! Owns only this JSON shape; shared JSON number handling lives here too and is reused by
//! `tfserving`. Does not check tensors against a model.

use crate::codec::{Encoded, CONTENT_TYPE_JSON};
use crate::error::CodecError;
use crate::request::{InferRequest, InferResponse, WireFormat};
use crate::tensor::{DataType, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most inputs one request may name.
pub const MAX_INPUTS: usize = 64;

#[derive(Deserialize)]
struct RequestDoc {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputDoc>,
    #[serde(default)]
    outputs: Option<Vec<OutputRequestDoc>>,
}

#[derive(Deserialize)]
struct InputDoc {
    name: String,
    shape: Vec<usize>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct OutputRequestDoc {
    name: String,
}

#[derive(Serialize)]
struct ResponseDoc<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputDoc<'a>>,
}

#[derive(Serialize)]
pub(crate) struct OutputDoc<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub datatype: &'static str,
    pub data: DataDoc<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum DataDoc<'a> {
    Fp32(&'a [f32]),
    Fp64(&'a [f64]),
    Int32(&'a [i32]),
    Int64(&'a [i64]),
}

impl<'a> From<&'a TensorData> for DataDoc<'a> {
    fn from(d: &'a TensorData) -> Self {
        match d {
            TensorData::Fp32(v) => DataDoc::Fp32(v),
            TensorData::Fp64(v) => DataDoc::Fp64(v),
            TensorData::Int32(v) => DataDoc::Int32(v),
            TensorData::Int64(v) => DataDoc::Int64(v),
        }
    }
}

pub fn decode(body: &[u8]) -> Result<InferRequest, CodecError> {
    let doc: RequestDoc =
        serde_json::from_slice(body).map_err(|e| CodecError::Json(e.to_string()))?;
    if doc.inputs.is_empty() {
        return Err(CodecError::Invalid("\"inputs\" is empty".into()));
    }
    if doc.inputs.len() > MAX_INPUTS {
        return Err(CodecError::Invalid(format!(
            "{} inputs exceed the limit of {MAX_INPUTS}",
            doc.inputs.len()
        )));
    }
    let inputs = doc
        .inputs
        .into_iter()
        .map(|input| {
            let wrap = |source| CodecError::Tensor {
                name: input.name.clone(),
                source,
            };
            let dtype = DataType::parse(&input.datatype).map_err(wrap)?;
            let data = json_to_data(&input.data, dtype).map_err(|reason| {
                CodecError::Invalid(format!("input {:?}: {reason}", input.name))
            })?;
            Tensor::new(input.name.clone(), input.shape, data).map_err(wrap)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InferRequest {
        id: doc.id,
        inputs,
        outputs: doc.outputs.map(|o| o.into_iter().map(|o| o.name).collect()),
        format: WireFormat::OipJson,
    })
}

pub fn encode_response(response: &InferResponse) -> Result<Encoded, CodecError> {
    let doc = ResponseDoc {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: response.id.as_deref(),
        outputs: response
            .outputs
            .iter()
            .map(|t| OutputDoc {
                name: &t.name,
                shape: &t.shape,
                datatype: t.dtype().as_str(),
                data: (&t.data).into(),
            })
            .collect(),
    };
    let body = serde_json::to_vec(&doc).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(Encoded {
        content_type: CONTENT_TYPE_JSON,
        headers: Vec::new(),
        body,
    })
}

/// Flattens a (possibly nested) JSON array of numbers into a buffer of `dtype`.
pub(crate) fn json_to_data(value: &Value, dtype: DataType) -> Result<TensorData, String> {
    let mut leaves = Vec::new();
    flatten(value, &mut leaves)?;
    Ok(match dtype {
        DataType::Fp32 => TensorData::Fp32(
            leaves
                .iter()
                .map(|v| number_f64(v).map(|x| x as f32))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Fp64 => TensorData::Fp64(
            leaves
                .iter()
                .map(|v| number_f64(v))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Int32 => TensorData::Int32(
            leaves
                .iter()
                .map(|v| {
                    number_i64(v).and_then(|x| {
                        i32::try_from(x).map_err(|_| format!("{x} does not fit INT32"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Int64 => TensorData::Int64(
            leaves
                .iter()
                .map(|v| number_i64(v))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
            Ok(())
        }
        Value::Number(_) => {
            out.push(value);
            Ok(())
        }
        other => Err(format!("expected numbers, found {}", kind(other))),
    }
}

fn number_f64(v: &Value) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("{v} is not a number"))
}

fn number_i64(v: &Value) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("{v} is not an integer that fits INT64"))
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat = br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested = br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        let a = decode(flat).unwrap();
        let b = decode(nested).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.inputs[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(a.id.as_deref(), Some("a"));
    }

    #[test]
    fn rejects_wrong_element_count_and_types() {
        let short = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#;
        assert!(matches!(decode(short), Err(CodecError::Tensor { .. })));
        let text = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#;
        assert!(matches!(decode(text), Err(CodecError::Invalid(_))));
        let frac = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1.5]}]}"#;
        assert!(matches!(decode(frac), Err(CodecError::Invalid(_))));
        let dtype = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":[1]}]}"#;
        assert!(matches!(decode(dtype), Err(CodecError::Tensor { .. })));
        assert!(matches!(decode(b"{not json"), Err(CodecError::Json(_))));
    }

    #[test]
    fn response_round_trips_through_decode() {
        let t = Tensor::new("y", vec![2, 1], TensorData::Fp32(vec![0.25, -1.5])).unwrap();
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: "3".into(),
            id: Some("r".into()),
            outputs: vec![t.clone()],
        };
        let enc = encode_response(&resp).unwrap();
        let v: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(v["model_version"], "3");
        assert_eq!(v["outputs"][0]["datatype"], "FP32");
        // A response's outputs are valid request inputs, which checks shape and data survive.
        let as_req = format!(r#"{{"inputs":{}}}"#, v["outputs"]);
        let back = decode(as_req.as_bytes()).unwrap();
        assert_eq!(back.inputs, vec![t]);
    }
}
