//! The paper's comparisons (Tables 4–9) as training runs at equal budget, summarised in Markdown
//! tables: backbone, landmarks or not (scenario 1 vs 2), CNN vs CNN-RNN, GRU vs LSTM, recurrent
//! units × layers, CCC vs MSE loss.
//!
//! Every variant is the base configuration plus a few `key = value` overrides, trained for the
//! same number of steps on the same frames per step (a CNN batch holds as many frames as a
//! CNN-RNN batch: `sequences × sequence_length`), validated on the same split.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use affect_shared::metadata::Validation;
use serde::Serialize;

use crate::train::config::TrainConfig;
use crate::train::memory::{MemoryBatches, MemoryDataset};
use crate::train::{TrainError, TrainOptions, train};

/// One configuration to train.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Short identifier (run directory name).
    pub id: String,
    /// Overrides on top of the base configuration.
    pub overrides: Vec<(String, toml::Value)>,
}

fn variant(id: &str, sets: &[(&str, toml::Value)]) -> Variant {
    Variant {
        id: id.to_owned(),
        overrides: sets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

fn s(v: &str) -> toml::Value {
    toml::Value::String(v.to_owned())
}

fn b(v: bool) -> toml::Value {
    toml::Value::Boolean(v)
}

fn i(v: i64) -> toml::Value {
    toml::Value::Integer(v)
}

fn cnn(id: &str, backbone: &str, lm: bool) -> Variant {
    variant(
        id,
        &[
            ("network.kind", s("cnn")),
            ("network.backbone", s(backbone)),
            ("network.landmarks", b(lm)),
        ],
    )
}

fn rnn(id: &str, cell: &str, hidden: i64, layers: i64, lm: bool, loss: &str) -> Variant {
    variant(
        id,
        &[
            ("network.kind", s("cnn_rnn")),
            ("network.cell", s(cell)),
            ("network.hidden", i(hidden)),
            ("network.layers", i(layers)),
            ("network.landmarks", b(lm)),
            ("loss.kind", s(loss)),
        ],
    )
}

/// The variants behind every table. Ids: `cnn-<backbone>-<lm|nolm>`, `<gru|lstm>-<hidden>x<layers>
/// -<lm|nolm>[-mse]`. VGG-16 and VGG-Face share one architecture; they differ only in pretrained
/// weights, so `vgg_face` is included only when `vgg_face_weights` is given.
pub fn plan(with_vgg_face: bool) -> Vec<Variant> {
    let mut plan = vec![
        cnn("cnn-vgg16-lm", "vgg16", true),
        cnn("cnn-vgg16-nolm", "vgg16", false),
        cnn("cnn-resnet50-lm", "resnet50", true),
        cnn("cnn-resnet50-nolm", "resnet50", false),
        rnn("gru-128x2-lm", "gru", 128, 2, true, "ccc"),
        rnn("gru-128x2-nolm", "gru", 128, 2, false, "ccc"),
        rnn("lstm-128x2-lm", "lstm", 128, 2, true, "ccc"),
        rnn("gru-128x2-lm-mse", "gru", 128, 2, true, "mse"),
    ];
    plan.push(variant(
        "cnn-vgg16-lm-mse",
        &[
            ("network.kind", s("cnn")),
            ("network.backbone", s("vgg16")),
            ("network.landmarks", b(true)),
            ("loss.kind", s("mse")),
        ],
    ));
    for (hidden, layers) in [(100, 1), (100, 2), (128, 1), (150, 1), (150, 2)] {
        plan.push(rnn(
            &format!("gru-{hidden}x{layers}-lm"),
            "gru",
            hidden,
            layers,
            true,
            "ccc",
        ));
    }
    if with_vgg_face {
        plan.insert(0, cnn("cnn-vgg_face-lm", "vgg_face", true));
        plan.insert(1, cnn("cnn-vgg_face-nolm", "vgg_face", false));
    }
    plan
}

/// Base overrides of `--quick`: a narrow VGG/ResNet at 48 px, 1 thread-friendly sizes, a few
/// hundred steps — minutes on a CPU.
pub fn quick_base() -> Vec<(String, toml::Value)> {
    let f = toml::Value::Float;
    vec![
        ("device".into(), s("cpu")),
        ("network.width".into(), f(0.0625)),
        ("network.input_size".into(), i(48)),
        ("network.dropout".into(), f(0.2)),
        ("batch.sequences".into(), i(4)),
        ("batch.sequence_length".into(), i(32)),
        ("schedule.steps".into(), i(300)),
        ("schedule.validate_every".into(), i(100)),
        ("schedule.checkpoint_every".into(), i(0)),
        ("schedule.log_every".into(), i(10)),
        ("optim.lr".into(), f(3e-3)),
        ("optim.decay_steps".into(), i(100)),
    ]
}

/// Outcome of one variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantResult {
    /// Variant id.
    pub id: String,
    /// Best validation score (by mean CCC) during training.
    pub best: Option<Validation>,
    /// Step of the best score.
    pub best_step: Option<u64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Why the ablation failed.
#[derive(Debug, thiserror::Error)]
pub enum AblateError {
    /// A variant's training failed.
    #[error("variant {id}: {source}")]
    Train {
        /// Variant id.
        id: String,
        /// Cause.
        source: TrainError,
    },
    /// A variant does not form a valid configuration.
    #[error("variant {id}: {source}")]
    Config {
        /// Variant id.
        id: String,
        /// Cause.
        source: crate::model::ConfigError,
    },
}

/// The full configuration of `variant` on top of `base`; CNN batches get the CNN-RNN batch's
/// frame count so every variant sees the same frames per step.
pub fn variant_config(
    base: &[(String, toml::Value)],
    variant: &Variant,
) -> Result<TrainConfig, AblateError> {
    let mut all = base.to_vec();
    all.extend(variant.overrides.iter().cloned());
    let config = TrainConfig::from_overrides(&all).map_err(|source| AblateError::Config {
        id: variant.id.clone(),
        source,
    })?;
    let frames = config.batch.sequences * config.batch.sequence_length;
    all.push(("batch.frames".into(), i(i64::from(frames))));
    TrainConfig::from_overrides(&all).map_err(|source| AblateError::Config {
        id: variant.id.clone(),
        source,
    })
}

/// Trains every variant in `out/<id>` and returns their results in plan order.
pub fn run(
    base: &[(String, toml::Value)],
    variants: &[Variant],
    train_set: Arc<MemoryDataset>,
    validation: &MemoryDataset,
    out: &Path,
    mut on_done: impl FnMut(&VariantResult),
) -> Result<Vec<VariantResult>, AblateError> {
    let mut results = Vec::new();
    for v in variants {
        let config = variant_config(base, v)?;
        let (sequences, steps) = config.batch_shape();
        let train_err = |source| AblateError::Train {
            id: v.id.clone(),
            source,
        };
        let mut source = MemoryBatches::new(train_set.clone(), config.seed, sequences, steps)
            .map_err(|e| train_err(TrainError::Source(Box::new(e))))?;
        let dir = out.join(&v.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| {
                train_err(TrainError::Io {
                    path: dir.clone(),
                    source,
                })
            })?;
        }
        let started = std::time::Instant::now();
        let summary = train(
            &config,
            &dir,
            &mut source,
            Some(validation),
            &TrainOptions::default(),
        )
        .map_err(train_err)?;
        let result = VariantResult {
            id: v.id.clone(),
            best: summary.best.map(|b| b.validation),
            best_step: summary.best.map(|b| b.step),
            seconds: started.elapsed().as_secs_f64(),
        };
        on_done(&result);
        results.push(result);
    }
    Ok(results)
}

fn find<'a>(results: &'a [VariantResult], id: &str) -> Option<&'a VariantResult> {
    results.iter().find(|r| r.id == id)
}

