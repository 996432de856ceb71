//! Helpers shared by the integration tests (each test file includes this module).

use std::path::Path;

use affect_shared::metadata::{METADATA_KEY, ModelMetadata};
use tract_onnx::prelude::*;

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
