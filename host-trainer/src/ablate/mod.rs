//! The paper's comparisons (Kollias et al. 2017, Tables 4–9) as training runs at equal budget,
//! summarised in Markdown tables: backbone (Table 4), landmarks or not (scenario 1 vs 2,
//! Table 5), training on one annotator vs on the mean of the annotators (Table 6), CNN vs
//! CNN-RNN (Table 7), recurrent units × layers (Table 8), GRU vs LSTM (Table 9), and two
//! comparisons outside those tables: one network per dimension vs one joint network, and CCC vs
//! MSE loss.
//!
//! Table 6 needs several annotators: the synthetic set simulates them
//! ([`affect_shared::synth::AnnotatorNoise`]); every variant trains on their per-frame mean (as
//! on Aff-Wild) except `gru-128x2-lm-annotator-1`, which trains on annotator 1 alone
//! (`data.annotation`); all validate against the mean. The separate networks are
//! `gru-128x2-lm-valence` and `gru-128x2-lm-arousal` (`loss.dimensions`), scored together as
//! [`SEPARATE`]: valence from the valence network, arousal from the arousal network, seed by
//! seed ([`with_separate`]).
//!
//! Training is two-stage: every CNN-RNN starts from a CNN of the plan trained with its backbone,
//! landmarks, loss and labels ([`Variant::starts_from`], [`plan`]), so Table 7 asks what the
//! recurrent layers add to that CNN.
//!
//! Every variant is the base configuration plus a few `key = value` overrides, trained for the
//! same number of steps on the same frames per step (a CNN batch holds as many frames as a
//! CNN-RNN batch: `sequences × sequence_length`), validated on the same split, once per seed.
//! Tables give mean ± standard deviation over the seeds, and [`findings`] states whether each
//! of the paper's conclusions holds on this data, given that spread.
//!
//! # Output directory (resumable)
//! ```text
//! OUT/<id>/seed-<s>/            one training run (crate::train's run directory: config.toml,
//!                               metrics.jsonl, checkpoint/, best/)
//! OUT/<id>/seed-<s>/result.json its VariantResult and full configuration ([`RunRecord`]),
//!                               written atomically once the run finished
//! OUT/ablation.md, ablation.json the tables and findings over every result
//! ```
//! [`run`] with [`RunOptions::resume`] reuses finished runs, continues interrupted ones from
//! their checkpoint and starts the missing ones; without it a used `OUT` is refused. The data
//! come through [`AblationData`]: rendered in memory ([`InMemory`]) or read from a dataset
//! directory ([`DatasetDir`]). [`budget`] prices a plan before it runs.

pub mod budget;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use affect_shared::files::write_atomic;
use affect_shared::metadata::Validation;
use serde::{Deserialize, Serialize};

use crate::data::Annotation;
use crate::model::Backbone;
use crate::train::config::TrainConfig;
use crate::train::memory::{MemoryBatches, MemoryDataset, MemoryLabels};
use crate::train::source::{BatchSource, VideoSource};
use crate::train::{Outcome, RunDir, TrainError, TrainOptions, train};

/// One configuration to train.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Short identifier (run directory name).
    pub id: String,
    /// Overrides on top of the base configuration.
    pub overrides: Vec<(String, toml::Value)>,
    /// The CNN variant whose trained weights (same seed, `best/`) this CNN-RNN starts from
    /// ([`run`] sets `network.pretrained` to them); `None` for the CNNs.
    pub starts_from: Option<String>,
}

