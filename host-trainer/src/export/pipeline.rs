//! `affect-train export` as a library call: a trained run → `model.onnx` (fp32), optionally
//! `model.int8.onnx` (QDQ, calibrated on training frames), and `model.export.json` (the proof).
//!
//! Calibration clips come from the training split, the proof clip from the held-out split, both
//! through the trainer's [`VideoSource`] so exactly the training preprocessing applies.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use affect_shared::metadata::{
    METADATA_KEY, ModelMetadata, Precision, RecurrentLayout, Validation,
};
use tract_onnx::pb;

use super::calibrate::{CalibrateError, CalibrationClip, RangeMethod, calibrate};
use super::network::{NetworkExportError, Parameters, streaming_graph};
use super::onnx::encode;
use super::ort_oracle::OrtOracle;
use super::proof::{Bounds, ExportReport, ExportedFiles, LabelledClip, ProofError, prove};
use super::quantize::{QuantizeError, quantize_qdq};
use crate::data::Batch;
use crate::model::{Model, Outputs};
use crate::train::config::TrainConfig;
use crate::train::source::VideoSource;

/// What to export and how to check it.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// fp32 model path (`model.onnx`); the int8 model and the report go beside it.
    pub out: PathBuf,
    /// Also write the int8 QDQ model.
    pub int8: bool,
    /// Training frames to calibrate activation ranges on.
    pub calibration_frames: usize,
    /// Calibration statistic.
    pub range: RangeMethod,
    /// Frames of the held-out clip the proof runs (from its first frame).
    pub proof_frames: usize,
    /// Acceptance bounds.
    pub bounds: Bounds,
}

/// Provenance recorded in the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The training split's fingerprint (`Dataset::fingerprint`: names, labels, faces,
    /// landmarks).
    pub dataset_fingerprint: String,
    /// Best validation score of the run, if it validated.
    pub validation: Option<Validation>,
    /// Source revision of this trainer.
    pub git_revision: String,
}

