//! TF-Serving REST row format: `{"instances": [...]}` in, `{"predictions": [...]}` out.
//!
//! Each instance is one batch row. For a single-input model a row is a number or a (nested)
//! array; for a multi-input model a row is an object `{input_name: value}`. All rows must have
//! the same shape; the decoded tensor has shape `[rows, row shape…]`. JSON carries no dtype: rows
//! whose numbers are all integers decode as INT64, anything else as FP64, and the model converts
//! (see `tensor` for the rules). An optional top-level `"id"` (a tensorq extension) is used as the
//! request id. TF-Serving's columnar `"inputs"` form is not accepted here, because `"inputs"`
//! selects the OIP v2 codec.
//!
//! Predictions: one entry per row; the row itself for a single output, an object
//! `{output_name: row}` for several. Owns only this JSON shape.

use crate::codec::oip_json::kind;
use crate::codec::rows_scan;
use crate::codec::{Encoded, CONTENT_TYPE_JSON};
use crate::error::CodecError;
use crate::request::{InferRequest, InferResponse, WireFormat};
use crate::tensor::{Tensor, TensorData, MAX_RANK};
use serde_json::{Map, Value};

/// Most rows one request may hold.
pub const MAX_INSTANCES: usize = 1 << 16;

/// True when the body is a JSON object with an `"instances"` key (cheap pre-check, then a scan
/// that validates the JSON without building it: [`decode`] parses it once).
pub fn looks_like_tfserving(body: &[u8]) -> bool {
    let window = body.get(..body.len().min(4096)).unwrap_or(body);
    if !window.windows(11).any(|w| w == b"\"instances\"") {
        return false;
    }
    // Only an object: serde's derived struct would also accept an array as its fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return false;
    }
    matches!(
        serde_json::from_slice::<InstancesProbe>(body),
        Ok(InstancesProbe { instances: Some(_) })
    )
}

