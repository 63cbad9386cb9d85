//! ONNX models run through `tract-onnx`: load and optimise once, describe the signature, validate
//! requests against it, and run single or batched inference.
//!
//! Owns [`OnnxModel`], its [`TensorSpec`] signature and [`Prepared`] (a request checked and
//! converted to the model's input order and dtypes). Batching here is mechanical: concatenate
//! prepared requests along axis 0, run once, split outputs back by row counts. Deciding *when* to
//! batch, queues and replies belong to the serving worker, not here.

use crate::error::ModelError;
use crate::request::{InferRequest, InferResponse, WireFormat};
use crate::tensor::{DataType, Tensor, TensorData};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TDim, TValue,
    Tensor as TractTensor, TypedRunnableModel,
};

/// Most rows (summed over a batch) one inference may carry.
pub const MAX_BATCH_ROWS: usize = 4096;

/// One dimension of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A symbolic dimension (e.g. tf2onnx's `unk__6` batch), free at run time.
    Dynamic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(s) => write!(f, "{s}"),
        }
    }
}

/// Name, dtype and shape of one model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<Dim>,
}

impl TensorSpec {
    fn shape_text(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// A request checked against a model: inputs in model order and dtype, and the output selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub id: Option<String>,
    pub format: WireFormat,
    pub inputs: Vec<Tensor>,
    /// Indices into the model's outputs, in the order requested.
    pub outputs: Vec<usize>,
    /// Rows along the batch axis.
    pub rows: usize,
}

/// A loaded, optimised ONNX model.
pub struct OnnxModel {
    name: String,
    version: String,
    path: PathBuf,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    batchable: bool,
    plan: Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

fn dtype_of(dt: DatumType) -> Option<DataType> {
    match dt {
        DatumType::F32 => Some(DataType::Fp32),
        DatumType::F64 => Some(DataType::Fp64),
        DatumType::I32 => Some(DataType::Int32),
        DatumType::I64 => Some(DataType::Int64),
        _ => None,
    }
}

fn dims_of(dims: &[TDim]) -> Vec<Dim> {
    dims.iter()
        .map(|d| match d.as_i64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) => Dim::Fixed(n),
            None => Dim::Dynamic(d.to_string()),
        })
        .collect()
}