fn variant(id: &str, sets: &[(&str, toml::Value)]) -> Variant {
    Variant {
        id: id.to_owned(),
        overrides: sets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        starts_from: None,
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

/// A CNN-RNN on `backbone` that starts from the trained CNN `starts_from`.
fn rnn(
    id: &str,
    backbone: &str,
    (cell, hidden, layers): (&str, i64, i64),
    lm: bool,
    loss: &str,
    starts_from: &str,
) -> Variant {
    let mut v = variant(
        id,
        &[
            ("network.kind", s("cnn_rnn")),
            ("network.backbone", s(backbone)),
            ("network.cell", s(cell)),
            ("network.hidden", i(hidden)),
            ("network.layers", i(layers)),
            ("network.landmarks", b(lm)),
            ("loss.kind", s(loss)),
        ],
    );
    v.starts_from = Some(starts_from.to_owned());
    v
}

/// The variant that trains the CNN-GRU on one annotator's labels (Table 6).
pub const ONE_ANNOTATOR: &str = "gru-128x2-lm-annotator-1";

/// The CNN-GRU trained on valence only (one of the separate networks).
pub const VALENCE_ONLY: &str = "gru-128x2-lm-valence";

/// The CNN-GRU trained on arousal only (the other separate network).
pub const AROUSAL_ONLY: &str = "gru-128x2-lm-arousal";

/// The id of the separate networks scored together ([`with_separate`]): not a trained variant.
pub const SEPARATE: &str = "gru-128x2-lm-separate";

/// The variants behind every table. Ids: `cnn-<backbone>-<lm|nolm>[-mse]`, `<gru|lstm>-<hidden>x
/// <layers>-<lm|nolm>[-mse]`, and for the CNN-GRU 128 × 2 with landmarks `-valence` / `-arousal`
/// (one dimension's loss only) and `-annotator-1` (trained on annotator 1's labels). VGG-16 and
/// VGG-Face share one architecture; they differ only in pretrained weights, so `vgg_face` is
/// included only when `vgg_face_weights` is given.
///
/// Training is two-stage, as fine-tuning from a trained CNN: every CNN-RNN starts from the
/// trained CNN ([`Variant::starts_from`]) that has its backbone (VGG-Face when its weights are
/// given, else VGG-16), landmarks, loss, dimensions and labels — `cnn-<backbone>-lm[-mse]`,
/// `cnn-<backbone>-nolm`, and `cnn-<backbone>-lm-valence` / `-arousal` / `-annotator-1` for the
/// separate and one-annotator networks — so each comparison stays between networks trained on
/// the same things. Started from the landmark-pretrained backbone instead, the image-only
/// CNN-GRU learnt little valence in the quick budget (CCC 0.25–0.33; from the trained CNN
/// 0.68–0.71: README, "Ablation over seeds").
pub fn plan(with_vgg_face: bool) -> Vec<Variant> {
    let bb = if with_vgg_face { "vgg_face" } else { "vgg16" };
    let cnn_lm = format!("cnn-{bb}-lm");
    let cnn_nolm = format!("cnn-{bb}-nolm");
    let cnn_mse = format!("cnn-{bb}-lm-mse");
    let gru = |hidden, layers| ("gru", hidden, layers);
    let mse_cnn = |id: &str, backbone: &str| {
        let mut v = cnn(id, backbone, true);
        v.overrides.push(("loss.kind".to_owned(), s("mse")));
        v
    };
    let mut plan = Vec::new();
    if with_vgg_face {
        plan.push(cnn("cnn-vgg_face-lm", "vgg_face", true));
        plan.push(cnn("cnn-vgg_face-nolm", "vgg_face", false));
    }
    plan.extend([
        cnn("cnn-vgg16-lm", "vgg16", true),
        cnn("cnn-vgg16-nolm", "vgg16", false),
        cnn("cnn-resnet50-lm", "resnet50", true),
        cnn("cnn-resnet50-nolm", "resnet50", false),
        rnn("gru-128x2-lm", bb, gru(128, 2), true, "ccc", &cnn_lm),
        rnn("gru-128x2-nolm", bb, gru(128, 2), false, "ccc", &cnn_nolm),
        rnn("lstm-128x2-lm", bb, ("lstm", 128, 2), true, "ccc", &cnn_lm),
        mse_cnn("cnn-vgg16-lm-mse", "vgg16"),
    ]);
    if with_vgg_face {
        plan.push(mse_cnn(&cnn_mse, bb));
    }
    plan.push(rnn(
        "gru-128x2-lm-mse",
        bb,
        gru(128, 2),
        true,
        "mse",
        &cnn_mse,
    ));
    for (hidden, layers) in [(100, 1), (100, 2), (128, 1), (150, 1), (150, 2)] {
        plan.push(rnn(
            &format!("gru-{hidden}x{layers}-lm"),
            bb,
            gru(hidden, layers),
            true,
            "ccc",
            &cnn_lm,
        ));
    }
    for (id, key, value) in [
        (VALENCE_ONLY, "loss.dimensions", "valence"),
        (AROUSAL_ONLY, "loss.dimensions", "arousal"),
        (ONE_ANNOTATOR, "data.annotation", "annotator-1"),
    ] {
        let suffix = id
            .strip_prefix("gru-128x2-lm-")
            .expect("a CNN-GRU 128 × 2 id");
        let mut first = cnn(&format!("{cnn_lm}-{suffix}"), bb, true);
        first.overrides.push((key.to_owned(), s(value)));
        let mut v = rnn(id, bb, gru(128, 2), true, "ccc", &first.id);
        v.overrides.push((key.to_owned(), s(value)));
        plan.push(first);
        plan.push(v);
    }
    plan
}

/// `plan` reduced to the variants in `only` and the CNNs they start from, in plan order.
pub fn select(plan: &[Variant], only: &[String]) -> Vec<Variant> {
    let wanted = |v: &Variant| {
        only.contains(&v.id)
            || plan
                .iter()
                .any(|w| only.contains(&w.id) && w.starts_from.as_deref() == Some(&v.id))
    };
    plan.iter().filter(|v| wanted(v)).cloned().collect()
}

/// Training videos of the `--quick` synthetic set, one person each: with 24 people × 200 frames
/// the image-only variants memorised the people (training CCC ≈ 0.95, validation ≈ 0); with 512
/// the VGG-16 CNN generalises within the quick budget (README, "Collapses").
pub const QUICK_VIDEOS: u64 = 512;

/// Frames per video of the `--quick` synthetic set (longer than the clips the recurrent variants
/// train on, `batch.sequence_length`).
pub const QUICK_FRAMES: usize = 40;

/// Base overrides of `--quick`: a narrow VGG/ResNet at 64 px, 1 thread-friendly sizes, a few
/// hundred steps — minutes on a CPU. At 48 px the image-only ResNet-50 CNN and CNN-GRU learnt
/// little valence (the mouth corners span a pixel or two; README, "Ablation over seeds"). The
/// recurrent variants train on 16 clips of 8 frames (CNNs on the same 128 frames): with 4 clips
/// of 32 a batch held only 4 people, and on the 512-person set the CNN-GRU with landmarks fell
/// from CCC 0.85 / 0.86 to 0.15 / 0.53 (README, "Collapses").
pub fn quick_base() -> Vec<(String, toml::Value)> {
    let f = toml::Value::Float;
    vec![
        ("device".into(), s("cpu")),
        ("network.width".into(), f(0.0625)),
        ("network.input_size".into(), i(64)),
        ("network.dropout".into(), f(0.2)),
        ("batch.sequences".into(), i(16)),
        ("batch.sequence_length".into(), i(8)),
        ("schedule.steps".into(), i(300)),
        ("schedule.validate_every".into(), i(100)),
        ("schedule.checkpoint_every".into(), i(0)),
        ("schedule.log_every".into(), i(10)),
        ("optim.lr".into(), f(3e-3)),
        ("optim.decay_steps".into(), i(100)),
    ]
}

/// Width of the ResNet-50 variants with `--quick` (the others keep [`quick_base`]'s 1/16). At
/// 1/16 its stem has 4 channels and its bottlenecks 4 to 32; at 1/8 it costs about what VGG-16
/// costs at 1/16 (≈ 64 vs 60 MMAC per 224-px face), so the backbones are compared at equal
/// compute.
pub const QUICK_RESNET50_WIDTH: f64 = 0.125;

/// Gives every ResNet-50 variant of `plan` its `--quick` recipe: [`QUICK_RESNET50_WIDTH`], and
/// fine-tuning at the rate it pretrains at ([`pretext_learning_rate`], 1e-2; VGG's is the base's
/// 3e-3). Keys in `user_keys` (set by the user for every variant) are left alone. Measured on
/// training seed 51 at 64 px, image-only valence / arousal CCC: 1/16 width at 3e-3 0.259 / 0.543,
/// 1/8 at 3e-3 0.277 / 0.550, 1/8 at 1e-2 0.316 / 0.517 (README, "Ablation over seeds").
pub fn quick_recipes(plan: &mut [Variant], user_keys: &[String]) {
    let resnet = |v: &Variant| {
        v.overrides.iter().any(|(k, value)| {
            k == "network.backbone" && value.as_str() == Some(Backbone::Resnet50.name())
        })
    };
    let recipe = [
        ("network.width", toml::Value::Float(QUICK_RESNET50_WIDTH)),
        (
            "optim.lr",
            toml::Value::Float(pretext_learning_rate(Backbone::Resnet50)),
        ),
    ];
    for v in plan.iter_mut().filter(|v| resnet(v)) {
        for (key, value) in &recipe {
            if !user_keys.iter().any(|k| k == key) {
                v.overrides.push(((*key).to_owned(), value.clone()));
            }
        }
    }
}

/// Outcome of one variant trained with one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    /// Variant id.
    pub id: String,
    /// Training seed (initialisation, dropout, batch order).
    pub seed: u64,
    /// Best validation score (by mean CCC) during training.
    pub best: Option<Validation>,
    /// Step of the best score.
    pub best_step: Option<u64>,
    /// Whether the run's last validation looked collapsed ([`crate::train::collapse`]).
    pub collapsed: bool,
    /// Wall-clock seconds of training in the call that finished the run (for a resumed run:
    /// since the resume).
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
    /// A variant trains on an annotator the synthetic set has no labels of.
    #[error(
        "variant {id}: trains on annotator `{name}`, but the training set has {present} \
         (render it with simulated annotators, `--annotators`)"
    )]
    Annotation {
        /// Variant id.
        id: String,
        /// The annotator asked for.
        name: String,
        /// The annotators it has, in words.
        present: String,
    },
    /// A variant's dataset split cannot be read.
    #[error("variant {id}: {source}")]
    Data {
        /// Variant id.
        id: String,
        /// Cause.
        source: crate::data::DataError,
    },
    /// `--resume` was not given but the output directory already holds runs.
    #[error(
        "{} already holds ablation runs (e.g. {}); pass --resume to continue them (finished runs \
         are kept, interrupted ones resume from their checkpoint) or choose a new --out",
        out.display(),
        run.display()
    )]
    Exists {
        /// The output directory.
        out: PathBuf,
        /// One of the runs in it.
        run: PathBuf,
    },
    /// A run to reuse or resume ran with another configuration than it would now.
    #[error(
        "{}: ran with `{key}` = {was} ({}), this command gives {now}; resume with the command \
         that started it, or choose a new --out",
        dir.display(),
        file.display()
    )]
    Changed {
        /// The run directory.
        dir: PathBuf,
        /// The file its configuration was read from (`result.json` or `config.toml`).
        file: PathBuf,
        /// The first differing key (dotted).
        key: String,
        /// Its stored value.
        was: String,
        /// Its value now.
        now: String,
    },
    /// A CNN-RNN's starting CNN ([`Variant::starts_from`]) is not trained before it.
    #[error(
        "variant {id} starts from the trained CNN {first}, which this plan does not train before \
         it"
    )]
    StartsFrom {
        /// The CNN-RNN variant.
        id: String,
        /// The CNN it starts from.
        first: String,
    },
    /// A `result.json` or checkpoint state that cannot be used.
    #[error("{}: {message}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing the output directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The stop flag was raised: the current run saved a checkpoint (when it had started).
    #[error(
        "interrupted during {id} seed {seed}{}; finished runs keep their result.json",
        match step {
            Some(step) => format!(" at step {step} (checkpoint saved in {})", dir.display()),
            None => " before it started".to_owned(),
        }
    )]
    Interrupted {
        /// Variant id.
        id: String,
        /// Seed.
        seed: u64,
        /// Its run directory.
        dir: PathBuf,
        /// The step its checkpoint holds (`None`: stopped before the run started).
        step: Option<u64>,
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

/// Landmark-pretraining steps per backbone with `--quick` ([`pretrain_backbones`]): with 300
/// the image-only ResNet-50 CNN reached CCC 0.22 / 0.32 (data seed 41), with 1 000 0.39 / 0.57
/// (about 2 minutes per backbone on one CPU thread, once per study).
pub const QUICK_PRETEXT_STEPS: u64 = 1000;

/// Learning rate of a backbone's landmark pretraining. Like published weights, which come from
/// a recipe per architecture (torchvision trained VGG-16 with SGD at 0.01, ResNet-50 at 0.1),
/// each backbone pretrains at the rate it learns at. Measured (`--quick`, data seed 41, loss of
/// the standardised coordinates, ≈ 3 at the start): VGG-16 after 300 steps 0.28 at 3e-3 but
/// 1.00 at 1e-2 (stuck at the mean); ResNet-50 after 1 000 steps 0.20 at 3e-3, 0.12 at 1e-2.
pub fn pretext_learning_rate(backbone: Backbone) -> f64 {
    match backbone {
        Backbone::Resnet50 => 1e-2,
        Backbone::Vgg16 | Backbone::VggFace => 3e-3,
    }
}

/// Subdirectory of an ablation's output holding its landmark-pretrained backbones.
pub const PRETEXT_DIR: &str = "pretext";

/// A pretrained backbone of an ablation, as recorded beside its weights (`<stem>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretextRecord {
    /// The pretraining's configuration (a CNN without landmarks with the variants' backbone,
    /// width and input size; `schedule.steps` = pretraining steps).
    pub config: serde_json::Value,
    /// Loss of the first step (standardised coordinates: ≈ 1 at the start).
    pub first_loss: f64,
    /// Smoothed loss at the last step.
    pub last_loss: f64,
}