fn cells(r: Option<&VariantResult>) -> String {
    match r.and_then(|r| r.best.as_ref()) {
        Some(v) => format!(
            "{:.3} | {:.3} | {:.4} | {:.4}",
            v.valence.ccc, v.arousal.ccc, v.valence.mse, v.arousal.mse
        ),
        None => "– | – | – | –".into(),
    }
}

const HEADER: &str = "| CCC V | CCC A | MSE V | MSE A |";
const RULE: &str = "|---:|---:|---:|---:|";

/// The Markdown tables (shaped like the paper's Tables 4–9) for whatever variants ran.
pub fn tables(results: &[VariantResult]) -> String {
    let mut md = String::new();
    let table = |md: &mut String, title: &str, first: &str, rows: &[(&str, &str)]| {
        if rows.iter().all(|(_, id)| find(results, id).is_none()) {
            return;
        }
        let _ = writeln!(md, "### {title}\n\n| {first} {HEADER}\n|---{RULE}");
        for (label, id) in rows {
            if let Some(r) = find(results, id) {
                let _ = writeln!(md, "| {label} | {} |", cells(Some(r)));
            }
        }
        md.push('\n');
    };
    table(
        &mut md,
        "CNN backbones, without and with landmarks (Tables 4–5)",
        "backbone / scenario",
        &[
            ("VGG-Face, image only", "cnn-vgg_face-nolm"),
            ("VGG-Face, image + landmarks", "cnn-vgg_face-lm"),
            ("VGG-16, image only", "cnn-vgg16-nolm"),
            ("VGG-16, image + landmarks", "cnn-vgg16-lm"),
            ("ResNet-50, image only", "cnn-resnet50-nolm"),
            ("ResNet-50, image + landmarks", "cnn-resnet50-lm"),
        ],
    );
    table(
        &mut md,
        "CNN vs CNN-RNN, with landmarks (Table 6)",
        "network",
        &[
            ("CNN (VGG-16)", "cnn-vgg16-lm"),
            ("CNN-GRU 128×2", "gru-128x2-lm"),
            ("CNN-LSTM (peephole) 128×2", "lstm-128x2-lm"),
        ],
    );
    table(
        &mut md,
        "CNN-GRU: recurrent units × layers (Table 7)",
        "units × layers",
        &[
            ("100 × 1", "gru-100x1-lm"),
            ("100 × 2", "gru-100x2-lm"),
            ("128 × 1", "gru-128x1-lm"),
            ("128 × 2", "gru-128x2-lm"),
            ("150 × 1", "gru-150x1-lm"),
            ("150 × 2", "gru-150x2-lm"),
        ],
    );
    table(
        &mut md,
        "Loss: CCC vs MSE (Table 8)",
        "network, loss",
        &[
            ("CNN, CCC", "cnn-vgg16-lm"),
            ("CNN, MSE", "cnn-vgg16-lm-mse"),
            ("CNN-GRU, CCC", "gru-128x2-lm"),
            ("CNN-GRU, MSE", "gru-128x2-lm-mse"),
        ],
    );
    table(
        &mut md,
        "CNN-GRU without and with landmarks (Table 9)",
        "input",
        &[
            ("image only", "gru-128x2-nolm"),
            ("image + landmarks", "gru-128x2-lm"),
        ],
    );
    md
}

/// The `--quick` acceptance check: CNN-GRU with landmarks reaches validation CCC ≥ `threshold`
/// on both dimensions and beats the CNN with landmarks (mean CCC) at equal budget.
pub fn quick_check(results: &[VariantResult], threshold: f64) -> Result<String, String> {
    let score = |id| find(results, id).and_then(|r| r.best);
    let (Some(gru), Some(cnn)) = (score("gru-128x2-lm"), score("cnn-vgg16-lm")) else {
        return Err("gru-128x2-lm or cnn-vgg16-lm has no validation score".into());
    };
    let mean = |v: &Validation| (v.valence.ccc + v.arousal.ccc) / 2.0;
    let text = format!(
        "CNN-GRU + landmarks: CCC V {:.3} A {:.3} (mean {:.3}); CNN + landmarks: mean {:.3}",
        gru.valence.ccc,
        gru.arousal.ccc,
        mean(&gru),
        mean(&cnn)
    );
    if gru.valence.ccc >= threshold && gru.arousal.ccc >= threshold && mean(&gru) > mean(&cnn) {
        Ok(text)
    } else {
        Err(text)
    }
}
