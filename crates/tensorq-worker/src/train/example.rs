//! Decoding labelled examples from message bodies.
//!
//! Owns the two accepted wire formats and their validation; every failure is a human-readable
//! reason (it becomes the `x-tensorq-error` header on `<queue>.errors`). It does not own AMQP,
//! durability or training.
//!
//! Accepted bodies (UTF-8 JSON):
//!
//! * plain: `{"features": [f32; inputs], "label": 0 | 1}` (`label` may also be `true`/`false`);
//! * Open Inference Protocol v2 request with a label input:
//!   `{"inputs": [{"name": "features", "shape": [B, inputs], "datatype": "FP32", "data": [...]},
//!                {"name": "label", "shape": [B], "datatype": "INT64", "data": [...]}]}` —
//!   `data` may be flat or nested; one message may carry a batch of `B` examples.

use serde_json::Value;

/// One decoded example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Features, `inputs` long, all finite.
    pub features: Vec<f32>,
    /// 0.0 or 1.0.
    pub label: f32,
}

fn label_value(v: &Value) -> Result<f32, String> {
    match v {
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Ok(0.0),
            Some(1.0) => Ok(1.0),
            _ => Err(format!("label must be 0 or 1, got {n}")),
        },
        other => Err(format!("label must be 0 or 1, got {other}")),
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn features_from(values: &[&Value], inputs: usize) -> Result<Vec<Vec<f32>>, String> {
    if inputs == 0 || !values.len().is_multiple_of(inputs) || values.is_empty() {
        return Err(format!(
            "features: {} values is not a whole number of {inputs}-feature rows",
            values.len()
        ));
    }
    let mut flat = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let x = v
            .as_f64()
            .ok_or_else(|| format!("features[{i}] is not a number: {v}"))?;
        let x = x as f32;
        if !x.is_finite() {
            return Err(format!("features[{i}] is not a finite f32"));
        }
        flat.push(x);
    }
    Ok(flat.chunks(inputs).map(<[f32]>::to_vec).collect())
}

/// Decodes a message body into one or more examples of `inputs` features.
pub fn decode(body: &[u8], inputs: usize) -> Result<Vec<Example>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "body must be a JSON object".to_string())?;
    if let Some(oip_inputs) = obj.get("inputs") {
        return decode_oip(oip_inputs, inputs);
    }
    let features = obj
        .get("features")
        .ok_or_else(|| "missing \"features\" (or OIP v2 \"inputs\")".to_string())?;
    let label = obj
        .get("label")
        .ok_or_else(|| "missing \"label\"".to_string())?;
    let Value::Array(items) = features else {
        return Err("\"features\" must be an array of numbers".into());
    };
    if items.len() != inputs {
        return Err(format!(
            "features has {} values, the model takes {inputs}",
            items.len()
        ));
    }
    let values: Vec<&Value> = items.iter().collect();
    let mut rows = features_from(&values, inputs)?;
    let features = rows.pop().unwrap_or_default();
    Ok(vec![Example {
        features,
        label: label_value(label)?,
    }])
}

fn decode_oip(inputs_value: &Value, inputs: usize) -> Result<Vec<Example>, String> {
    let list = inputs_value
        .as_array()
        .ok_or_else(|| "OIP \"inputs\" must be an array".to_string())?;
    let find = |name: &str| {
        list.iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("OIP request has no input named \"{name}\""))
    };
    let (feat, lab) = (find("features")?, find("label")?);
    let data = |t: &Value, name: &str| -> Result<Vec<Value>, String> {
        let d = t
            .get("data")
            .ok_or_else(|| format!("OIP input \"{name}\" has no \"data\""))?;
        let mut out = Vec::new();
        flatten(d, &mut out);
        Ok(out.into_iter().cloned().collect())
    };
    let fdata = data(feat, "features")?;
    let ldata = data(lab, "label")?;
    if let Some(shape) = feat.get("shape").and_then(Value::as_array) {
        let dims: Option<Vec<u64>> = shape.iter().map(Value::as_u64).collect();
        let dims = dims.ok_or_else(|| "OIP \"features\" shape must be integers".to_string())?;
        let product: u64 = dims.iter().product();
        if product != fdata.len() as u64 || dims.last().copied() != Some(inputs as u64) {
            return Err(format!(
                "OIP \"features\" shape {dims:?} does not match {} values of {inputs} features",
                fdata.len()
            ));
        }
    }
    let refs: Vec<&Value> = fdata.iter().collect();
    let rows = features_from(&refs, inputs)?;
    if ldata.len() != rows.len() {
        return Err(format!(
            "OIP has {} feature rows but {} labels",
            rows.len(),
            ldata.len()
        ));
    }
    rows.into_iter()
        .zip(&ldata)
        .map(|(features, l)| {
            Ok(Example {
                features,
                label: label_value(l)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json() {
        let ex = decode(br#"{"features":[1,2,3],"label":1}"#, 3).unwrap();
        assert_eq!(
            ex,
            vec![Example {
                features: vec![1.0, 2.0, 3.0],
                label: 1.0
            }]
        );
        let ex = decode(br#"{"features":[1,2,3],"label":false}"#, 3).unwrap();
        assert_eq!(ex[0].label, 0.0);
    }

    #[test]
    fn oip_batch_with_nested_data() {
        let body = br#"{"inputs":[
            {"name":"features","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]},
            {"name":"label","shape":[2],"datatype":"INT64","data":[0,1]}]}"#;
        let ex = decode(body, 2).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[1],
            Example {
                features: vec![3.0, 4.0],
                label: 1.0
            }
        );
    }

    #[test]
    fn malformed_bodies_have_reasons() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "invalid JSON"),
            (b"[1,2]", "JSON object"),
            (br#"{"label":1}"#, "features"),
            (br#"{"features":[1,2,3]}"#, "label"),
            (br#"{"features":[1,2],"label":1}"#, "model takes 3"),
            (br#"{"features":[1,"x",3],"label":1}"#, "features[1]"),
            (br#"{"features":[1,2,3],"label":2}"#, "0 or 1"),
            (br#"{"features":[1,2,3],"label":1e99}"#, "0 or 1"),
            (
                br#"{"inputs":[{"name":"features","shape":[1,3],"data":[1,2,3]}]}"#,
                "label",
            ),
        ];
        for (body, want) in cases {
            let err = decode(body, 3).unwrap_err();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = br#"{"features":[1e300,2,3],"label":1}"#;
        assert!(decode(huge, 3).unwrap_err().contains("finite"));
        let bad_shape = br#"{"inputs":[{"name":"features","shape":[2,3],"data":[1,2,3]},
            {"name":"label","shape":[1],"data":[1]}]}"#;
        assert!(decode(bad_shape, 3).unwrap_err().contains("shape"));
    }
}