/// How a pretrained backbone was obtained (passed to [`pretrain_backbones`]'s callback).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PretextProvenance {
    /// Trained now.
    Trained,
    /// Read from an earlier call with the same configuration (`--resume`).
    Reused,
}

/// Starts every variant of `variants` that has no `network.pretrained` (and no
/// [`Variant::starts_from`]) from a backbone
/// pretrained on landmark regression ([`crate::train::pretext`]): one per distinct backbone,
/// width, input size and pool of the variants, trained for `steps` steps on `data`'s training
/// crops (seeded by `seed`, the same for every training seed, as published weights are), saved
/// in `out/pretext/` and added to each variant's overrides as `network.pretrained`. A backbone
/// already saved there with the same configuration is reused; one saved with another is
/// refused ([`AblateError::Changed`]). `on_done` gets each backbone's file and record.
pub fn pretrain_backbones(
    base: &[(String, toml::Value)],
    variants: &mut [Variant],
    data: &dyn AblationData,
    out: &Path,
    steps: u64,
    seed: u64,
    mut on_done: impl FnMut(&Path, &PretextRecord, PretextProvenance),
) -> Result<(), AblateError> {
    let dir = out.join(PRETEXT_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| AblateError::Io {
        path: dir.clone(),
        source,
    })?;
    let dir = std::fs::canonicalize(&dir).map_err(|source| AblateError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut seeded = base.to_vec();
    seeded.push(("seed".into(), i(seed as i64)));
    let mut ready: Vec<PathBuf> = Vec::new();
    for v in variants.iter_mut().filter(|v| v.starts_from.is_none()) {
        let config = variant_config(&seeded, v)?;
        if config.network.pretrained.is_some() {
            continue;
        }
        let n = &config.network;
        let stem = format!("{}-w{}-{}px", n.backbone.name(), n.width, n.input_size);
        let mut overrides = vec![
            ("network.backbone".to_owned(), s(n.backbone.name())),
            ("network.kind".to_owned(), s("cnn")),
            ("network.landmarks".to_owned(), toml::Value::Boolean(false)),
            ("network.width".to_owned(), toml::Value::Float(n.width)),
            ("network.input_size".to_owned(), i(i64::from(n.input_size))),
            ("schedule.steps".to_owned(), i(steps as i64)),
            (
                "optim.lr".to_owned(),
                toml::Value::Float(pretext_learning_rate(n.backbone)),
            ),
        ];
        if let Some(pool) = n.pool {
            overrides.push(("network.pool".to_owned(), i(i64::from(pool))));
        }
        let pretext = Variant {
            id: format!("{PRETEXT_DIR}/{stem}"),
            overrides,
            starts_from: None,
        };
        let pretext_config = variant_config(&seeded, &pretext)?;
        let weights = dir.join(format!("{stem}.safetensors"));
        if !ready.contains(&weights) {
            let record_path = dir.join(format!("{stem}.json"));
            let io = |path: &Path| {
                let path = path.to_owned();
                move |source| AblateError::Io { path, source }
            };
            let stored = match std::fs::read_to_string(&record_path) {
                Ok(text) => Some(serde_json::from_str::<PretextRecord>(&text).map_err(|e| {
                    AblateError::Record {
                        path: record_path.clone(),
                        message: e.to_string(),
                    }
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&record_path)(e)),
            };
            match stored {
                Some(record) if weights.exists() => {
                    check_same(&weights, &record_path, &record.config, &pretext_config)?;
                    on_done(&weights, &record, PretextProvenance::Reused);
                }
                _ => {
                    let mut source = data.training(&pretext.id, &pretext_config)?;
                    let summary = crate::train::pretext::pretrain_landmarks(
                        &pretext_config,
                        source.as_mut(),
                        &weights,
                    )
                    .map_err(|source| AblateError::Train {
                        id: pretext.id.clone(),
                        source,
                    })?;
                    let record = PretextRecord {
                        config: config_json(&pretext_config),
                        first_loss: summary.first_loss,
                        last_loss: summary.last_loss,
                    };
                    let text =
                        serde_json::to_string_pretty(&record).expect("plain data serialises");
                    write_atomic(&record_path, text.as_bytes()).map_err(io(&record_path))?;
                    on_done(&weights, &record, PretextProvenance::Trained);
                }
            }
            ready.push(weights.clone());
        }
        v.overrides.push((
            "network.pretrained".to_owned(),
            s(&weights.display().to_string()),
        ));
    }
    Ok(())
}

/// The training data of an ablation.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// The frames, labelled with the annotators' mean.
    pub data: Arc<MemoryDataset>,
    /// Each annotator's own labels of the same frames (empty without simulated annotators).
    pub annotators: Vec<Arc<MemoryLabels>>,
}

/// Where every run of an ablation gets its training batches and validation videos.
pub trait AblationData {
    /// The training batches of variant `id` trained with `config` (its seed orders them).
    fn training(&self, id: &str, config: &TrainConfig)
    -> Result<Box<dyn BatchSource>, AblateError>;
    /// The videos variant `id` validates on (`None`: no validation).
    fn validation(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Option<Box<dyn VideoSource + '_>>, AblateError>;
}

/// Data rendered in memory: a [`TrainingSet`] and a validation set.
#[derive(Debug, Clone, Copy)]
pub struct InMemory<'a> {
    /// Training frames and, per annotator, their labels.
    pub train: &'a TrainingSet,
    /// Validation frames, labelled with the annotators' mean.
    pub validation: &'a MemoryDataset,
}

impl AblationData for InMemory<'_> {
    /// Batches of the training frames; a variant whose `data.annotation` names an annotator
    /// gets that annotator's labels instead of the mean.
    fn training(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Box<dyn BatchSource>, AblateError> {
        let (sequences, steps) = config.batch_shape();
        let source_err = |e: crate::train::memory::MemoryError| AblateError::Train {
            id: id.to_owned(),
            source: TrainError::Source(Box::new(e)),
        };
        let mut source = MemoryBatches::new(self.train.data.clone(), config.seed, sequences, steps)
            .map_err(source_err)?;
        if let Annotation::Annotator(name) = &config.data.annotation {
            let annotators = &self.train.annotators;
            let labels = annotators.iter().find(|l| &l.name == name).ok_or_else(|| {
                AblateError::Annotation {
                    id: id.to_owned(),
                    name: name.clone(),
                    present: if annotators.is_empty() {
                        "no per-annotator labels".into()
                    } else {
                        let names: Vec<&str> = annotators.iter().map(|l| l.name.as_str()).collect();
                        format!("annotators {}", names.join(", "))
                    },
                }
            })?;
            source = source.with_labels(labels.clone()).map_err(source_err)?;
        }
        Ok(Box::new(source))
    }

    fn validation(
        &self,
        _id: &str,
        _config: &TrainConfig,
    ) -> Result<Option<Box<dyn VideoSource + '_>>, AblateError> {
        Ok(Some(Box::new(self.validation)))
    }
}

