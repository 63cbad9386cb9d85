//! Checks tract's outputs on the committed fixtures against onnxruntime's (from
//! `scripts/make-fixtures`), within the tolerance recorded in each expected file (1e-5), through
//! every codec and through batched inference.

use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use tensorq_ml::codec::{self, protobuf, raw, NoHeaders};
use tensorq_ml::{OnnxModel, Tensor, TensorData, WireFormat};

fn dir() -> PathBuf {
    // The manifest directory as cargo gives it to the running test (a test binary cargo reuses
    // from another checkout of the same sources still finds this checkout's fixtures), else as
    // it was at compile time.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../../fixtures/models")
}

struct Expected {
    input: Tensor,
    output: Tensor,
    tolerance: f64,
}

fn expected(stem: &str) -> Expected {
    let text = std::fs::read_to_string(dir().join(format!("{stem}.expected.json"))).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let tensor = |t: &Value| {
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let data: Vec<f32> = t["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        Tensor::new(t["name"].as_str().unwrap(), shape, TensorData::Fp32(data)).unwrap()
    };
    Expected {
        input: tensor(&v["inputs"][0]),
        output: tensor(&v["outputs"][0]),
        tolerance: v["tolerance"].as_f64().unwrap(),
    }
}

fn assert_close(got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "shape of {}", want.name);
    let (g, w) = (got.data.to_f64_vec(), want.data.to_f64_vec());
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        assert!(
            (a - b).abs() <= tol,
            "element {i}: tract {a} vs onnxruntime {b}"
        );
    }
}

fn oip_body(id: &str, t: &Tensor) -> Vec<u8> {
    let data = t.data.to_f64_vec();
    serde_json::json!({"id": id, "inputs": [{"name": t.name, "shape": t.shape, "datatype": "FP32", "data": data}]})
        .to_string()
        .into_bytes()
}

fn check_model(stem: &str) {
    let model = OnnxModel::load(dir().join(format!("{stem}.onnx")), stem, "1").unwrap();
    let exp = expected(stem);
    assert_eq!(
        model.outputs()[0].name,
        exp.output.name,
        "output name from the model"
    );

    // OIP v2 JSON, whole batch in one request.
    let req = codec::decode_request(
        Some("application/json"),
        &NoHeaders,
        &oip_body("a", &exp.input),
    )
    .unwrap();
    let resp = model.infer(req).unwrap();
    assert_eq!(resp.id.as_deref(), Some("a"));
    assert_close(&resp.outputs[0], &exp.output, exp.tolerance);
    let enc = codec::encode_response(WireFormat::OipJson, &resp).unwrap();
    let v: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(v["model_name"], stem);

    // Raw little-endian.
    let headers: HashMap<String, String> = HashMap::from([
        (
            "x-tensor-shape".into(),
            exp.input
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("x-tensor-dtype".into(), "FP32".into()),
    ]);
    let body = raw::data_to_bytes(&exp.input.data);
    let req = codec::decode_request(Some("application/octet-stream"), &headers, &body).unwrap();
    let resp = model.infer(req).unwrap();
    let enc = codec::encode_response(WireFormat::Raw, &resp).unwrap();
    let back: HashMap<String, String> = enc.headers.into_iter().collect();
    assert_close(
        &raw::decode_response(&back, &enc.body).unwrap(),
        &exp.output,
        exp.tolerance,
    );

    // Protobuf.
    let msg = protobuf::ModelInferRequest {
        id: "p".into(),
        inputs: vec![protobuf::InferInputTensor {
            name: exp.input.name.clone(),
            datatype: "FP32".into(),
            shape: exp.input.shape.iter().map(|d| *d as i64).collect(),
            contents: Some(protobuf::InferTensorContents {
                fp32_contents: match &exp.input.data {
                    TensorData::Fp32(v) => v.clone(),
                    _ => unreachable!(),
                },
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    let req = codec::decode_request(
        Some("application/x-protobuf"),
        &NoHeaders,
        &prost::Message::encode_to_vec(&msg),
    )
    .unwrap();
    let resp = model.infer(req).unwrap();
    let enc = codec::encode_response(WireFormat::Protobuf, &resp).unwrap();
    let decoded = protobuf::decode_response(&enc.body).unwrap();
    assert_close(&decoded.outputs[0], &exp.output, exp.tolerance);

    // Batched: one request per row, concatenated, split back.
    let rows = exp.input.split(&vec![1; exp.input.batch()]).unwrap();
    let prepared: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let req =
                codec::decode_request(None, &NoHeaders, &oip_body(&i.to_string(), r)).unwrap();
            model.prepare(req).unwrap()
        })
        .collect();
    let responses = model.infer_batch(&prepared).unwrap();
    let want_rows = exp.output.split(&vec![1; exp.output.batch()]).unwrap();
    assert_eq!(responses.len(), want_rows.len());
    for (i, (resp, want)) in responses.iter().zip(want_rows.iter()).enumerate() {
        assert_eq!(resp.id.as_deref(), Some(i.to_string().as_str()));
        assert_close(&resp.outputs[0], want, exp.tolerance);
    }
}

#[test]
fn seed_mlp_matches_onnxruntime() {
    check_model("seed_mlp");
}

#[test]
fn mlp784_matches_onnxruntime() {
    check_model("mlp784");
}

#[test]
fn tfserving_rows_match_onnxruntime() {
    let model = OnnxModel::load(dir().join("seed_mlp.onnx"), "seed_mlp", "1").unwrap();
    let exp = expected("seed_mlp");
    let data = exp.input.data.to_f64_vec();
    let rows: Vec<Vec<f64>> = data.chunks(8).map(|c| c.to_vec()).collect();
    let body = serde_json::json!({"instances": rows}).to_string();
    let req = codec::decode_request(Some("application/json"), &NoHeaders, body.as_bytes()).unwrap();
    assert_eq!(req.format, WireFormat::TfServing);
    let resp = model.infer(req).unwrap();
    assert_close(&resp.outputs[0], &exp.output, exp.tolerance);
    let enc = codec::encode_response(WireFormat::TfServing, &resp).unwrap();
    let v: Value = serde_json::from_slice(&enc.body).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 16);
    let want = exp.output.data.to_f64_vec();
    for (p, w) in preds.iter().zip(want.iter()) {
        assert!((p[0].as_f64().unwrap() - w).abs() <= 1e-5);
    }
}
