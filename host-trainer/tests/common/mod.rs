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

/// Whether this run is in CI (`CI` set to `true` or `1`), where a missing oracle is a failure.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// The value of the environment variable `var` that an oracle check (`what`) needs. When it is
/// unset: panics in CI, so the check can never pass silently there; elsewhere prints why `what`
/// is skipped and returns `None`.
pub fn oracle_env(var: &str, what: &str) -> Option<std::ffi::OsString> {
    if let Some(value) = std::env::var_os(var) {
        return Some(value);
    }
    let reason = format!("{var} is unset (run `. tests/setup.sh` first): {what} cannot run");
    assert!(!in_ci(), "{reason}; CI must run every oracle check");
    eprintln!("SKIPPED: {reason}");
    None
}
