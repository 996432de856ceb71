//! Helpers shared by the integration tests (each test file includes this module and uses part
//! of it).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use affect_shared::metadata::{METADATA_KEY, ModelMetadata};
use affect_trainer::data::Batch;
use affect_trainer::train::source::{BatchSource, SourceError};
use tract_onnx::prelude::*;

/// Raises `stop` once `after` batches have been drawn from `inner` (like Ctrl-C during a step).
pub struct StopAfter {
    /// The batches.
    pub inner: Box<dyn BatchSource>,
    /// Position at which to raise the flag.
    pub after: u64,
    /// The trainer's stop flag.
    pub stop: Arc<AtomicBool>,
}

impl BatchSource for StopAfter {
    fn next_batch(&mut self) -> Result<Batch, SourceError> {
        let b = self.inner.next_batch()?;
        if self.inner.position() >= self.after {
            self.stop.store(true, Ordering::SeqCst);
        }
        Ok(b)
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    /// The trainer reads ahead for the landmark statistics and rewinds before the first step:
    /// only batches drawn after the rewind are training steps.
    fn seek(&mut self, position: u64) -> Result<(), SourceError> {
        self.stop.store(false, Ordering::SeqCst);
        self.inner.seek(position)
    }
}

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