impl OnnxModel {
    /// Loads and optimises the ONNX file at `path`. `name` and `version` are what replies report.
    pub fn load(
        path: impl AsRef<Path>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Result<OnnxModel, ModelError> {
        let path = path.as_ref();
        let load_err = |reason: String| ModelError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        let typed = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .map_err(|e| load_err(format!("{e:#}")))?;
        let describe = |outlets: &[tract_onnx::prelude::OutletId],
                        input: bool|
         -> Result<Vec<TensorSpec>, ModelError> {
            outlets
                .iter()
                .enumerate()
                .map(|(ix, outlet)| {
                    let fact = if input {
                        typed.input_fact(ix)
                    } else {
                        typed.output_fact(ix)
                    }
                    .map_err(|e| load_err(format!("{e:#}")))?;
                    let name = typed
                        .outlet_label(*outlet)
                        .map(str::to_string)
                        .or_else(|| typed.nodes().get(outlet.node).map(|n| n.name.clone()))
                        .unwrap_or_default();
                    let dtype = dtype_of(fact.datum_type).ok_or_else(|| {
                        ModelError::UnsupportedSignature(format!(
                            "{name:?} has dtype {:?}",
                            fact.datum_type
                        ))
                    })?;
                    Ok(TensorSpec {
                        name,
                        dtype,
                        dims: dims_of(fact.shape.dims()),
                    })
                })
                .collect()
        };
        let input_outlets = typed
            .input_outlets()
            .map_err(|e| load_err(format!("{e:#}")))?
            .to_vec();
        let output_outlets = typed
            .output_outlets()
            .map_err(|e| load_err(format!("{e:#}")))?
            .to_vec();
        let inputs = describe(&input_outlets, true)?;
        let outputs = describe(&output_outlets, false)?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(load_err("model has no inputs or no outputs".into()));
        }
        let batchable = inputs
            .iter()
            .all(|s| matches!(s.dims.first(), Some(Dim::Dynamic(_))));
        let plan = typed
            .into_runnable()
            .map_err(|e| load_err(format!("{e:#}")))?;
        Ok(OnnxModel {
            name: name.into(),
            version: version.into(),
            path: path.to_path_buf(),
            inputs,
            outputs,
            batchable,
            plan,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// True when every input has a dynamic first axis, so requests can be concatenated.
    pub fn batchable(&self) -> bool {
        self.batchable
    }

    /// Checks a request against the signature and converts it to model order and dtypes.
    pub fn prepare(&self, request: InferRequest) -> Result<Prepared, ModelError> {
        let mut given = request.inputs;
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let pos = given
                .iter()
                .position(|t| t.name == spec.name)
                .or_else(|| {
                    // Unnamed (TF-Serving rows, raw bodies) or sole input under another name.
                    (self.inputs.len() == 1 && given.len() == 1).then_some(0)
                })
                .ok_or_else(|| ModelError::MissingInput(spec.name.clone()))?;
            let t = given.swap_remove(pos);
            inputs.push(check(spec, t)?);
        }
        if let Some(extra) = given.first() {
            return Err(ModelError::UnknownInput(extra.name.clone()));
        }
        let rows: Vec<usize> = inputs.iter().map(Tensor::batch).collect();
        let first = rows.first().copied().unwrap_or(1);
        if rows.iter().any(|r| *r != first) {
            return Err(ModelError::BatchDisagree(rows));
        }
        let outputs = match request.outputs {
            None => (0..self.outputs.len()).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    self.outputs
                        .iter()
                        .position(|s| &s.name == n)
                        .ok_or_else(|| ModelError::UnknownOutput(n.clone()))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Prepared {
            id: request.id,
            format: request.format,
            inputs,
            outputs,
            rows: first,
        })
    }

    /// Runs one already-prepared request.
    pub fn infer_prepared(&self, request: &Prepared) -> Result<InferResponse, ModelError> {
        self.infer_batch(std::slice::from_ref(request))
            .and_then(|mut v| {
                v.pop()
                    .ok_or_else(|| ModelError::Inference("no result".into()))
            })
    }

    /// Validates and runs one request.
    pub fn infer(&self, request: InferRequest) -> Result<InferResponse, ModelError> {
        let p = self.prepare(request)?;
        self.infer_prepared(&p)
    }

    /// Runs several prepared requests as one inference (concatenated along axis 0) and splits the
    /// outputs back, one response per request, in order. A model without a dynamic batch axis
    /// runs them one by one. Fails as a whole if the inference fails; the caller may then retry
    /// one by one to isolate a bad request.
    pub fn infer_batch(&self, requests: &[Prepared]) -> Result<Vec<InferResponse>, ModelError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if !self.batchable || requests.len() == 1 {
            return requests
                .iter()
                .map(|r| {
                    let outs = self.run(r.inputs.clone())?;
                    Ok(self.response(r, outs))
                })
                .collect();
        }
        let total: usize = requests.iter().map(|r| r.rows).sum();
        if total > MAX_BATCH_ROWS {
            return Err(ModelError::Batch {
                name: "*".into(),
                batch: total,
                limit: MAX_BATCH_ROWS,
            });
        }
        let mut joined = Vec::with_capacity(self.inputs.len());
        for (ix, spec) in self.inputs.iter().enumerate() {
            let parts: Vec<&Tensor> = requests.iter().filter_map(|r| r.inputs.get(ix)).collect();
            joined.push(Tensor::concat(&spec.name, &parts).map_err(|source| {
                ModelError::Tensor {
                    name: spec.name.clone(),
                    source,
                }
            })?);
        }
        let outs = self.run(joined)?;
        let sizes: Vec<usize> = requests.iter().map(|r| r.rows).collect();
        let mut per_output = Vec::with_capacity(outs.len());
        for t in &outs {
            per_output.push(t.split(&sizes).map_err(|e| {
                ModelError::Inference(format!(
                    "output {:?} cannot be split per request: {e}",
                    t.name
                ))
            })?);
        }
        // Each request takes its piece of every output, moved rather than copied.
        let mut pieces: Vec<std::vec::IntoIter<Tensor>> =
            per_output.into_iter().map(Vec::into_iter).collect();
        let mut responses = Vec::with_capacity(requests.len());
        for r in requests {
            let outs: Vec<Tensor> = pieces.iter_mut().filter_map(Iterator::next).collect();
            responses.push(self.response(r, outs));
        }
        Ok(responses)
    }

    fn response(&self, request: &Prepared, outs: Vec<Tensor>) -> InferResponse {
        let outputs = request
            .outputs
            .iter()
            .filter_map(|ix| outs.get(*ix).cloned())
            .collect();
        InferResponse {
            model_name: self.name.clone(),
            model_version: self.version.clone(),
            id: request.id.clone(),
            outputs,
        }
    }

    /// Runs the plan on tensors already in model order and dtype.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError> {
        let inference =
            |e: tract_onnx::prelude::TractError| ModelError::Inference(format!("{e:#}"));
        let values = inputs
            .into_iter()
            .map(|t| to_tract(&t).map(|x| x.into_tvalue()))
            .collect::<Result<_, _>>()
            .map_err(inference)?;
        let outs = self.plan.run(values).map_err(inference)?;
        outs.iter()
            .zip(self.outputs.iter())
            .map(|(v, spec)| from_tract(&spec.name, v).map_err(inference))
            .collect()
    }
}

