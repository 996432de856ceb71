//! The versioned JSON every exported model carries in its ONNX `metadata_props` under
//! [`METADATA_KEY`]. The runtime refuses a model whose metadata it does not understand.
//!
//! INTERFACE (fixed by the skeleton; the implementation fills the bodies and may add items).

use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;

/// Key under which the JSON is stored in ONNX `metadata_props`.
pub const METADATA_KEY: &str = "affect";

/// Major schema version this build writes and reads. A different major version is refused.
pub const SCHEMA_MAJOR: u32 = 1;