/// The crops a variant's in-memory synthetic data must be preprocessed with: its configuration's
/// preprocessing (its backbone's normalisation at its input size), with landmarks always
/// included (variants without them ignore them).
pub fn synthetic_preprocess(config: &TrainConfig) -> affect_shared::preprocess::Preprocess {
    let mut with_landmarks = config.clone();
    with_landmarks.network.landmarks = true;
    with_landmarks.preprocess()
}

/// In-memory data rendered once per distinct preprocessing of the plan: every variant trains
/// and validates on crops preprocessed as its own configuration says (the CNN-RNN variants'
/// VGG-Face backbone normalises differently from the CNNs' VGG-16 and ResNet-50).
#[derive(Debug, Clone, Default)]
pub struct InMemoryByPreprocess {
    /// Each preprocessing with its training and validation sets.
    pub sets: Vec<(
        affect_shared::preprocess::Preprocess,
        TrainingSet,
        MemoryDataset,
    )>,
}

impl InMemoryByPreprocess {
    /// The data of `config`'s preprocessing; an error naming the variant when none was rendered
    /// for it.
    fn data_for(&self, id: &str, config: &TrainConfig) -> Result<InMemory<'_>, AblateError> {
        let wanted = synthetic_preprocess(config);
        self.sets
            .iter()
            .find(|(p, _, _)| *p == wanted)
            .map(|(_, train, validation)| InMemory { train, validation })
            .ok_or_else(|| AblateError::Config {
                id: id.to_owned(),
                source: crate::model::ConfigError::new(
                    "network.backbone",
                    format!("no synthetic set was rendered with its preprocessing ({wanted:?})"),
                ),
            })
    }
}

impl AblationData for InMemoryByPreprocess {
    fn training(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Box<dyn BatchSource>, AblateError> {
        self.data_for(id, config)?.training(id, config)
    }

    fn validation(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Option<Box<dyn VideoSource + '_>>, AblateError> {
        let data = self.data_for(id, config)?;
        Ok(Some(Box::new(data.validation)))
    }
}

/// A dataset directory in a layout `affect-train train --data` reads (Aff-Wild, Aff-Wild2):
/// every run streams `data.train_split` through the loader, labelled with its
/// `data.annotation`, and validates on `data.validation_split` against the mean, preprocessed as
/// its configuration says — exactly as `train --data` does.
#[derive(Debug, Clone)]
pub struct DatasetDir {
    /// The dataset's root directory.
    pub root: PathBuf,
}

impl AblationData for DatasetDir {
    fn training(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Box<dyn BatchSource>, AblateError> {
        crate::train::dataset::training_batches(&self.root, config).map_err(|source| {
            AblateError::Data {
                id: id.to_owned(),
                source,
            }
        })
    }

    fn validation(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Option<Box<dyn VideoSource + '_>>, AblateError> {
        if config.data.validation_split.is_empty() {
            return Ok(None);
        }
        crate::train::dataset::videos(
            &self.root,
            &config.data.validation_split,
            &Annotation::Mean,
            config,
        )
        .map(|videos| Some(videos as Box<dyn VideoSource>))
        .map_err(|source| AblateError::Data {
            id: id.to_owned(),
            source,
        })
    }
}

/// Run-time switches of [`run`].
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Continue an ablation in `out`: reuse every run that has `result.json` (after checking it
    /// ran with the configuration it would run with now), resume every run that has a
    /// checkpoint, start the others. Without it, an `out` that holds any run is refused.
    pub resume: bool,
    /// Refuse a configuration with `schedule.checkpoint_every = 0` (full-size runs: an
    /// interruption must not cost more than a checkpoint interval).
    pub require_checkpoints: bool,
    /// Raised (e.g. by a SIGINT handler) to checkpoint the current run and stop.
    pub stop: Arc<AtomicBool>,
}

/// How a run's result was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Trained from scratch by this call.
    Trained,
    /// Continued from its checkpoint at this step.
    Resumed {
        /// Step of the checkpoint.
        from: u64,
    },
    /// Read from its `result.json`: not trained again.
    Reused,
}

/// `OUT/<id>/seed-<s>/result.json`: a finished run's result and the configuration it ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The result.
    pub result: VariantResult,
    /// The full training configuration (as JSON: every key, defaults included).
    pub config: serde_json::Value,
}