/// Why an export failed before its proof could be judged.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The network cannot be written as ONNX.
    #[error(transparent)]
    Network(#[from] NetworkExportError),
    /// Calibration failed.
    #[error("int8 calibration: {0}")]
    Calibrate(#[from] CalibrateError),
    /// Quantization failed.
    #[error("int8 quantization: {0}")]
    Quantize(#[from] QuantizeError),
    /// The proof could not run.
    #[error("export proof: {0}")]
    Proof(#[from] ProofError),
    /// The metadata is invalid.
    #[error(transparent)]
    Metadata(#[from] affect_shared::metadata::MetadataError),
    /// The data source failed.
    #[error("{split} data: {message}")]
    Data {
        /// Which split.
        split: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Writing an output failed.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Paths an export writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPaths {
    /// fp32 model.
    pub fp32: PathBuf,
    /// int8 model (`<stem>.int8.onnx`).
    pub int8: PathBuf,
    /// Proof report (`<stem>.export.json`).
    pub report: PathBuf,
}

impl ExportPaths {
    /// The files for fp32 model path `out`.
    pub fn for_model(out: &Path) -> Self {
        let stem = out
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        let dir = out.parent().unwrap_or(Path::new(""));
        Self {
            fp32: out.to_owned(),
            int8: dir.join(format!("{stem}.int8.onnx")),
            report: dir.join(format!("{stem}.export.json")),
        }
    }
}

/// Writes `bytes` to `path`, creating its directory.
fn write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

/// Current UTC time as RFC 3339 (`2026-11-25T21:30:00Z`).
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The source revision this trainer was built from (`git rev-parse HEAD` at build time, with
/// `-dirty` for uncommitted changes), or `unknown` when not built from a git checkout.
pub fn git_revision() -> String {
    env!("AFFECT_GIT_REVISION").to_owned()
}

/// The metadata of an exported model of `config`.
pub fn metadata(
    config: &TrainConfig,
    provenance: &Provenance,
    precision: Precision,
) -> Result<ModelMetadata, ExportError> {
    let network = &config.network;
    let nets = match network.outputs {
        Outputs::Joint => 1,
        Outputs::PerDimension => 2,
    };
    let metadata = ModelMetadata {
        schema: ModelMetadata::current_schema(),
        preprocess: config.preprocess(),
        recurrent: network.is_recurrent().then_some(RecurrentLayout {
            cell: network.cell,
            layers: network.layers * nets,
            hidden: network.hidden,
        }),
        precision,
        backbone: network.backbone.name().into(),
        dataset_fingerprint: provenance.dataset_fingerprint.clone(),
        validation: provenance.validation,
        git_revision: provenance.git_revision.clone(),
        created: rfc3339_now(),
        training_config: serde_json::to_value(config).unwrap_or(serde_json::Value::Null),
    };
    metadata.validate()?;
    Ok(metadata)
}

fn set_metadata(model: &mut pb::ModelProto, json: String) {
    model.metadata_props.retain(|p| p.key != METADATA_KEY);
    model.metadata_props.push(pb::StringStringEntryProto {
        key: METADATA_KEY.into(),
        value: json,
    });
}

fn data_error(
    split: &'static str,
) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> ExportError {
    move |e| ExportError::Data {
        split,
        message: e.to_string(),
    }
}

/// Training frames for calibration: consecutive clips (at most 100 frames each, one per video,
/// videos in order, cycling to later clips) until `frames` frames are collected.
pub fn calibration_clips(
    source: &dyn VideoSource,
    frames: usize,
) -> Result<Vec<CalibrationClip>, ExportError> {
    const CLIP: usize = 100;
    let err = data_error("training");
    let videos = source.videos();
    let lengths = videos
        .iter()
        .map(|v| source.frames(v).map_err(&err))
        .collect::<Result<Vec<_>, _>>()?;
    let mut clips = Vec::new();
    let mut total = 0;
    let mut round = 0;
    while total < frames {
        let mut any = false;
        for (video, &length) in videos.iter().zip(&lengths) {
            let first = round * CLIP;
            if total >= frames || first >= length {
                continue;
            }
            let count = CLIP.min(length - first).min(frames - total);
            let batch = source.clip(video, first, count).map_err(&err)?;
            total += batch.steps;
            any = true;
            clips.push(CalibrationClip {
                faces: batch.faces,
                landmarks: Some(batch.landmarks),
                frames: batch.steps,
                present: batch.present,
            });
        }
        if !any {
            break;
        }
        round += 1;
    }
    if clips.is_empty() {
        return Err(ExportError::Data {
            split: "training",
            message: "no frames to calibrate on".into(),
        });
    }
    Ok(clips)
}

fn labelled(batch: Batch, video: &str) -> LabelledClip {
    LabelledClip {
        video: video.to_owned(),
        frames: batch.steps,
        size: batch.size,
        faces: batch.faces,
        landmarks: batch.landmarks,
        labels: batch.labels,
        mask: batch.mask,
        present: batch.present,
    }
}

/// The held-out clip: the first `frames` frames of the held-out video with the most labelled
/// frames among the first ones (so its CCC is meaningful).
pub fn proof_clip(source: &dyn VideoSource, frames: usize) -> Result<LabelledClip, ExportError> {
    let err = data_error("held-out");
    let mut best: Option<LabelledClip> = None;
    for video in source.videos() {
        let count = source.frames(&video).map_err(&err)?.min(frames);
        if count == 0 {
            continue;
        }
        let clip = labelled(source.clip(&video, 0, count).map_err(&err)?, &video);
        let labelled_frames = |c: &LabelledClip| c.mask.iter().filter(|m| **m > 0.5).count();
        if best
            .as_ref()
            .is_none_or(|b| labelled_frames(&clip) > labelled_frames(b))
        {
            let full = labelled_frames(&clip) == frames;
            best = Some(clip);
            if full {
                break;
            }
        }
    }
    best.ok_or_else(|| ExportError::Data {
        split: "held-out",
        message: "no video with frames".into(),
    })
}

/// Exports `model` (trained with `config`): writes the fp32 model, the int8 model when asked,
/// and the proof report; returns the report (its `failures` say whether the export is proven).
pub fn export(
    config: &TrainConfig,
    model: &Model,
    provenance: &Provenance,
    training: &dyn VideoSource,
    held_out: &dyn VideoSource,
    options: &ExportOptions,
) -> Result<(ExportPaths, ExportReport), ExportError> {
    let paths = ExportPaths::for_model(&options.out);
    let params = Parameters::from_model(model)?;
    let fp32_json = metadata(config, provenance, Precision::Fp32)?.to_json()?;
    let fp32 = streaming_graph(&config.network, &params, &fp32_json)?;
    write(&paths.fp32, &encode(&fp32))?;
    tracing::info!("wrote {}", paths.fp32.display());

    let int8 = if options.int8 {
        let clips = calibration_clips(training, options.calibration_frames)?;
        let ranges = calibrate(&fp32, &clips, options.range)?;
        let mut int8 = quantize_qdq(&fp32, &ranges)?;
        set_metadata(
            &mut int8,
            metadata(config, provenance, Precision::Int8)?.to_json()?,
        );
        write(&paths.int8, &encode(&int8))?;
        tracing::info!(
            "wrote {} (calibrated on {} frames)",
            paths.int8.display(),
            clips.iter().map(|c| c.frames).sum::<usize>()
        );
        Some(int8)
    } else {
        None
    };

    let clip = proof_clip(held_out, options.proof_frames)?;
    let oracle = OrtOracle::from_env();
    let report = prove(
        model,
        ExportedFiles {
            fp32: (&fp32, &paths.fp32),
            int8: int8.as_ref().map(|m| (m, paths.int8.as_path())),
        },
        &clip,
        oracle.as_ref().map_err(Clone::clone),
        options.bounds,
    )?;
    let json = serde_json::to_string_pretty(&report).expect("plain data serialises");
    write(&paths.report, json.as_bytes())?;
    Ok((paths, report))
}
