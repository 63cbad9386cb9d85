//! Tensors as they travel through tensorq: a name, a shape and a flat row-major buffer of one
//! element type.
//!
//! Owns element types ([`DataType`]), the typed buffers ([`TensorData`]), shape checks, dtype
//! conversion rules and concatenation/splitting along the batch axis. It does not own wire formats
//! (see `codec`) nor models (see `model`).
//!
//! Conversion rules ([`TensorData::cast_to`]): integers widen freely (INT32 → INT64) and narrow
//! only when every value fits; integers become floats only when every value is exactly
//! representable (|v| ≤ 2^24 for FP32, ≤ 2^53 for FP64); FP32 → FP64 is exact; FP64 → FP32 rounds
//! to nearest (documented loss: JSON numbers arrive as FP64 and most models take FP32); floats
//! never become integers.

use crate::error::TensorError;

/// Most elements one tensor may hold (256 Mi elements, 1 GiB of FP32).
pub const MAX_ELEMENTS: usize = 1 << 28;
/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 16;

const F32_EXACT_INT: i64 = 1 << 24;
const F64_EXACT_INT: i64 = 1 << 53;

/// Element type, named as in the KServe Open Inference Protocol v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Fp32,
    Fp64,
    Int32,
    Int64,
}

impl DataType {
    /// The OIP v2 name (`"FP32"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
        }
    }

    /// Parses an OIP v2 name, case-insensitively.
    pub fn parse(name: &str) -> Result<DataType, TensorError> {
        match name.trim().to_ascii_uppercase().as_str() {
            "FP32" => Ok(DataType::Fp32),
            "FP64" => Ok(DataType::Fp64),
            "INT32" => Ok(DataType::Int32),
            "INT64" => Ok(DataType::Int64),
            _ => Err(TensorError::UnsupportedDataType(name.to_string())),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::Fp32 | DataType::Int32 => 4,
            DataType::Fp64 | DataType::Int64 => 8,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flat, row-major element buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
}

impl TensorData {
    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of `dtype` with room for `n` elements.
    pub fn with_capacity(dtype: DataType, n: usize) -> TensorData {
        match dtype {
            DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(n)),
            DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(n)),
            DataType::Int32 => TensorData::Int32(Vec::with_capacity(n)),
            DataType::Int64 => TensorData::Int64(Vec::with_capacity(n)),
        }
    }

    /// Converts to `target` following the module's conversion rules.
    pub fn cast_to(self, target: DataType) -> Result<TensorData, TensorError> {
        let from = self.dtype();
        if from == target {
            return Ok(self);
        }
        let lossy = || TensorError::LossyConversion { from, to: target };
        Ok(match (self, target) {
            (TensorData::Fp32(v), DataType::Fp64) => {
                TensorData::Fp64(v.into_iter().map(f64::from).collect())
            }
            (TensorData::Fp64(v), DataType::Fp32) => {
                TensorData::Fp32(v.into_iter().map(|x| x as f32).collect())
            }
            (TensorData::Int32(v), DataType::Int64) => {
                TensorData::Int64(v.into_iter().map(i64::from).collect())
            }
            (TensorData::Int64(v), DataType::Int32) => TensorData::Int32(
                v.into_iter()
                    .map(|x| i32::try_from(x).map_err(|_| lossy()))
                    .collect::<Result<_, _>>()?,
            ),
            (TensorData::Int32(v), DataType::Fp32) => TensorData::Fp32(
                v.into_iter()
                    .map(|x| {
                        exact_int(i64::from(x), F32_EXACT_INT)
                            .map(|x| x as f32)
                            .ok_or_else(lossy)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (TensorData::Int64(v), DataType::Fp32) => TensorData::Fp32(
                v.into_iter()
                    .map(|x| {
                        exact_int(x, F32_EXACT_INT)
                            .map(|x| x as f32)
                            .ok_or_else(lossy)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (TensorData::Int32(v), DataType::Fp64) => {
                TensorData::Fp64(v.into_iter().map(f64::from).collect())
            }
            (TensorData::Int64(v), DataType::Fp64) => TensorData::Fp64(
                v.into_iter()
                    .map(|x| {
                        exact_int(x, F64_EXACT_INT)
                            .map(|x| x as f64)
                            .ok_or_else(lossy)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(lossy()),
        })
    }

    /// Appends `other`, which must have the same dtype.
    pub fn extend(&mut self, other: &TensorData) -> Result<(), TensorError> {
        match (self, other) {
            (TensorData::Fp32(a), TensorData::Fp32(b)) => a.extend_from_slice(b),
            (TensorData::Fp64(a), TensorData::Fp64(b)) => a.extend_from_slice(b),
            (TensorData::Int32(a), TensorData::Int32(b)) => a.extend_from_slice(b),
            (TensorData::Int64(a), TensorData::Int64(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(TensorError::DataTypeMismatch {
                    expected: a.dtype(),
                    got: b.dtype(),
                })
            }
        }
        Ok(())
    }

    /// Elements `start..end`; `None` when the range is out of bounds.
    pub fn slice(&self, start: usize, end: usize) -> Option<TensorData> {
        Some(match self {
            TensorData::Fp32(v) => TensorData::Fp32(v.get(start..end)?.to_vec()),
            TensorData::Fp64(v) => TensorData::Fp64(v.get(start..end)?.to_vec()),
            TensorData::Int32(v) => TensorData::Int32(v.get(start..end)?.to_vec()),
            TensorData::Int64(v) => TensorData::Int64(v.get(start..end)?.to_vec()),
        })
    }

    /// Every element as f64 (exact for FP32/FP64/INT32, and INT64 up to 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            TensorData::Fp32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::Fp64(v) => v.clone(),
            TensorData::Int32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::Int64(v) => v.iter().map(|x| *x as f64).collect(),
        }
    }
}

fn exact_int(x: i64, bound: i64) -> Option<i64> {
    (-bound..=bound).contains(&x).then_some(x)
}

/// A named tensor: shape plus a buffer whose length is the product of the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking rank, size limits and that the buffer length matches the shape.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(TensorError::ShapeDataMismatch {
                shape,
                elements: data.len(),
            });
        }
        Ok(Tensor {
            name: name.into(),
            shape,
            data,
        })
    }

    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    /// Size of the first (batch) axis; 1 for a scalar.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per batch row.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Concatenates tensors along axis 0. All parts must share dtype and trailing dims.
    pub fn concat(name: &str, parts: &[&Tensor]) -> Result<Tensor, TensorError> {
        let first = parts.first().ok_or(TensorError::EmptyConcat)?;
        if first.shape.is_empty() {
            return Err(TensorError::ScalarBatch);
        }
        let tail = first.shape.get(1..).unwrap_or(&[]).to_vec();
        // One allocation of the final size: a batch buffer is large, and growing it by doubling
        // would copy it and touch fresh pages several times per batch.
        let total = parts.iter().map(|p| p.data.len()).sum();
        let mut data = TensorData::with_capacity(first.dtype(), total);
        let mut batch = 0usize;
        for part in parts {
            if part.shape.get(1..) != Some(tail.as_slice()) {
                return Err(TensorError::ConcatShapeMismatch {
                    expected: first.shape.clone(),
                    got: part.shape.clone(),
                });
            }
            data.extend(&part.data)?;
            batch += part.batch();
        }
        let mut shape = vec![batch];
        shape.extend(tail);
        Tensor::new(name, shape, data)
    }

    /// Splits along axis 0 into consecutive pieces of `sizes` rows; the sizes must add up to the
    /// batch.
    pub fn split(&self, sizes: &[usize]) -> Result<Vec<Tensor>, TensorError> {
        let total: usize = sizes.iter().sum();
        if self.shape.is_empty() || total != self.batch() {
            return Err(TensorError::SplitMismatch {
                shape: self.shape.clone(),
                rows: total,
            });
        }
        let row = self.row_len();
        let mut start = 0usize;
        let mut out = Vec::with_capacity(sizes.len());
        for &n in sizes {
            let end = start + n * row;
            let data = self
                .data
                .slice(start, end)
                .ok_or_else(|| TensorError::SplitMismatch {
                    shape: self.shape.clone(),
                    rows: total,
                })?;
            let mut shape = self.shape.clone();
            if let Some(first) = shape.first_mut() {
                *first = n;
            }
            out.push(Tensor::new(self.name.clone(), shape, data)?);
            start = end;
        }
        Ok(out)
    }
}

/// Product of `shape`, checked against [`MAX_RANK`] and [`MAX_ELEMENTS`].
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    if shape.len() > MAX_RANK {
        return Err(TensorError::RankTooLarge(shape.len()));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or_else(|| TensorError::TooLarge(shape.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_mismatched_buffer() {
        let err = Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 5])).unwrap_err();
        assert!(matches!(err, TensorError::ShapeDataMismatch { .. }));
    }

    #[test]
    fn new_rejects_overflowing_shape() {
        let err = Tensor::new("x", vec![usize::MAX, 2], TensorData::Fp32(vec![])).unwrap_err();
        assert!(matches!(err, TensorError::TooLarge(_)));
    }

    #[test]
    fn casts_follow_rules() {
        let ok = TensorData::Int64(vec![1, -(1 << 24)])
            .cast_to(DataType::Fp32)
            .unwrap();
        assert_eq!(ok, TensorData::Fp32(vec![1.0, -16_777_216.0]));
        assert!(TensorData::Int64(vec![(1 << 24) + 1])
            .cast_to(DataType::Fp32)
            .is_err());
        assert!(TensorData::Int64(vec![i64::from(i32::MAX) + 1])
            .cast_to(DataType::Int32)
            .is_err());
        assert!(TensorData::Fp32(vec![1.0])
            .cast_to(DataType::Int32)
            .is_err());
        assert_eq!(
            TensorData::Fp64(vec![0.1]).cast_to(DataType::Fp32).unwrap(),
            TensorData::Fp32(vec![0.1f32])
        );
    }

    #[test]
    fn concat_rejects_different_row_shapes() {
        let a = Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).unwrap();
        let b = Tensor::new("x", vec![1, 3], TensorData::Fp32(vec![1.0, 2.0, 3.0])).unwrap();
        assert!(Tensor::concat("x", &[&a, &b]).is_err());
    }

    /// Exhaustive over small row counts and widths (a property test without a generator crate).
    #[test]
    fn concat_then_split_round_trips() {
        for width in 1usize..6 {
            for parts_n in 1usize..6 {
                let rows: Vec<usize> = (0..parts_n).map(|i| 1 + (i * 7 + width) % 4).collect();
                let parts: Vec<Tensor> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| {
                        let data = (0..r * width).map(|j| (i * 100 + j) as f32).collect();
                        Tensor::new("x", vec![r, width], TensorData::Fp32(data)).unwrap()
                    })
                    .collect();
                let refs: Vec<&Tensor> = parts.iter().collect();
                let joined = Tensor::concat("x", &refs).unwrap();
                assert_eq!(joined.batch(), rows.iter().sum::<usize>());
                assert_eq!(joined.split(&rows).unwrap(), parts);
            }
        }
    }
}