/// The file holding a finished run's [`RunRecord`].
pub const RESULT_FILE: &str = "result.json";

/// The directory of variant `id` trained with `seed` under `out`.
pub fn run_dir(out: &Path, id: &str, seed: u64) -> PathBuf {
    out.join(id).join(format!("seed-{seed}"))
}

/// The run directories (`OUT/<id>/seed-<s>`) already in `out`, sorted; none when `out` does not
/// exist.
pub fn existing_runs(out: &Path) -> Result<Vec<PathBuf>, AblateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AblateError::Io { path, source }
    };
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(out)(e)),
    };
    let mut runs = Vec::new();
    for entry in entries {
        let variant = entry.map_err(io(out))?.path();
        if !variant.is_dir() {
            continue;
        }
        for seed in std::fs::read_dir(&variant).map_err(io(&variant))? {
            let seed = seed.map_err(io(&variant))?.path();
            let is_run = seed
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"));
            if is_run && seed.is_dir() {
                runs.push(seed);
            }
        }
    }
    runs.sort();
    Ok(runs)
}

/// Dotted leaves of a JSON value: `{"a":{"b":1}}` → `[("a.b", 1)]`.
fn json_leaves(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut BTreeMap<String, serde_json::Value>,
) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                json_leaves(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), value.clone());
        }
    }
}

/// The first dotted key (in sorted order) whose value differs between two configurations, with
/// both values as text (`absent` where a side lacks the key); `None` when they are equal.
pub fn first_difference(
    stored: &serde_json::Value,
    now: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    json_leaves("", stored, &mut a);
    json_leaves("", now, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let text = |v: Option<&serde_json::Value>| v.map_or("absent".to_owned(), |v| v.to_string());
    keys.into_iter().find_map(|k| {
        let (x, y) = (a.get(k), b.get(k));
        (x != y).then(|| (k.clone(), text(x), text(y)))
    })
}

fn config_json(config: &TrainConfig) -> serde_json::Value {
    serde_json::to_value(config).expect("a TrainConfig always serialises to JSON")
}

/// Checks that the run in `dir` (described by `file`) ran with `config`.
fn check_same(
    dir: &Path,
    file: &Path,
    stored: &serde_json::Value,
    config: &TrainConfig,
) -> Result<(), AblateError> {
    match first_difference(stored, &config_json(config)) {
        None => Ok(()),
        Some((key, was, now)) => Err(AblateError::Changed {
            dir: dir.to_owned(),
            file: file.to_owned(),
            key,
            was,
            now,
        }),
    }
}

/// A full-size run must checkpoint (`schedule.checkpoint_every > 0`) so an interruption costs
/// at most one checkpoint interval; the error names the key.
pub fn check_checkpoints(id: &str, config: &TrainConfig) -> Result<(), AblateError> {
    if config.schedule.checkpoint_every > 0 {
        return Ok(());
    }
    Err(AblateError::Config {
        id: id.to_owned(),
        source: crate::model::ConfigError::new(
            "schedule.checkpoint_every",
            "must be at least 1 for a full-size ablation, so an interrupted run resumes from its \
             last checkpoint (e.g. --set schedule.checkpoint_every=400)",
        ),
    })
}

/// Whether `metrics.jsonl` records a collapse at `step` (a run finished before an interruption
/// and resumed only to record its result gets its verdict from there).
fn logged_collapse(metrics: &Path, step: u64) -> bool {
    std::fs::read_to_string(metrics).is_ok_and(|text| {
        text.lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                v.get("collapse").is_some()
                    && v.get("step").and_then(serde_json::Value::as_u64) == Some(step)
            })
        })
    })
}