/// Top-level keys of a request, read only to see whether `"instances"` is there (a present
/// `null` counts, so that [`decode`] reports it as not an array).
#[derive(serde::Deserialize)]
struct InstancesProbe {
    #[serde(default, deserialize_with = "present")]
    instances: Option<serde::de::IgnoredAny>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde::de::IgnoredAny>, D::Error> {
    serde::de::Deserialize::deserialize(d).map(Some)
}

/// The common request, `{"instances": [[numbers], ...], "id"?: "..."}` with flat rows, read in
/// one pass straight into numbers (`rows_scan`). Anything else takes the general path.
pub(crate) fn decode_flat(body: &[u8]) -> Option<InferRequest> {
    let rows = rows_scan::scan(body, MAX_INSTANCES)?;
    let data = match rows.ints {
        Some(ints) => TensorData::Int64(ints),
        None => TensorData::Fp64(rows.floats),
    };
    let tensor = Tensor::new("", vec![rows.rows, rows.width], data).ok()?;
    Some(InferRequest {
        id: rows.id,
        inputs: vec![tensor],
        outputs: None,
        format: WireFormat::TfServing,
    })
}

pub fn decode(body: &[u8]) -> Result<InferRequest, CodecError> {
    match decode_flat(body) {
        Some(request) => Ok(request),
        None => decode_general(body),
    }
}

/// Any TF-Serving request: named inputs, nested rows, and every error message.
pub(crate) fn decode_general(body: &[u8]) -> Result<InferRequest, CodecError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| CodecError::Json(e.to_string()))?;
    let Value::Object(mut doc) = doc else {
        return Err(CodecError::Invalid("body must be a JSON object".into()));
    };
    let id = match doc.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    let Some(Value::Array(rows)) = doc.remove("instances") else {
        return Err(CodecError::Invalid("\"instances\" must be an array".into()));
    };
    if rows.is_empty() {
        return Err(CodecError::Invalid("\"instances\" is empty".into()));
    }
    if rows.len() > MAX_INSTANCES {
        return Err(CodecError::Invalid(format!(
            "{} instances exceed the limit of {MAX_INSTANCES}",
            rows.len()
        )));
    }
    let inputs = if let Some(Value::Object(first)) = rows.first() {
        let names: Vec<String> = first.keys().cloned().collect();
        let mut inputs = Vec::with_capacity(names.len());
        for name in names {
            let column = rows
                .iter()
                .map(|row| match row {
                    Value::Object(m) => m.get(&name).ok_or_else(|| {
                        CodecError::Invalid(format!("an instance lacks input {name:?}"))
                    }),
                    other => Err(CodecError::Invalid(format!(
                        "instances mix objects and {}",
                        kind(other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            inputs.push(column_tensor(&name, &column)?);
        }
        inputs
    } else {
        let column: Vec<&Value> = rows.iter().collect();
        vec![column_tensor("", &column)?]
    };
    Ok(InferRequest {
        id,
        inputs,
        outputs: None,
        format: WireFormat::TfServing,
    })
}

fn column_tensor(name: &str, rows: &[&Value]) -> Result<Tensor, CodecError> {
    let invalid = |reason: String| CodecError::Invalid(format!("input {name:?}: {reason}"));
    let first = rows.first().ok_or_else(|| invalid("no instances".into()))?;
    let row_shape = shape_of(first).map_err(invalid)?;
    let mut leaves = Vec::new();
    for row in rows {
        if shape_of(row).map_err(invalid)? != row_shape {
            return Err(invalid("instances have different shapes".into()));
        }
        collect(row, &mut leaves);
    }
    let data = if leaves.iter().all(|v| v.is_i64()) {
        TensorData::Int64(leaves.iter().filter_map(|v| v.as_i64()).collect())
    } else {
        TensorData::Fp64(
            leaves
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| invalid(format!("{v} is not a number")))
                })
                .collect::<Result<_, _>>()?,
        )
    };
    let mut shape = vec![rows.len()];
    shape.extend(row_shape);
    Tensor::new(name, shape, data).map_err(|source| CodecError::Tensor {
        name: name.to_string(),
        source,
    })
}

/// Shape of a rectangular nested array of numbers.
fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Number(_) => Ok(Vec::new()),
        Value::Array(items) => {
            let first = items.first().ok_or("empty array in an instance")?;
            if first.is_number() {
                // The innermost level: a flat list of numbers (the common case; checked without
                // building a shape per element).
                return match items.iter().find(|i| !i.is_number()) {
                    None => Ok(vec![items.len()]),
                    Some(Value::Array(_)) => Err("ragged array in an instance".into()),
                    Some(other) => Err(format!("expected numbers, found {}", kind(other))),
                };
            }
            let inner = shape_of(first)?;
            for item in items.iter().skip(1) {
                if shape_of(item)? != inner {
                    return Err("ragged array in an instance".into());
                }
            }
            if inner.len() + 1 >= MAX_RANK {
                return Err("instance nested too deeply".into());
            }
            let mut shape = vec![items.len()];
            shape.extend(inner);
            Ok(shape)
        }
        other => Err(format!("expected numbers, found {}", kind(other))),
    }
}

fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        other => out.push(other),
    }
}

pub fn encode_response(response: &InferResponse) -> Result<Encoded, CodecError> {
    let batch = response.outputs.first().map(|t| t.batch()).unwrap_or(0);
    let mut predictions = Vec::with_capacity(batch);
    for row in 0..batch {
        if let [only] = response.outputs.as_slice() {
            predictions.push(row_value(only, row)?);
        } else {
            let mut obj = Map::new();
            for t in &response.outputs {
                obj.insert(t.name.clone(), row_value(t, row)?);
            }
            predictions.push(Value::Object(obj));
        }
    }
    let mut doc = Map::new();
    doc.insert("predictions".into(), Value::Array(predictions));
    Ok(Encoded {
        content_type: CONTENT_TYPE_JSON,
        headers: Vec::new(),
        body: Value::Object(doc).to_string().into_bytes(),
    })
}

fn row_value(t: &Tensor, row: usize) -> Result<Value, CodecError> {
    if t.shape.is_empty() || row >= t.batch() {
        return Err(CodecError::Encode(format!(
            "output {:?} of shape {:?} has no row {row}",
            t.name, t.shape
        )));
    }
    let len = t.row_len();
    let slice = t
        .data
        .slice(row * len, (row + 1) * len)
        .ok_or_else(|| CodecError::Encode(format!("output {:?} is short", t.name)))?;
    let leaves = leaf_values(&slice);
    let dims = t.shape.get(1..).unwrap_or(&[]);
    let mut it = leaves.into_iter();
    Ok(nest(dims, &mut it))
}

