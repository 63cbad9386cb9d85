//! Raw little-endian tensors (`application/octet-stream`).
//!
//! Request: the body is one tensor's elements, row-major, little-endian; headers give
//! `x-tensor-shape` (comma-separated dims, e.g. `"2,8"`) and `x-tensor-dtype` (`FP32`, `FP64`,
//! `INT32`, `INT64`), and optionally `x-tensor-name` (default: the model's only input) and
//! `x-request-id`. Response: the body is the first output tensor (or the one named by the
//! request's `x-tensor-output` header, which the decoder turns into the output selection) with the
//! same three headers describing it. Owns only this format.

use crate::codec::{Encoded, Headers, CONTENT_TYPE_RAW};
use crate::error::{CodecError, TensorError};
use crate::request::{InferRequest, InferResponse, WireFormat};
use crate::tensor::{DataType, Tensor, TensorData, MAX_RANK};

pub const HEADER_SHAPE: &str = "x-tensor-shape";
pub const HEADER_DTYPE: &str = "x-tensor-dtype";
pub const HEADER_NAME: &str = "x-tensor-name";
pub const HEADER_OUTPUT: &str = "x-tensor-output";
pub const HEADER_REQUEST_ID: &str = "x-request-id";

pub fn decode(headers: &impl Headers, body: &[u8]) -> Result<InferRequest, CodecError> {
    let shape_text = headers
        .get(HEADER_SHAPE)
        .ok_or(CodecError::MissingHeader(HEADER_SHAPE))?;
    let shape = parse_shape(&shape_text)?;
    let dtype_text = headers
        .get(HEADER_DTYPE)
        .ok_or(CodecError::MissingHeader(HEADER_DTYPE))?;
    let dtype = DataType::parse(&dtype_text).map_err(|e| CodecError::BadHeader {
        name: HEADER_DTYPE,
        reason: e.to_string(),
    })?;
    let name = headers.get(HEADER_NAME).unwrap_or_default();
    let wrap = |source| CodecError::Tensor {
        name: name.clone(),
        source,
    };
    let data = bytes_to_data(body, dtype).map_err(wrap)?;
    let tensor = Tensor::new(name.clone(), shape, data).map_err(wrap)?;
    Ok(InferRequest {
        id: headers.get(HEADER_REQUEST_ID),
        inputs: vec![tensor],
        outputs: headers.get(HEADER_OUTPUT).map(|o| vec![o]),
        format: WireFormat::Raw,
    })
}

fn parse_shape(text: &str) -> Result<Vec<usize>, CodecError> {
    let bad = |reason: String| CodecError::BadHeader {
        name: HEADER_SHAPE,
        reason,
    };
    let text = text.trim().trim_start_matches('[').trim_end_matches(']');
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let dims = text
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("{d:?} is not a dimension")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if dims.len() > MAX_RANK {
        return Err(bad(format!("rank {} exceeds {MAX_RANK}", dims.len())));
    }
    Ok(dims)
}

/// Reinterprets little-endian bytes as elements of `dtype`.
pub fn bytes_to_data(bytes: &[u8], dtype: DataType) -> Result<TensorData, TensorError> {
    let size = dtype.size();
    if !bytes.len().is_multiple_of(size) {
        return Err(TensorError::MisalignedBytes {
            bytes: bytes.len(),
            dtype,
        });
    }
    fn conv<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .filter_map(|c| <[u8; N]>::try_from(c).ok().map(f))
            .collect()
    }
    Ok(match dtype {
        DataType::Fp32 => TensorData::Fp32(conv(bytes, f32::from_le_bytes)),
        DataType::Fp64 => TensorData::Fp64(conv(bytes, f64::from_le_bytes)),
        DataType::Int32 => TensorData::Int32(conv(bytes, i32::from_le_bytes)),
        DataType::Int64 => TensorData::Int64(conv(bytes, i64::from_le_bytes)),
    })
}

/// Writes elements as little-endian bytes.
pub fn data_to_bytes(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Fp64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Int32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn shape_header(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn encode_response(response: &InferResponse) -> Result<Encoded, CodecError> {
    let t = response
        .outputs
        .first()
        .ok_or_else(|| CodecError::Encode("response has no output".into()))?;
    let mut headers = vec![
        (HEADER_SHAPE.to_string(), shape_header(&t.shape)),
        (HEADER_DTYPE.to_string(), t.dtype().as_str().to_string()),
        (HEADER_NAME.to_string(), t.name.clone()),
    ];
    if let Some(id) = &response.id {
        headers.push((HEADER_REQUEST_ID.to_string(), id.clone()));
    }
    Ok(Encoded {
        content_type: CONTENT_TYPE_RAW,
        headers,
        body: data_to_bytes(&t.data),
    })
}

/// Decodes a raw response (for clients and tests).
pub fn decode_response(headers: &impl Headers, body: &[u8]) -> Result<Tensor, CodecError> {
    let req = decode(headers, body)?;
    req.inputs
        .into_iter()
        .next()
        .ok_or_else(|| CodecError::Invalid("no tensor".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn headers(shape: &str, dtype: &str) -> HashMap<String, String> {
        HashMap::from([
            (HEADER_SHAPE.to_string(), shape.to_string()),
            (HEADER_DTYPE.to_string(), dtype.to_string()),
        ])
    }

    #[test]
    fn header_errors_are_clear() {
        let body = [0u8; 8];
        assert!(matches!(
            decode(&crate::codec::NoHeaders, &body),
            Err(CodecError::MissingHeader(HEADER_SHAPE))
        ));
        assert!(matches!(
            decode(&headers("2,x", "FP32"), &body),
            Err(CodecError::BadHeader { .. })
        ));
        assert!(matches!(
            decode(&headers("2", "FP16"), &body),
            Err(CodecError::BadHeader { .. })
        ));
        assert!(decode(&headers("3", "FP32"), &body).is_err());
        assert!(decode(&headers("1", "FP32"), &[0u8; 7]).is_err());
    }

    #[test]
    fn f32_round_trip() {
        for (rows, cols) in [(1usize, 1usize), (2, 3), (3, 4), (1, 8)] {
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32 * -0.37 + 1e-3).collect();
            let t = Tensor::new("out", vec![rows, cols], TensorData::Fp32(data)).unwrap();
            let resp = InferResponse {
                model_name: "m".into(),
                model_version: "1".into(),
                id: Some("i".into()),
                outputs: vec![t.clone()],
            };
            let enc = encode_response(&resp).unwrap();
            let map: HashMap<String, String> = enc.headers.into_iter().collect();
            assert_eq!(decode_response(&map, &enc.body).unwrap(), t);
        }
    }

    #[test]
    fn every_dtype_round_trips_through_bytes() {
        let cases = [
            TensorData::Fp32(vec![f32::MIN, -0.0, 1.5, f32::MAX]),
            TensorData::Fp64(vec![f64::MIN, 0.1, f64::MAX]),
            TensorData::Int32(vec![i32::MIN, -1, 0, i32::MAX]),
            TensorData::Int64(vec![i64::MIN, -1, 0, i64::MAX]),
        ];
        for data in cases {
            let bytes = data_to_bytes(&data);
            assert_eq!(bytes.len(), data.len() * data.dtype().size());
            assert_eq!(bytes_to_data(&bytes, data.dtype()).unwrap(), data);
        }
    }
}
