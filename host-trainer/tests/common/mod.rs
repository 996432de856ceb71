//! Helpers shared by the integration tests (each test file includes this module and uses part
//! of it).
#![allow(dead_code)]

use std::path::Path;

use affect_shared::metadata::{METADATA_KEY, ModelMetadata};
use tract_onnx::prelude::*;

/// Operator types of a graph's nodes, in order.
pub fn op_types(model: &tract_onnx::pb::ModelProto) -> Vec<&str> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect()
}

/// The `affect` metadata of an ONNX file, read the way the edge runtime's loader sees it
/// (through tract's `metadata_props`).
pub fn exported_metadata(path: &Path) -> ModelMetadata {
    let loaded = tract_onnx::onnx().model_for_path(path).unwrap();
    let json = loaded.properties[&format!("onnx.metadata_props.{METADATA_KEY}")]
        .to_plain_array_view::<String>()
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .clone();
    ModelMetadata::from_json(&json).unwrap()
}