fn leaf_values(d: &TensorData) -> Vec<Value> {
    match d {
        // Shortest decimal that round-trips the f32, instead of the widened f64's digits.
        TensorData::Fp32(v) => v
            .iter()
            .map(|x| {
                x.to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            })
            .collect(),
        TensorData::Fp64(v) => v
            .iter()
            .map(|x| serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number))
            .collect(),
        TensorData::Int32(v) => v.iter().map(|x| Value::from(*x)).collect(),
        TensorData::Int64(v) => v.iter().map(|x| Value::from(*x)).collect(),
    }
}

fn nest(dims: &[usize], it: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        None => it.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(rest, it)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_a_batch() {
        let r = decode(br#"{"instances":[[1,2,3],[4,5,6.5]]}"#).unwrap();
        assert_eq!(r.format, WireFormat::TfServing);
        assert_eq!(r.inputs[0].shape, vec![2, 3]);
        assert_eq!(r.inputs[0].name, "");
        assert_eq!(
            r.inputs[0].data,
            TensorData::Fp64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5])
        );
        let ints = decode(br#"{"instances":[[1,2],[3,4]]}"#).unwrap();
        assert_eq!(ints.inputs[0].data, TensorData::Int64(vec![1, 2, 3, 4]));
    }

    #[test]
    fn named_rows_and_errors() {
        let r = decode(br#"{"id":"q","instances":[{"a":[1],"b":2},{"a":[3],"b":4}]}"#).unwrap();
        assert_eq!(r.id.as_deref(), Some("q"));
        assert_eq!(r.inputs.len(), 2);
        assert_eq!(r.inputs[0].shape, vec![2, 1]);
        assert_eq!(r.inputs[1].shape, vec![2]);
        assert!(decode(br#"{"instances":[[1,2],[3]]}"#).is_err());
        assert!(decode(br#"{"instances":[[1,[2]]]}"#).is_err());
        assert!(decode(br#"{"instances":[]}"#).is_err());
        assert!(decode(br#"{"instances":[{"a":1},{"b":1}]}"#).is_err());
    }

    #[test]
    fn predictions_are_rows() {
        let t = Tensor::new("y", vec![2, 2], TensorData::Fp32(vec![0.1, 0.2, 0.3, 0.4])).unwrap();
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: vec![t],
        };
        let enc = encode_response(&resp).unwrap();
        assert_eq!(
            std::str::from_utf8(&enc.body).unwrap(),
            r#"{"predictions":[[0.1,0.2],[0.3,0.4]]}"#
        );
    }

    #[test]
    fn flat_fast_path_matches_the_general_path() {
        for body in [
            &br#"{"instances":[[1,2,3],[4,5,6]]}"#[..],
            br#"{"instances":[[0.5,-1.25e3,2]],"id":"r-1"}"#,
            br#"{"id":"x","instances":[[1.0]]}"#,
            br#"{"instances":[[9223372036854775807,1]]}"#,
            br#"{"instances":[[18446744073709551615,1]]}"#,
        ] {
            let fast = decode_flat(body).expect("fast path taken");
            assert_eq!(
                fast,
                decode_general(body).unwrap(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Everything else goes the general way, with its messages.
        for body in [
            &br#"{"instances":[]}"#[..],
            br#"{"instances":[[1,2],[3]]}"#,
            br#"{"instances":[[[1,2]]]}"#,
            br#"{"instances":[{"a":[1]}]}"#,
            br#"{"instances":[[1]],"signature_name":"x"}"#,
            br#"{"instances":[[1]],"id":7}"#,
        ] {
            assert!(
                decode_flat(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn detection_needs_the_key() {
        assert!(looks_like_tfserving(br#"{"instances":[[1]]}"#));
        assert!(!looks_like_tfserving(
            br#"{"inputs":[],"x":"\"instances\""}"#
        ));
        assert!(!looks_like_tfserving(br#"{"inputs":[{"instances":[1]}]}"#));
        assert!(!looks_like_tfserving(br#"[{"instances":[1]}]"#));
        assert!(!looks_like_tfserving(br#"{"instances":[1],"#));
        // A null "instances" is still TF-Serving, so decode can say what is wrong with it.
        assert!(looks_like_tfserving(br#"{"instances":null}"#));
        assert!(matches!(
            decode(br#"{"instances":null}"#),
            Err(CodecError::Invalid(m)) if m.contains("must be an array")
        ));
    }
}