fn check(spec: &TensorSpec, t: Tensor) -> Result<Tensor, ModelError> {
    if t.shape.len() != spec.dims.len() {
        return Err(ModelError::Rank {
            name: spec.name.clone(),
            expected: spec.dims.len(),
            spec: spec.shape_text(),
            got: t.shape,
        });
    }
    for (axis, (want, got)) in spec.dims.iter().zip(t.shape.iter()).enumerate() {
        if let Dim::Fixed(n) = want {
            if n != got {
                return Err(ModelError::Dim {
                    name: spec.name.clone(),
                    axis,
                    expected: *n,
                    spec: spec.shape_text(),
                    got: t.shape.clone(),
                });
            }
        }
    }
    let batch = t.batch();
    if batch == 0 || batch > MAX_BATCH_ROWS {
        return Err(ModelError::Batch {
            name: spec.name.clone(),
            batch,
            limit: MAX_BATCH_ROWS,
        });
    }
    let Tensor { shape, data, .. } = t;
    let data = data
        .cast_to(spec.dtype)
        .map_err(|source| ModelError::Tensor {
            name: spec.name.clone(),
            source,
        })?;
    Tensor::new(spec.name.clone(), shape, data).map_err(|source| ModelError::Tensor {
        name: spec.name.clone(),
        source,
    })
}

fn to_tract(t: &Tensor) -> tract_onnx::prelude::TractResult<TractTensor> {
    match &t.data {
        TensorData::Fp32(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::Fp64(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::Int32(v) => TractTensor::from_shape(&t.shape, v),
        TensorData::Int64(v) => TractTensor::from_shape(&t.shape, v),
    }
}

fn from_tract(name: &str, v: &TValue) -> tract_onnx::prelude::TractResult<Tensor> {
    let shape = v.shape().to_vec();
    let view = v.try_as_plain_ram()?;
    let data = match v.datum_type() {
        DatumType::F32 => TensorData::Fp32(view.as_slice::<f32>()?.to_vec()),
        DatumType::F64 => TensorData::Fp64(view.as_slice::<f64>()?.to_vec()),
        DatumType::I32 => TensorData::Int32(view.as_slice::<i32>()?.to_vec()),
        DatumType::I64 => TensorData::Int64(view.as_slice::<i64>()?.to_vec()),
        other => {
            let cast = v.cast_to_dt(DatumType::F32)?;
            let view = cast.try_as_plain_ram()?;
            tracing::debug!(?other, "output cast to FP32");
            TensorData::Fp32(view.as_slice::<f32>()?.to_vec())
        }
    };
    Tensor::new(name, shape, data).map_err(|e| tract_onnx::prelude::TractError::msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_request, NoHeaders};

    fn fixture(name: &str) -> PathBuf {
        // The manifest directory as cargo gives it to the running test (a test binary cargo reuses
        // from another checkout of the same sources still finds this checkout's fixtures), else as
        // it was at compile time.
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .join("../../fixtures/models")
            .join(name)
    }

    #[test]
    fn missing_file_names_path_and_reason() {
        let err = OnnxModel::load("/nonexistent/m.onnx", "m", "1").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/m.onnx") && text.contains("no such file"),
            "{text}"
        );
    }

    #[test]
    fn garbage_file_is_a_load_error() {
        let dir = std::env::temp_dir().join(format!("tensorq-ml-garbage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.onnx");
        std::fs::write(&p, b"this is not onnx").unwrap();
        let err = OnnxModel::load(&p, "m", "1").unwrap_err();
        assert!(matches!(err, ModelError::Load { .. }));
        assert!(err.to_string().contains("bad.onnx"));
    }

    #[test]
    fn seed_mlp_signature_and_shape_errors() {
        let m = OnnxModel::load(fixture("seed_mlp.onnx"), "seed_mlp", "1").unwrap();
        assert_eq!(m.inputs().len(), 1);
        assert_eq!(m.inputs()[0].dims.get(1), Some(&Dim::Fixed(8)));
        assert!(m.batchable());
        let req = |body: &str| {
            decode_request(Some("application/json"), &NoHeaders, body.as_bytes()).unwrap()
        };
        let wrong_width = req(
            r#"{"inputs":[{"name":"input","shape":[1,7],"datatype":"FP32","data":[1,2,3,4,5,6,7]}]}"#,
        );
        assert!(matches!(
            m.prepare(wrong_width),
            Err(ModelError::Dim {
                axis: 1,
                expected: 8,
                ..
            })
        ));
        let wrong_rank = req(
            r#"{"inputs":[{"name":"input","shape":[8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#,
        );
        assert!(matches!(
            m.prepare(wrong_rank),
            Err(ModelError::Rank { .. })
        ));
        let lossy = req(
            r#"{"inputs":[{"name":"input","shape":[1,8],"datatype":"INT64","data":[1,2,3,4,5,6,7,99999999]}]}"#,
        );
        assert!(matches!(m.prepare(lossy), Err(ModelError::Tensor { .. })));
        let unknown_out = req(
            r#"{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}],"outputs":[{"name":"nope"}]}"#,
        );
        assert!(matches!(
            m.prepare(unknown_out),
            Err(ModelError::UnknownOutput(_))
        ));
    }
}