/// Trains every variant once per seed in `out/<id>/seed-<seed>` ([`run_dir`]) and returns the
/// results in plan order (a variant's seeds together); `on_done` hears of each as it is known.
/// The seed sets `seed` of the training configuration: initialisation, dropout and batch order;
/// the data stay the same. `data` gives every run its batches and validation videos. A CNN-RNN
/// with [`Variant::starts_from`] gets `network.pretrained` = that CNN's weights of the same seed
/// (the CNN must come earlier in `variants`, else [`AblateError::StartsFrom`]).
///
/// Every finished run writes [`RESULT_FILE`] ([`RunRecord`]) atomically into its directory. With
/// `options.resume` a run with that file is not trained again (its stored configuration must
/// equal the one it would run with now: else [`AblateError::Changed`] names the first differing
/// key), a run with a checkpoint continues from it (its `config.toml` checked the same way), and
/// a run directory with neither (killed before its first checkpoint, e.g. with
/// `schedule.checkpoint_every = 0`) is trained again from scratch — with the same seed it
/// repeats the lost steps exactly. Without `options.resume`, an `out` holding any run is refused
/// ([`AblateError::Exists`]) before anything is trained or deleted. When `options.stop` is raised
/// the current run checkpoints and [`AblateError::Interrupted`] is returned.
pub fn run(
    base: &[(String, toml::Value)],
    variants: &[Variant],
    seeds: &[u64],
    data: &dyn AblationData,
    out: &Path,
    options: &RunOptions,
    mut on_done: impl FnMut(&VariantResult, Provenance),
) -> Result<Vec<VariantResult>, AblateError> {
    if !options.resume
        && let Some(first) = existing_runs(out)?.into_iter().next()
    {
        return Err(AblateError::Exists {
            out: out.to_owned(),
            run: first,
        });
    }
    for (k, v) in variants.iter().enumerate() {
        if let Some(first) = &v.starts_from
            && !variants[..k].iter().any(|w| &w.id == first)
        {
            return Err(AblateError::StartsFrom {
                id: v.id.clone(),
                first: first.clone(),
            });
        }
    }
    let mut results = Vec::new();
    for v in variants {
        for &seed in seeds {
            let mut seeded = base.to_vec();
            seeded.push(("seed".into(), i(seed as i64)));
            if let Some(first) = &v.starts_from {
                seeded.push((
                    "network.pretrained".into(),
                    s(&starting_weights(out, first, seed)?.display().to_string()),
                ));
            }
            let config = variant_config(&seeded, v)?;
            if options.require_checkpoints {
                check_checkpoints(&v.id, &config)?;
            }
            let dir = run_dir(out, &v.id, seed);
            let io = |path: &Path| {
                let path = path.to_owned();
                move |source| AblateError::Io { path, source }
            };
            let result_path = dir.join(RESULT_FILE);
            if result_path.exists() {
                let text = std::fs::read_to_string(&result_path).map_err(io(&result_path))?;
                let record: RunRecord =
                    serde_json::from_str(&text).map_err(|e| AblateError::Record {
                        path: result_path.clone(),
                        message: e.to_string(),
                    })?;
                check_same(&dir, &result_path, &record.config, &config)?;
                if record.result.id != v.id || record.result.seed != seed {
                    return Err(AblateError::Record {
                        path: result_path,
                        message: format!(
                            "holds the result of {} seed {}, not of {} seed {seed}",
                            record.result.id, record.result.seed, v.id
                        ),
                    });
                }
                on_done(&record.result, Provenance::Reused);
                results.push(record.result);
                continue;
            }
            if options.stop.load(Ordering::SeqCst) {
                return Err(AblateError::Interrupted {
                    id: v.id.clone(),
                    seed,
                    dir,
                    step: None,
                });
            }
            let train_err = |source| AblateError::Train {
                id: v.id.clone(),
                source,
            };
            let run = RunDir::new(&dir);
            let resume_from = crate::train::checkpoint_step(&run).map_err(train_err)?;
            if resume_from.is_some() {
                let saved = run.config();
                let stored = TrainConfig::read(&saved).map_err(|e| AblateError::Record {
                    path: saved.clone(),
                    message: e.to_string(),
                })?;
                check_same(&dir, &saved, &config_json(&stored), &config)?;
            }
            if resume_from.is_none() && dir.exists() {
                tracing::warn!(
                    "{}: no checkpoint (schedule.checkpoint_every = {}); training this run again \
                     from the start",
                    dir.display(),
                    config.schedule.checkpoint_every
                );
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            let mut source = data.training(&v.id, &config)?;
            let validation = data.validation(&v.id, &config)?;
            let started = std::time::Instant::now();
            let summary = train(
                &config,
                &dir,
                source.as_mut(),
                validation.as_deref(),
                &TrainOptions {
                    resume: resume_from.is_some(),
                    progress: false,
                    stop: options.stop.clone(),
                },
            )
            .map_err(train_err)?;
            if let Outcome::Interrupted { step } = summary.outcome {
                return Err(AblateError::Interrupted {
                    id: v.id.clone(),
                    seed,
                    dir,
                    step: Some(step),
                });
            }
            let collapsed = summary.collapse.is_some()
                || (resume_from == Some(config.schedule.steps)
                    && logged_collapse(&run.metrics(), config.schedule.steps));
            let result = VariantResult {
                id: v.id.clone(),
                seed,
                best: summary.best.map(|b| b.validation),
                best_step: summary.best.map(|b| b.step),
                collapsed,
                seconds: started.elapsed().as_secs_f64(),
            };
            let record = RunRecord {
                result: result.clone(),
                config: config_json(&config),
            };
            let text = serde_json::to_string_pretty(&record).expect("plain data serialises");
            write_atomic(&result_path, text.as_bytes()).map_err(io(&result_path))?;
            on_done(
                &result,
                match resume_from {
                    Some(from) => Provenance::Resumed { from },
                    None => Provenance::Trained,
                },
            );
            results.push(result);
        }
    }
    Ok(results)
}

/// The weights a CNN-RNN of training seed `seed` starts from: those its starting CNN `first`
/// saved in `out` with the same seed (the best validated ones, else its last checkpoint's), as an
/// absolute path.
fn starting_weights(out: &Path, first: &str, seed: u64) -> Result<PathBuf, AblateError> {
    let weights = RunDir::new(run_dir(out, first, seed))
        .weights()
        .map_err(|source| AblateError::Train {
            id: first.to_owned(),
            source,
        })?;
    std::fs::canonicalize(&weights).map_err(|source| AblateError::Io {
        path: weights,
        source,
    })
}

/// `results` plus, for every seed where both [`VALENCE_ONLY`] and [`AROUSAL_ONLY`] ran, one
/// [`SEPARATE`] result: the valence score of the valence network and the arousal score of the
/// arousal network (frames: the fewer of the two), collapsed when either collapsed, their
/// seconds added, no single best step. [`tables`] and [`findings`] read this.
pub fn with_separate(results: &[VariantResult]) -> Vec<VariantResult> {
    let mut out = results.to_vec();
    let of = |id: &str, seed: u64| results.iter().find(|r| r.id == id && r.seed == seed);
    for v in results.iter().filter(|r| r.id == VALENCE_ONLY) {
        let Some(a) = of(AROUSAL_ONLY, v.seed) else {
            continue;
        };
        let best = match (&v.best, &a.best) {
            (Some(vb), Some(ab)) => Some(Validation {
                valence: vb.valence,
                arousal: ab.arousal,
                frames: vb.frames.min(ab.frames),
            }),
            _ => None,
        };
        out.push(VariantResult {
            id: SEPARATE.to_owned(),
            seed: v.seed,
            best,
            best_step: None,
            collapsed: v.collapsed || a.collapsed,
            seconds: v.seconds + a.seconds,
        });
    }
    out
}

/// Mean and sample standard deviation (0 for one value); `None` for no values.
fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some((mean, sd))
}

/// One variant over its seeds: mean and standard deviation of each score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantStats {
    /// Variant id.
    pub id: String,
    /// Seeds with a validation score.
    pub runs: usize,
    /// Seeds whose run collapsed.
    pub collapsed: usize,
    /// Valence CCC (mean, sd).
    pub ccc_valence: (f64, f64),
    /// Arousal CCC (mean, sd).
    pub ccc_arousal: (f64, f64),
    /// Mean of valence and arousal CCC, per seed, then (mean, sd) over seeds.
    pub ccc_mean: (f64, f64),
    /// Valence MSE (mean, sd).
    pub mse_valence: (f64, f64),
    /// Arousal MSE (mean, sd).
    pub mse_arousal: (f64, f64),
}

/// The statistics of variant `id` over its seeds in `results`; `None` when none has a score.
pub fn stats(results: &[VariantResult], id: &str) -> Option<VariantStats> {
    let runs: Vec<&VariantResult> = results.iter().filter(|r| r.id == id).collect();
    let scores: Vec<&Validation> = runs.iter().filter_map(|r| r.best.as_ref()).collect();
    let of =
        |f: &dyn Fn(&Validation) -> f64| mean_sd(&scores.iter().map(|v| f(v)).collect::<Vec<_>>());
    Some(VariantStats {
        id: id.to_owned(),
        runs: scores.len(),
        collapsed: runs.iter().filter(|r| r.collapsed).count(),
        ccc_valence: of(&|v| v.valence.ccc)?,
        ccc_arousal: of(&|v| v.arousal.ccc)?,
        ccc_mean: of(&|v| (v.valence.ccc + v.arousal.ccc) / 2.0)?,
        mse_valence: of(&|v| v.valence.mse)?,
        mse_arousal: of(&|v| v.arousal.mse)?,
    })
}

