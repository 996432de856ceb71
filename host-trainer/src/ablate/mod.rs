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
//! Every variant is the base configuration plus a few `key = value` overrides, trained for the
//! same number of steps on the same frames per step (a CNN batch holds as many frames as a
//! CNN-RNN batch: `sequences × sequence_length`), validated on the same split, once per seed.
//! Tables give mean ± standard deviation over the seeds, and [`findings`] states whether each
//! of the paper's conclusions holds on this data, given that spread.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use affect_shared::metadata::Validation;
use serde::Serialize;

use crate::data::Annotation;
use crate::train::config::TrainConfig;
use crate::train::memory::{MemoryBatches, MemoryDataset, MemoryLabels};
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

/// The variant that trains the CNN-GRU on one annotator's labels (Table 6).
pub const ONE_ANNOTATOR: &str = "gru-128x2-lm-annotator-1";

/// The CNN-GRU trained on valence only (one of the separate networks).
pub const VALENCE_ONLY: &str = "gru-128x2-lm-valence";

/// The CNN-GRU trained on arousal only (the other separate network).
pub const AROUSAL_ONLY: &str = "gru-128x2-lm-arousal";

/// The id of the separate networks scored together ([`with_separate`]): not a trained variant.
pub const SEPARATE: &str = "gru-128x2-lm-separate";

/// The variants behind every table. Ids: `cnn-<backbone>-<lm|nolm>`, `<gru|lstm>-<hidden>x<layers>
/// -<lm|nolm>[-mse]`, and for the CNN-GRU 128 × 2 with landmarks `-valence` / `-arousal` (one
/// dimension's loss only) and `-annotator-1` (trained on annotator 1's labels). VGG-16 and
/// VGG-Face share one architecture; they differ only in pretrained weights, so `vgg_face` is
/// included only when `vgg_face_weights` is given.
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
    for (id, key, value) in [
        (VALENCE_ONLY, "loss.dimensions", "valence"),
        (AROUSAL_ONLY, "loss.dimensions", "arousal"),
        (ONE_ANNOTATOR, "data.annotation", "annotator-1"),
    ] {
        let mut v = rnn(id, "gru", 128, 2, true, "ccc");
        v.overrides.push((key.to_owned(), s(value)));
        plan.push(v);
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

/// Outcome of one variant trained with one seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The training data of an ablation.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// The frames, labelled with the annotators' mean.
    pub data: Arc<MemoryDataset>,
    /// Each annotator's own labels of the same frames (empty without simulated annotators).
    pub annotators: Vec<Arc<MemoryLabels>>,
}

/// Trains every variant once per seed in `out/<id>/seed-<seed>` and returns the results in plan
/// order (a variant's seeds together). The seed sets `seed` of the training configuration:
/// initialisation, dropout and batch order; the data stay the same. A variant whose
/// `data.annotation` names an annotator trains on that annotator's labels of `train_set`
/// instead of the mean; all validate on `validation`'s labels.
pub fn run(
    base: &[(String, toml::Value)],
    variants: &[Variant],
    seeds: &[u64],
    train_set: &TrainingSet,
    validation: &MemoryDataset,
    out: &Path,
    mut on_done: impl FnMut(&VariantResult),
) -> Result<Vec<VariantResult>, AblateError> {
    let mut results = Vec::new();
    for v in variants {
        for &seed in seeds {
            let mut seeded = base.to_vec();
            seeded.push(("seed".into(), i(seed as i64)));
            let config = variant_config(&seeded, v)?;
            let (sequences, steps) = config.batch_shape();
            let train_err = |source| AblateError::Train {
                id: v.id.clone(),
                source,
            };
            let mut source =
                MemoryBatches::new(train_set.data.clone(), config.seed, sequences, steps)
                    .map_err(|e| train_err(TrainError::Source(Box::new(e))))?;
            if let Annotation::Annotator(name) = &config.data.annotation {
                let annotators = &train_set.annotators;
                let labels = annotators.iter().find(|l| &l.name == name).ok_or_else(|| {
                    AblateError::Annotation {
                        id: v.id.clone(),
                        name: name.clone(),
                        present: if annotators.is_empty() {
                            "no per-annotator labels".into()
                        } else {
                            let names: Vec<&str> =
                                annotators.iter().map(|l| l.name.as_str()).collect();
                            format!("annotators {}", names.join(", "))
                        },
                    }
                })?;
                source = source
                    .with_labels(labels.clone())
                    .map_err(|e| train_err(TrainError::Source(Box::new(e))))?;
            }
            let dir = out.join(&v.id).join(format!("seed-{seed}"));
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
                seed,
                best: summary.best.map(|b| b.validation),
                best_step: summary.best.map(|b| b.step),
                collapsed: summary.collapse.is_some(),
                seconds: started.elapsed().as_secs_f64(),
            };
            on_done(&result);
            results.push(result);
        }
    }
    Ok(results)
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
            ],
        );
    }
    table(
        &mut md,
        "CNN vs CNN-RNN, with landmarks (paper Table 7)",
        &format!("Table 7: the CNN-RNN beats the CNN; {best}."),
        "network",
        &[
            ("CNN (VGG-16)", "cnn-vgg16-lm"),
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
