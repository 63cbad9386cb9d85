//! ONNX export of a trained MLP, for the tract-based serving worker.
//!
//! Owns building the `ModelProto` (with the prost structs `tract_onnx::pb` exposes; no protoc),
//! encoding it, and publishing versioned files. The graph is, per dense layer `k`:
//! `Gemm(h_{k-1}, W_k [in, out], b_k [out])` followed by `Relu` / `Sigmoid` / `Tanh` (nothing for
//! `linear`). The input is `"input"`, f32 `[N, inputs]` with a symbolic batch dim `N`; the output
//! is `"output"`, f32 `[N, 1]`. Opset 13, IR version 7.
//!
//! Publishing: `models/model-v{N}.onnx` (N = 1 + the highest existing version) is written
//! atomically, then `models/LATEST` (containing the file name and a newline) is written
//! atomically last, so a watcher that reads `LATEST` always finds a complete model. It does not
//! own serving or the weights' origin.

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

use crate::atomic::write_atomic;
use crate::model::{check_weights, DenseWeights, ModelError};
use crate::spec::{Activation, ModelSpec};

/// Name of the graph input.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output.
pub const OUTPUT_NAME: &str = "output";
/// Name of the symbolic batch dimension.
pub const BATCH_DIM: &str = "N";
/// ONNX opset used.
pub const OPSET: i64 = 13;
/// File naming the newest export, written last.
pub const LATEST_FILE: &str = "LATEST";

/// Errors exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The weights do not fit the spec.
    #[error(transparent)]
    Weights(#[from] ModelError),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn value_info(name: &str, width: usize) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        Dimension {
                            value: Some(Dim::DimParam(BATCH_DIM.to_string())),
                            ..Default::default()
                        },
                        Dimension {
                            value: Some(Dim::DimValue(width as i64)),
                            ..Default::default()
                        },
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn initializer(name: String, dims: Vec<i64>, values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims,
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, name: String, inputs: Vec<String>, output: String) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name,
        input: inputs,
        output: vec![output],
        ..Default::default()
    }
}

/// Builds the ONNX model for `weights` (checked against `spec`).
pub fn build_model(
    spec: &ModelSpec,
    weights: &[DenseWeights],
) -> Result<pb::ModelProto, ExportError> {
    check_weights(spec, weights)?;
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut current = INPUT_NAME.to_string();
    let last = weights.len().saturating_sub(1);
    for (k, w) in weights.iter().enumerate() {
        let (wn, bn) = (format!("dense{k}.weight"), format!("dense{k}.bias"));
        inits.push(initializer(
            wn.clone(),
            vec![w.inputs as i64, w.units as i64],
            &w.weight,
        ));
        inits.push(initializer(bn.clone(), vec![w.units as i64], &w.bias));
        let act_op = match w.activation {
            Activation::Relu => Some("Relu"),
            Activation::Sigmoid => Some("Sigmoid"),
            Activation::Tanh => Some("Tanh"),
            Activation::Linear => None,
        };
        let gemm_out = if k == last && act_op.is_none() {
            OUTPUT_NAME.to_string()
        } else {
            format!("dense{k}.linear")
        };
        nodes.push(node(
            "Gemm",
            format!("dense{k}.gemm"),
            vec![current, wn, bn],
            gemm_out.clone(),
        ));
        current = gemm_out;
        if let Some(op) = act_op {
            let out = if k == last {
                OUTPUT_NAME.to_string()
            } else {
                format!("dense{k}.out")
            };
            nodes.push(node(
                op,
                format!("dense{k}.{}", op.to_lowercase()),
                vec![current],
                out.clone(),
            ));
            current = out;
        }
    }
    let out_width = weights.last().map_or(1, |w| w.units);
    Ok(pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "tensorq-train".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: Some(pb::GraphProto {
            name: "tensorq_mlp".to_string(),
            node: nodes,
            initializer: inits,
            input: vec![value_info(INPUT_NAME, spec.inputs)],
            output: vec![value_info(OUTPUT_NAME, out_width)],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Encodes the model to ONNX protobuf bytes.
pub fn to_onnx_bytes(spec: &ModelSpec, weights: &[DenseWeights]) -> Result<Vec<u8>, ExportError> {
    Ok(build_model(spec, weights)?.encode_to_vec())
}

/// Writes the model to `path` atomically.
pub fn export_onnx(
    spec: &ModelSpec,
    weights: &[DenseWeights],
    path: &Path,
) -> Result<(), ExportError> {
    let bytes = to_onnx_bytes(spec, weights)?;
    write_atomic(path, &bytes).map_err(|source| ExportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Highest `N` among `dir/model-v{N}.onnx`, 0 when there is none.
pub fn latest_version(dir: &Path) -> Result<u64, ExportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(ExportError::Io {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("model-v")?
                .strip_suffix(".onnx")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0))
}

/// Publishes the next version into `dir`: `model-v{N}.onnx` then `LATEST`. Returns the path.
pub fn publish_onnx(
    spec: &ModelSpec,
    weights: &[DenseWeights],
    dir: &Path,
) -> Result<PathBuf, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let version = latest_version(dir)? + 1;
    let name = format!("model-v{version}.onnx");
    let path = dir.join(&name);
    export_onnx(spec, weights, &path)?;
    let latest = dir.join(LATEST_FILE);
    write_atomic(&latest, format!("{name}\n").as_bytes()).map_err(|source| ExportError::Io {
        path: latest.display().to_string(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::generate;
    use crate::trainer::Trainer;
    use tract_onnx::prelude::*;

    fn tract_predict(path: &Path, rows: &[f32], width: usize) -> Vec<f32> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let n = rows.len() / width;
        let input = tract_ndarray::Array2::from_shape_vec((n, width), rows.to_vec())
            .unwrap()
            .into_tensor();
        let out = model.run(tvec!(input.into())).unwrap();
        let view = out[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(view.shape(), &[n, 1]);
        view.iter().copied().collect()
    }

    #[test]
    fn exported_model_runs_in_tract_and_matches_burn() {
        let spec = ModelSpec::seed_mlp();
        let data = generate(500, 21);
        let mut t = Trainer::new(spec.clone());
        t.fit(&data, 1, 32, |_| {}).unwrap();
        let dir = std::env::temp_dir().join(format!("tq-onnx-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let p1 = publish_onnx(&spec, &t.weights().unwrap(), &dir).unwrap();
        assert!(p1.ends_with("model-v1.onnx"));
        // Two batch sizes through the same file: the batch dim is dynamic.
        for n in [1usize, 37] {
            let rows = &data.features()[..n * 8];
            let burn = t.predict(rows).unwrap();
            let tract = tract_predict(&p1, rows, 8);
            for (a, b) in burn.iter().zip(&tract) {
                assert!((a - b).abs() <= 1e-5, "burn {a} vs tract {b}");
            }
        }
        let p2 = publish_onnx(&spec, &t.weights().unwrap(), &dir).unwrap();
        assert!(p2.ends_with("model-v2.onnx"));
        assert_eq!(
            std::fs::read_to_string(dir.join(LATEST_FILE)).unwrap(),
            "model-v2.onnx\n"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn graph_has_named_io_and_expected_ops() {
        let spec = ModelSpec::seed_mlp();
        let w = crate::model::glorot_weights(&spec);
        let m = build_model(&spec, &w).unwrap();
        let g = m.graph.unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Gemm", "Relu", "Gemm", "Sigmoid"]);
        assert_eq!(g.input[0].name, INPUT_NAME);
        assert_eq!(g.output[0].name, OUTPUT_NAME);
        assert_eq!(g.initializer.len(), 4);
    }
}
