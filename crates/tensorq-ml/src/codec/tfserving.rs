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
    if let [only] = response.outputs.as_slice() {
        return Ok(Encoded {
            content_type: CONTENT_TYPE_JSON,
            headers: Vec::new(),
            body: encode_single(only)?,
        });
    }
    encode_general(response)
}

/// Any number of outputs, through a `serde_json::Value` tree.
fn encode_general(response: &InferResponse) -> Result<Encoded, CodecError> {
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

/// `{"predictions": [row, ...]}` for a single output, written straight out: the same text as
/// the general path's `Value` tree (numbers formatted alike), without building the tree.
fn encode_single(t: &Tensor) -> Result<Vec<u8>, CodecError> {
    if t.shape.is_empty() || t.data.len() != t.shape.iter().product::<usize>() {
        return Err(CodecError::Encode(format!(
            "output {:?} of shape {:?} cannot be split into rows",
            t.name, t.shape
        )));
    }
    let mut out = Vec::with_capacity(24 + t.data.len() * 12);
    out.extend_from_slice(b"{\"predictions\":");
    let mut next = 0;
    write_nested(&mut out, &t.shape, &t.data, &mut next)?;
    out.push(b'}');
    Ok(out)
}

/// Writes `data[*next..]` as arrays nested by `dims`, advancing `next` past what it wrote.
fn write_nested(
    out: &mut Vec<u8>,
    dims: &[usize],
    data: &TensorData,
    next: &mut usize,
) -> Result<(), CodecError> {
    let Some((&n, rest)) = dims.split_first() else {
        let at = *next;
        *next += 1;
        return match data {
            TensorData::Fp32(v) => write_f32(out, v.get(at).copied()),
            TensorData::Fp64(v) => write_json(out, v.get(at)),
            TensorData::Int32(v) => write_json(out, v.get(at)),
            TensorData::Int64(v) => write_json(out, v.get(at)),
        };
    };
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        write_nested(out, rest, data, next)?;
    }
    out.push(b']');
    Ok(())
}

/// One number as serde_json writes it (a non-finite f64 as `null`, like the `Value` tree).
fn write_json<T: serde::Serialize>(out: &mut Vec<u8>, x: Option<&T>) -> Result<(), CodecError> {
    let x = x.ok_or_else(|| CodecError::Encode("output is short".into()))?;
    serde_json::to_writer(out, x).map_err(|e| CodecError::Encode(e.to_string()))
}

/// An f32 as its shortest round-tripping decimal, the text the general path writes (the f64 of
/// that decimal, as serde_json formats f64); `null` when not finite.
fn write_f32(out: &mut Vec<u8>, x: Option<f32>) -> Result<(), CodecError> {
    let x = x.ok_or_else(|| CodecError::Encode("output is short".into()))?;
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    // serde_json's formatter writes an f32 as it would the f64 of the same shortest digits,
    // except below 1e-5 and from 1e13 on, where the two choose between plain and exponent
    // notation differently: those take the long way.
    let magnitude = x.abs();
    if magnitude == 0.0 || (1e-5..1e13).contains(&magnitude) {
        out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
        return Ok(());
    }
    let wide = shortest_f64(x).ok_or_else(|| CodecError::Encode(format!("{x} unreadable")))?;
    write_json(out, Some(&wide))
}

/// The f64 of an f32's shortest round-tripping decimal (so JSON shows `0.1`, not the widened
/// f32's `0.10000000149011612`).
fn shortest_f64(x: f32) -> Option<f64> {
    zmij::Buffer::new().format_finite(x).parse().ok()
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
                Some(*x)
                    .filter(|x| x.is_finite())
                    .and_then(shortest_f64)
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

    #[test]
    fn single_outputs_are_written_as_the_value_tree_would_be() {
        let tiny = f32::from_bits(1);
        let cases = vec![
            Tensor::new(
                "p",
                vec![2, 3],
                TensorData::Fp32(vec![0.1, -2.5, 1e-7, 3e20, tiny, f32::MAX]),
            ),
            Tensor::new(
                "p",
                vec![3],
                TensorData::Fp32(vec![f32::NAN, f32::INFINITY, -0.0]),
            ),
            Tensor::new(
                "p",
                vec![6],
                TensorData::Fp32(vec![1e-5, 9.99e-6, -1e-6, 1e13, 9.999_999e12, -1e16]),
            ),
            Tensor::new(
                "p",
                vec![1, 2, 2],
                TensorData::Fp32(vec![0.895_724_4, 1.0, 123_456.79, 1e-3]),
            ),
            Tensor::new(
                "p",
                vec![2, 2],
                TensorData::Fp64(vec![0.1, 1e300, f64::NAN, -0.0]),
            ),
            Tensor::new("p", vec![2, 2], TensorData::Int64(vec![1, -2, i64::MAX, 0])),
            Tensor::new("p", vec![1, 2], TensorData::Int32(vec![7, i32::MIN])),
            Tensor::new("p", vec![0, 4], TensorData::Fp32(vec![])),
            Tensor::new("p", vec![2, 0], TensorData::Fp32(vec![])),
        ];
        for t in cases {
            let response = InferResponse {
                model_name: "m".into(),
                model_version: "1".into(),
                id: None,
                outputs: vec![t.unwrap()],
            };
            let fast = encode_response(&response).unwrap();
            let general = encode_general(&response).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast.body),
                String::from_utf8_lossy(&general.body)
            );
            assert_eq!(fast, general);
        }
        // And f32 values spread over every exponent.
        let mut bits = 0x9E37_79B9u32;
        let spread: Vec<f32> = (0..20_000)
            .map(|_| {
                bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                f32::from_bits(bits)
            })
            .collect();
        let response = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: vec![Tensor::new("p", vec![spread.len()], TensorData::Fp32(spread)).unwrap()],
        };
        let fast = encode_response(&response).unwrap().body;
        let general = encode_general(&response).unwrap().body;
        let (fast, general) = (
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&general),
        );
        for (a, b) in fast.split(',').zip(general.split(',')) {
            assert_eq!(a, b);
        }
        assert_eq!(fast, general);
    }
}
