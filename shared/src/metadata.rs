//! The versioned JSON every exported model carries in its ONNX `metadata_props` under
//! [`METADATA_KEY`]. The runtime refuses a model whose metadata it does not understand.

use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;

/// Key under which the JSON is stored in ONNX `metadata_props`.
pub const METADATA_KEY: &str = "affect";

/// Major schema version this build writes and reads. A different major version is refused.
pub const SCHEMA_MAJOR: u32 = 1;

/// Minor schema version this build writes (additions that older readers may ignore).
pub const SCHEMA_MINOR: u32 = 0;

/// Recurrent cell of a CNN-RNN model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    /// GRU, ONNX `GRU` with `linear_before_reset=1`; state `h_in`/`h_out`.
    Gru,
    /// LSTM with peephole connections, ONNX `LSTM` with `P`; state `h_in`/`h_out`, `c_in`/`c_out`.
    Lstm,
}

/// Shape of the recurrent state the device carries from frame to frame, per face track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurrentLayout {
    /// Cell type.
    pub cell: Cell,
    /// Stacked layers.
    pub layers: u32,
    /// Hidden units per layer.
    pub hidden: u32,
}

/// Numeric precision of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32 weights and activations.
    Fp32,
    /// int8 QDQ (quantize/dequantize) on every Conv and Gemm; recurrent layers float.
    Int8,
}

/// CCC and MSE of one dimension on the validation set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DimensionScore {
    /// Concordance correlation coefficient.
    pub ccc: f64,
    /// Mean squared error.
    pub mse: f64,
}

/// Validation scores recorded at export.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Valence.
    pub valence: DimensionScore,
    /// Arousal.
    pub arousal: DimensionScore,
    /// Frames scored.
    pub frames: u64,
}

/// Everything a runtime needs to know to serve an exported model, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    /// Schema version `"MAJOR.MINOR"`.
    pub schema: String,
    /// How a face becomes the `face` (and `landmarks`) inputs; applied by the runtime.
    pub preprocess: Preprocess,
    /// `None` for CNN-only models (no state inputs).
    pub recurrent: Option<RecurrentLayout>,
    /// Precision of this file.
    pub precision: Precision,
    /// Backbone name (`vgg16`, `vgg_face`, `resnet50`, …).
    pub backbone: String,
    /// SHA-256 over the training data's annotation files.
    pub dataset_fingerprint: String,
    /// Validation scores, when the run had a validation split.
    pub validation: Option<Validation>,
    /// Source revision of the trainer that wrote the model.
    pub git_revision: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The full training configuration, as saved with the run.
    pub training_config: serde_json::Value,
}

/// Why metadata was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Not JSON, or a field is missing / has the wrong type (serde names the field).
    #[error("model metadata: {0}")]
    Json(#[from] serde_json::Error),
    /// The `schema` field is missing or not `"MAJOR.MINOR"`.
    #[error("model metadata: `schema` must be a \"MAJOR.MINOR\" string, found {0}")]
    BadSchema(String),
    /// Written by an incompatible version.
    #[error(
        "model metadata schema {found} is not supported: this runtime reads schema {SCHEMA_MAJOR}.x; \
         re-export the model with a matching affect-train or upgrade the runtime"
    )]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// Fields contradict each other or the preprocessing is unusable.
    #[error("model metadata: {0}")]
    Inconsistent(String),
}

impl ModelMetadata {
    /// The schema string this build writes.
    pub fn current_schema() -> String {
        format!("{SCHEMA_MAJOR}.{SCHEMA_MINOR}")
    }

    /// Parses and validates metadata; refuses other major versions, naming the version found.
    pub fn from_json(json: &str) -> Result<Self, MetadataError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let schema = value
            .get("schema")
            .ok_or_else(|| MetadataError::BadSchema("nothing".into()))?;
        let text = schema
            .as_str()
            .ok_or_else(|| MetadataError::BadSchema(schema.to_string()))?;
        let major = text
            .split_once('.')
            .and_then(|(major, minor)| minor.parse::<u32>().ok().and(major.parse::<u32>().ok()))
            .ok_or_else(|| MetadataError::BadSchema(format!("{text:?}")))?;
        if major != SCHEMA_MAJOR {
            return Err(MetadataError::UnsupportedVersion {
                found: text.to_owned(),
            });
        }
        let metadata: Self = serde_json::from_value(value)?;
        metadata.validate()?;
        Ok(metadata)
    }

    /// Serialises to the JSON stored under [`METADATA_KEY`].
    pub fn to_json(&self) -> Result<String, MetadataError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Checks internal consistency (usable preprocessing, sane recurrent layout).
    pub fn validate(&self) -> Result<(), MetadataError> {
        self.preprocess
            .validate()
            .map_err(|e| MetadataError::Inconsistent(format!("preprocess: {e}")))?;
        if let Some(r) = self.recurrent
            && (r.layers == 0 || r.hidden == 0)
        {
            return Err(MetadataError::Inconsistent(format!(
                "recurrent: layers ({}) and hidden ({}) must be positive",
                r.layers, r.hidden
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> ModelMetadata {
        ModelMetadata {
            schema: ModelMetadata::current_schema(),
            preprocess: Preprocess {
                landmarks: true,
                ..Preprocess::vgg_face(96)
            },
            recurrent: Some(RecurrentLayout {
                cell: Cell::Gru,
                layers: 2,
                hidden: 128,
            }),
            precision: Precision::Fp32,
            backbone: "vgg_face".into(),
            dataset_fingerprint: "ab12".into(),
            validation: Some(Validation {
                valence: DimensionScore {
                    ccc: 0.57,
                    mse: 0.08,
                },
                arousal: DimensionScore {
                    ccc: 0.43,
                    mse: 0.06,
                },
                frames: 1000,
            }),
            git_revision: "deadbeef".into(),
            created: "2026-11-24T00:00:00Z".into(),
            training_config: serde_json::json!({"lr": 0.001}),
        }
    }

    #[test]
    fn round_trips() {
        let m = example();
        assert_eq!(ModelMetadata::from_json(&m.to_json().unwrap()).unwrap(), m);
    }

    #[test]
    fn refuses_other_major_versions_and_names_them() {
        let json = example()
            .to_json()
            .unwrap()
            .replace("\"schema\":\"1.0\"", "\"schema\":\"2.3\"");
        let err = ModelMetadata::from_json(&json).unwrap_err().to_string();
        assert!(
            err.contains("2.3") && err.contains("reads schema 1.x"),
            "{err}"
        );
        let newer_minor = example()
            .to_json()
            .unwrap()
            .replace("\"schema\":\"1.0\"", "\"schema\":\"1.7\"");
        assert!(ModelMetadata::from_json(&newer_minor).is_ok());
    }

    #[test]
    fn names_missing_and_bad_fields() {
        let mut v: serde_json::Value = serde_json::from_str(&example().to_json().unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("precision");
        let err = ModelMetadata::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("precision"), "{err}");
        let bad = example()
            .to_json()
            .unwrap()
            .replace("\"schema\":\"1.0\"", "\"schema\":1");
        assert!(matches!(
            ModelMetadata::from_json(&bad),
            Err(MetadataError::BadSchema(_))
        ));
        let mut broken = example();
        broken.preprocess.size = 0;
        let err = ModelMetadata::from_json(&broken.to_json().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("size"), "{err}");
        assert!(ModelMetadata::from_json("{").is_err());
    }
}