fn pm((mean, sd): (f64, f64), digits: usize, runs: usize) -> String {
    if runs > 1 {
        format!("{mean:.digits$} ± {sd:.digits$}")
    } else {
        format!("{mean:.digits$}")
    }
}

fn cells(s: Option<&VariantStats>) -> String {
    match s {
        Some(s) => format!(
            "{} | {} | {} | {} | {}{}",
            pm(s.ccc_valence, 3, s.runs),
            pm(s.ccc_arousal, 3, s.runs),
            pm(s.mse_valence, 4, s.runs),
            pm(s.mse_arousal, 4, s.runs),
            s.runs,
            if s.collapsed > 0 {
                format!(" ({} COLLAPSED)", s.collapsed)
            } else {
                String::new()
            }
        ),
        None => "– | – | – | – | 0".into(),
    }
}

/// The paper's Aff-Wild result for a row, where this project records it (DESIGN.md §2: the best
/// network, CNN-GRU on VGG-Face with landmarks): CCC V, CCC A, MSE V, MSE A.
const PAPER_BEST: (&str, [f64; 4]) = (
    "CNN-GRU 2 × 128, VGG-Face, landmarks",
    [0.57, 0.43, 0.08, 0.06],
);

const HEADER: &str = "| CCC V | CCC A | MSE V | MSE A | seeds |";
const RULE: &str = "|---:|---:|---:|---:|---:|";

/// The Markdown tables for whatever variants ran, headed by the table of the paper (Kollias et
/// al. 2017) each one reproduces: Table 4 backbones, Table 5 landmarks, Table 6 one annotator vs
/// the mean, Table 7 CNN vs CNN-RNN, Table 8 recurrent units × layers, Table 9 GRU vs LSTM, and
/// the separate-vs-joint and CCC-vs-MSE comparisons (not among Tables 4–9). Cells are mean ±
/// sample standard deviation over seeds; a row whose seeds collapsed says how many. The paper's
/// own Aff-Wild numbers are given only where this project records them (its best network); the
/// other rows cite the table without numbers.
pub fn tables(results: &[VariantResult]) -> String {
    let results = &with_separate(results);
    let mut md = String::new();
    let table = |md: &mut String, title: &str, paper: &str, first: &str, rows: &[(&str, &str)]| {
        let rows: Vec<(&str, VariantStats)> = rows
            .iter()
            .filter_map(|(label, id)| stats(results, id).map(|s| (*label, s)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "### {title}\n\n*Paper (Aff-Wild, not this data)*: {paper}\n"
        );
        let _ = writeln!(md, "| {first} {HEADER}\n|---{RULE}");
        for (label, s) in &rows {
            let _ = writeln!(md, "| {label} | {} |", cells(Some(s)));
        }
        md.push('\n');
    };
    let (best_label, [bv, ba, bmv, bma]) = PAPER_BEST;
    let best = format!(
        "its best network ({best_label}) reached CCC {bv:.2} / {ba:.2}, MSE {bmv:.2} / {bma:.2} \
         (valence / arousal)"
    );
    table(
        &mut md,
        "CNN backbones (paper Table 4) and landmarks (paper Table 5)",
        "Table 4 compares the backbones, Table 5 the CNNs without and with landmarks; their \
         numbers are not recorded in this project.",
        "backbone / input",
        &[
            ("VGG-Face, image only", "cnn-vgg_face-nolm"),
            ("VGG-Face, image + landmarks", "cnn-vgg_face-lm"),
            ("VGG-16, image only", "cnn-vgg16-nolm"),
            ("VGG-16, image + landmarks", "cnn-vgg16-lm"),
            ("ResNet-50, image only", "cnn-resnet50-nolm"),
            ("ResNet-50, image + landmarks", "cnn-resnet50-lm"),
            ("CNN-GRU 128 × 2, image only", "gru-128x2-nolm"),
            ("CNN-GRU 128 × 2, image + landmarks", "gru-128x2-lm"),
        ],
    );
    // Only with the other side of the comparison (the joint row alone says nothing here).
    if stats(results, ONE_ANNOTATOR).is_some() {
        table(
            &mut md,
            "Training on one annotator vs on the mean of the annotators, CNN-GRU 128 × 2 with \
             landmarks (paper Table 6)",
            "Table 6: training on the mean of the annotators beats training on one annotator; its \
             numbers are not recorded in this project. Here the annotators are simulated (lag, bias, \
             scale, smooth noise) and both rows are validated against their mean.",
            "trained on",
            &[
                ("mean of the annotators", "gru-128x2-lm"),
                ("one annotator (annotator-1)", ONE_ANNOTATOR),
                (
                    "one annotator, its starting CNN (VGG-16)",
                    "cnn-vgg16-lm-annotator-1",
                ),
                (
                    "one annotator, its starting CNN (VGG-Face)",
                    "cnn-vgg_face-lm-annotator-1",
                ),
            ],
        );
    }
    table(
        &mut md,
        "CNN vs CNN-RNN, with landmarks (paper Table 7)",
        &format!(
            "Table 7: the CNN-RNN beats the CNN; {best}. Here the CNN-GRU starts from the CNN \
             (its conv part), so the rows show what the recurrent layers add."
        ),
        "network",
        &[
            ("CNN (VGG-16)", "cnn-vgg16-lm"),
            ("CNN (VGG-Face)", "cnn-vgg_face-lm"),
            ("CNN-GRU 128 × 2", "gru-128x2-lm"),
        ],
    );
    table(
        &mut md,
        "CNN-GRU: recurrent units × layers (paper Table 8)",
        &format!("Table 8: 2 layers of 128 units is the best setting; {best}."),
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
        "GRU vs LSTM, 128 × 2 with landmarks (paper Table 9)",
        &format!("Table 9: the GRU beats the (peephole) LSTM; {best}."),
        "cell",
        &[
            ("GRU", "gru-128x2-lm"),
            ("LSTM (peephole)", "lstm-128x2-lm"),
        ],
    );
    if stats(results, SEPARATE).is_some() {
        table(
            &mut md,
            "One network per dimension vs one joint network, CNN-GRU 128 × 2 with landmarks (not one \
             of the paper's Tables 4–9)",
            "the paper found separate valence and arousal networks slightly better than one joint \
             network; no table numbers recorded here.",
            "networks",
            &[
                ("one joint network", "gru-128x2-lm"),
                (
                    "separate networks (valence net's V, arousal net's A)",
                    SEPARATE,
                ),
                (
                    "valence net's starting CNN (VGG-16)",
                    "cnn-vgg16-lm-valence",
                ),
                (
                    "arousal net's starting CNN (VGG-16)",
                    "cnn-vgg16-lm-arousal",
                ),
                (
                    "valence net's starting CNN (VGG-Face)",
                    "cnn-vgg_face-lm-valence",
                ),
                (
                    "arousal net's starting CNN (VGG-Face)",
                    "cnn-vgg_face-lm-arousal",
                ),
            ],
        );
    }
    table(
        &mut md,
        "Loss: CCC vs MSE (not one of the paper's Tables 4–9)",
        "the paper trains with the CCC loss, which it found better on CCC than the MSE; no \
         table numbers recorded here.",
        "network, loss",
        &[
            ("CNN, CCC", "cnn-vgg16-lm"),
            ("CNN, MSE", "cnn-vgg16-lm-mse"),
            ("CNN-GRU, CCC", "gru-128x2-lm"),
            ("CNN-GRU, MSE", "gru-128x2-lm-mse"),
        ],
    );
    md
}

/// Whether one of the paper's findings holds on this data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The paper's side wins by more than the spread.
    Holds,
    /// The other side wins by more than the spread.
    DoesNotHold,
    /// The difference is within the spread (or there is no spread: one seed).
    Inconclusive,
}

