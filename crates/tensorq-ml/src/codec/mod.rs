//! Wire codecs: bytes plus content type plus headers in, [`InferRequest`] out, and back again for
//! responses and errors.
//!
//! Owns the dispatch by content type and the per-format modules:
//!
//! | content type | keys / headers | module |
//! |---|---|---|
//! | `application/json` | `"inputs"` (KServe OIP v2) | [`oip_json`] |
//! | `application/json` | `"instances"` (TF-Serving rows) | [`tfserving`] |
//! | `application/x-protobuf`, `application/protobuf` | OIP v2 `ModelInferRequest` | [`protobuf`] |
//! | `application/octet-stream` | `x-tensor-shape`, `x-tensor-dtype` | [`raw`] |
//!
//! A missing content type is treated as `application/json`. Content-type parameters
//! (`; charset=utf-8`) are ignored. XML is deliberately not supported: see the crate README for
//! the reasoning; an XML body is answered with [`CodecError::UnsupportedContentType`].
//!
//! This module knows nothing of AMQP: headers are read through the [`Headers`] trait, which a
//! closure or a map implements, and written as plain `(name, value)` string pairs.

pub mod oip_json;
pub mod protobuf;
pub mod raw;
pub mod rows_scan;
pub mod tfserving;

use crate::error::CodecError;
use crate::request::{InferRequest, InferResponse, WireFormat};
use std::collections::HashMap;

/// Largest body any codec accepts (64 MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
pub const CONTENT_TYPE_RAW: &str = "application/octet-stream";

/// Read access to message headers, independent of any AMQP crate.
pub trait Headers {
    /// The header's value rendered as a string, if present.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Headers for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Headers for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// No headers at all.
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// An encoded reply: what to put in the message's content type, headers and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The content type without parameters, lower-cased; JSON when there is none.
fn essence(content_type: Option<&str>) -> String {
    content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| CONTENT_TYPE_JSON.to_string())
}

fn is_json(essence: &str) -> bool {
    matches!(essence, "application/json" | "")
}

/// Picks the wire format for a content type and body (JSON is split by the keys present).
pub fn detect_format(content_type: Option<&str>, body: &[u8]) -> Result<WireFormat, CodecError> {
    let essence = essence(content_type);
    match essence.as_str() {
        e if is_json(e) => {
            if tfserving::looks_like_tfserving(body) {
                Ok(WireFormat::TfServing)
            } else {
                Ok(WireFormat::OipJson)
            }
        }
        "application/x-protobuf" | "application/protobuf" | "application/vnd.google.protobuf" => {
            Ok(WireFormat::Protobuf)
        }
        "application/octet-stream" => Ok(WireFormat::Raw),
        _ => Err(CodecError::UnsupportedContentType(essence)),
    }
}

/// Decodes a request body according to its content type.
pub fn decode_request(
    content_type: Option<&str>,
    headers: &impl Headers,
    body: &[u8],
) -> Result<InferRequest, CodecError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(CodecError::BodyTooLarge {
            bytes: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    // The common TF-Serving body (flat numeric rows) is recognised by parsing it, so it is not
    // scanned once more to detect its format.
    if is_json(&essence(content_type)) {
        if let Some(request) = tfserving::decode_flat(body) {
            return Ok(request);
        }
    }
    match detect_format(content_type, body)? {
        WireFormat::OipJson => oip_json::decode(body),
        // decode_flat already declined it above.
        WireFormat::TfServing => tfserving::decode_general(body),
        WireFormat::Protobuf => protobuf::decode(body),
        WireFormat::Raw => raw::decode(headers, body),
    }
}

/// Encodes a response in `format` (normally the format its request came in).
pub fn encode_response(
    format: WireFormat,
    response: &InferResponse,
) -> Result<Encoded, CodecError> {
    match format {
        WireFormat::OipJson => oip_json::encode_response(response),
        WireFormat::TfServing => tfserving::encode_response(response),
        WireFormat::Protobuf => protobuf::encode_response(response),
        WireFormat::Raw => raw::encode_response(response),
    }
}

/// Encodes an error reply. Errors are always JSON `{"error": "...", "id": ...}`, whatever the
/// request format (OIP v2 and TF-Serving both use that shape; the protobuf and raw paths have no
/// error message of their own), so a client can always read them.
pub fn encode_error(id: Option<&str>, message: &str) -> Encoded {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "error".into(),
        serde_json::Value::String(message.to_string()),
    );
    if let Some(id) = id {
        doc.insert("id".into(), serde_json::Value::String(id.to_string()));
    }
    Encoded {
        content_type: CONTENT_TYPE_JSON,
        headers: Vec::new(),
        body: serde_json::Value::Object(doc).to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(
            detect_format(Some("application/json; charset=utf-8"), br#"{"inputs":[]}"#).unwrap(),
            WireFormat::OipJson
        );
        assert_eq!(
            detect_format(None, br#"{"instances":[[1]]}"#).unwrap(),
            WireFormat::TfServing
        );
        assert_eq!(
            detect_format(Some("application/protobuf"), b"").unwrap(),
            WireFormat::Protobuf
        );
        assert_eq!(
            detect_format(Some("Application/Octet-Stream"), b"").unwrap(),
            WireFormat::Raw
        );
        assert!(matches!(
            detect_format(Some("application/xml"), b"<a/>"),
            Err(CodecError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn error_is_json() {
        let e = encode_error(Some("r1"), "bad \"shape\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["error"], "bad \"shape\"");
        assert_eq!(v["id"], "r1");
    }

    #[test]
    fn oversized_body_is_rejected() {
        let body = vec![0u8; MAX_BODY_BYTES + 1];
        assert!(matches!(
            decode_request(Some(CONTENT_TYPE_RAW), &NoHeaders, &body),
            Err(CodecError::BodyTooLarge { .. })
        ));
    }
}