impl Verdict {
    /// Words for the report.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One of the paper's findings checked on the results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The claim, e.g. "CNN-GRU > CNN".
    pub claim: String,
    /// The variant the paper favours and the one it beats (for "2 × 128 vs other sizes": the
    /// best-scoring other size).
    pub favoured: String,
    /// The variant it is compared with.
    pub other: String,
    /// Mean CCC (mean of valence and arousal, averaged over seeds) of `favoured` minus `other`.
    pub difference: f64,
    /// `√(sd_favoured² + sd_other²)` of the per-seed mean CCC: the spread of a one-seed
    /// difference.
    pub spread: f64,
    /// Seeds behind the smaller side.
    pub seeds: usize,
    /// The verdict.
    pub verdict: Verdict,
}

/// The verdict on `favoured` − `other`: holds when the difference of the mean CCCs exceeds the
/// spread, does not hold when it is below minus the spread, else (or with fewer than two
/// seeds on either side) inconclusive.
pub fn verdict(favoured: &VariantStats, other: &VariantStats) -> (f64, f64, Verdict) {
    let difference = favoured.ccc_mean.0 - other.ccc_mean.0;
    let spread = (favoured.ccc_mean.1.powi(2) + other.ccc_mean.1.powi(2)).sqrt();
    let verdict = if favoured.runs < 2 || other.runs < 2 {
        Verdict::Inconclusive
    } else if difference > spread {
        Verdict::Holds
    } else if difference < -spread {
        Verdict::DoesNotHold
    } else {
        Verdict::Inconclusive
    };
    (difference, spread, verdict)
}

/// The paper's findings that the results can test: CNN-GRU > CNN; landmarks help (CNN and
/// CNN-GRU); GRU > LSTM; 2 × 128 beats the other sizes; the CCC loss beats the MSE loss on CCC
/// (CNN and CNN-GRU); training on the mean of the annotators beats one annotator; separate
/// networks per dimension beat one joint network. A finding whose variants did not run is left
/// out.
pub fn findings(results: &[VariantResult]) -> Vec<Finding> {
    let results = &with_separate(results);
    let pairs: [(&str, &str, &str); 9] = [
        ("CNN-GRU > CNN (Table 7)", "gru-128x2-lm", "cnn-vgg16-lm"),
        (
            "landmarks help the CNN (Table 5)",
            "cnn-vgg16-lm",
            "cnn-vgg16-nolm",
        ),
        (
            "landmarks help the CNN-GRU",
            "gru-128x2-lm",
            "gru-128x2-nolm",
        ),
        ("GRU > LSTM (Table 9)", "gru-128x2-lm", "lstm-128x2-lm"),
        (
            "CCC loss > MSE loss, CNN",
            "cnn-vgg16-lm",
            "cnn-vgg16-lm-mse",
        ),
        (
            "CCC loss > MSE loss, CNN-GRU",
            "gru-128x2-lm",
            "gru-128x2-lm-mse",
        ),
        ("2 × 128 > other sizes (Table 8)", "gru-128x2-lm", ""),
        (
            "mean of annotators > one annotator (Table 6)",
            "gru-128x2-lm",
            ONE_ANNOTATOR,
        ),
        (
            "separate networks > one joint network",
            SEPARATE,
            "gru-128x2-lm",
        ),
    ];
    let sizes = [
        "gru-100x1-lm",
        "gru-100x2-lm",
        "gru-128x1-lm",
        "gru-150x1-lm",
        "gru-150x2-lm",
    ];
    pairs
        .iter()
        .filter_map(|(claim, a, b)| {
            let favoured = stats(results, a)?;
            let other = if b.is_empty() {
                sizes
                    .iter()
                    .filter_map(|id| stats(results, id))
                    .max_by(|x, y| x.ccc_mean.0.total_cmp(&y.ccc_mean.0))?
            } else {
                stats(results, b)?
            };
            let (difference, spread, verdict) = verdict(&favoured, &other);
            Some(Finding {
                claim: (*claim).to_owned(),
                favoured: favoured.id.clone(),
                other: other.id.clone(),
                difference,
                spread,
                seeds: favoured.runs.min(other.runs),
                verdict,
            })
        })
        .collect()
}

/// The findings as a Markdown table.
pub fn findings_table(findings: &[Finding]) -> String {
    let mut md = String::from(
        "### The paper's findings on this data\n\nMean CCC = mean of valence and arousal CCC, \
         averaged over seeds; spread = √(sd₁² + sd₂²) of the per-seed mean CCC. *holds*: the \
         difference exceeds the spread; *does not hold*: it is below minus the spread; else \
         *inconclusive*.\n\n| finding | paper's side | other side | difference | spread | seeds \
         | verdict |\n|---|---|---|---:|---:|---:|---|\n",
    );
    for f in findings {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:+.3} | {:.3} | {} | **{}** |",
            f.claim,
            f.favoured,
            f.other,
            f.difference,
            f.spread,
            f.seeds,
            f.verdict.text()
        );
    }
    md.push('\n');
    md
}

/// The `--quick` acceptance check: no run collapsed, and CNN-GRU with landmarks reaches
/// validation CCC ≥ `threshold` on both dimensions (mean over seeds) and beats the CNN with
/// landmarks (mean CCC) at equal budget.
pub fn quick_check(results: &[VariantResult], threshold: f64) -> Result<String, String> {
    let (Some(gru), Some(cnn)) = (
        stats(results, "gru-128x2-lm"),
        stats(results, "cnn-vgg16-lm"),
    ) else {
        return Err("gru-128x2-lm or cnn-vgg16-lm has no validation score".into());
    };
    let collapsed: Vec<String> = results
        .iter()
        .filter(|r| r.collapsed)
        .map(|r| format!("{} (seed {})", r.id, r.seed))
        .collect();
    let text = format!(
        "CNN-GRU + landmarks: CCC V {:.3} A {:.3} (mean {:.3}); CNN + landmarks: mean {:.3}; \
         collapsed runs: {}",
        gru.ccc_valence.0,
        gru.ccc_arousal.0,
        gru.ccc_mean.0,
        cnn.ccc_mean.0,
        if collapsed.is_empty() {
            "none".to_owned()
        } else {
            collapsed.join(", ")
        }
    );
    if collapsed.is_empty()
        && gru.ccc_valence.0 >= threshold
        && gru.ccc_arousal.0 >= threshold
        && gru.ccc_mean.0 > cnn.ccc_mean.0
    {
        Ok(text)
    } else {
        Err(text)
    }
}
