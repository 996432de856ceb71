//! Spotting a collapsed run while it trains.
//!
//! A CCC-trained regressor can settle where its validation CCC is ≈ 0 while its outputs drift far
//! from the labels: when the covariance between outputs and labels is ≈ 0 (features without
//! signal yet) the CCC's gradient with respect to the output mean and scale is ≈ 0, and when it
//! is negative the loss *improves* by inflating the output's variance and offset (CCC → 0⁻). Once
//! the output scale is large, every gradient is divided by it and the run stays there.
//!
//! The check runs at each validation after [`collapse_check_start`]: a dimension has collapsed
//! when its |CCC| is below [`COLLAPSED_CCC`] **and** its MSE exceeds [`MSE_FACTOR`] × the
//! variance of its labels (predicting the label mean everywhere would give MSE = variance, so the
//! outputs are worse than a constant). The report names the likely causes for the run's
//! configuration.

use serde::{Deserialize, Serialize};

use affect_shared::metadata::Validation;

use super::config::{LossKind, TrainConfig};
use crate::eval::predict::VideoPrediction;
use crate::model::Cell;

/// |CCC| below this counts as "no agreement".
pub const COLLAPSED_CCC: f64 = 0.05;

/// MSE above this multiple of the label variance counts as "worse than a constant".
pub const MSE_FACTOR: f64 = 2.0;

/// Learning rates above this are named as a likely cause (the paper's is 1e-3).
const HIGH_LR: f64 = 0.01;

/// First step at which validations are checked: `schedule.collapse_after`, or a quarter of the
/// run when unset (the first steps of a healthy run may still score ≈ 0).
pub fn collapse_check_start(config: &TrainConfig) -> u64 {
    config
        .schedule
        .collapse_after
        .unwrap_or(config.schedule.steps / 4)
}

/// Mean and standard deviation of predictions and labels over the scored frames, per
/// dimension (valence, arousal).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean prediction.
    pub prediction_mean: [f64; 2],
    /// Standard deviation of the predictions.
    pub prediction_std: [f64; 2],
    /// Mean label.
    pub label_mean: [f64; 2],
    /// Standard deviation of the labels.
    pub label_std: [f64; 2],
}

impl Spread {
    /// Population moments over every scored frame of `predictions`; `None` without any.
    pub fn of(predictions: &[VideoPrediction]) -> Option<Self> {
        let (mut n, mut sp, mut sp2, mut st, mut st2) =
            (0.0, [0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]);
        for v in predictions {
            for ((p, t), _) in v
                .predictions
                .iter()
                .zip(&v.truth)
                .zip(&v.scored)
                .filter(|(_, s)| **s)
            {
                n += 1.0;
                for d in 0..2 {
                    let (p, t) = (f64::from(p[d]), f64::from(t[d]));
                    sp[d] += p;
                    sp2[d] += p * p;
                    st[d] += t;
                    st2[d] += t * t;
                }
            }
        }
        if n == 0.0 {
            return None;
        }
        let mean = |s: [f64; 2]| s.map(|v| v / n);
        let std = |s: [f64; 2], s2: [f64; 2]| {
            [0, 1].map(|d| (s2[d] / n - (s[d] / n).powi(2)).max(0.0).sqrt())
        };
        Some(Self {
            prediction_mean: mean(sp),
            prediction_std: std(sp, sp2),
            label_mean: mean(st),
            label_std: std(st, st2),
        })
    }
}

/// A validation that looks collapsed, with what probably caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collapse {
    /// Step of the validation.
    pub step: u64,
    /// The collapsed dimensions (`valence`, `arousal`).
    pub dimensions: Vec<String>,
    /// The validation score.
    pub validation: Validation,
    /// Where predictions and labels sit.
    pub spread: Spread,
    /// Likely causes for this configuration, most likely first.
    pub causes: Vec<String>,
}

impl std::fmt::Display for Collapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (v, a, s) = (
            &self.validation.valence,
            &self.validation.arousal,
            &self.spread,
        );
        write!(
            f,
            "COLLAPSED at step {} ({}): CCC V {:.3} A {:.3}, MSE V {:.3} A {:.3} vs label \
             variance {:.3} / {:.3}; predictions {:.2} ± {:.2} / {:.2} ± {:.2} vs labels \
             {:.2} ± {:.2} / {:.2} ± {:.2}. Likely causes: {}",
            self.step,
            self.dimensions.join(" and "),
            v.ccc,
            a.ccc,
            v.mse,
            a.mse,
            s.label_std[0].powi(2),
            s.label_std[1].powi(2),
            s.prediction_mean[0],
            s.prediction_std[0],
            s.prediction_mean[1],
            s.prediction_std[1],
            s.label_mean[0],
            s.label_std[0],
            s.label_mean[1],
            s.label_std[1],
            self.causes.join("; ")
        )
    }
}

/// A smoothed training loss of a CCC-kind run below this while validation has collapsed means
/// the network fits its training batches (training CCC ≳ 0.75) but not unseen videos.
pub const MEMORISED_TRAIN_LOSS: f64 = 0.25;

/// The collapse verdict on one validation at `step` of a run with `config`; `None` when the run
/// looks healthy. Only the dimensions the run trains (`loss.dimensions`) are checked: an
/// untrained output scores ≈ 0 by design. `train_loss` is the run's smoothed training loss at
/// that step, when known: it tells a run that learnt nothing from one that memorised its
/// training videos.
pub fn check(
    config: &TrainConfig,
    step: u64,
    score: &Validation,
    spread: &Spread,
    train_loss: Option<f64>,
) -> Option<Collapse> {
    let dims = [("valence", &score.valence), ("arousal", &score.arousal)];
    let dimensions: Vec<String> = dims
        .iter()
        .enumerate()
        .filter(|(d, (_, s))| {
            config.loss.dimensions.trains(*d)
                && s.ccc.abs() < COLLAPSED_CCC
                && s.mse > MSE_FACTOR * spread.label_std[*d].powi(2)
        })
        .map(|(_, (name, _))| (*name).to_owned())
        .collect();
    if dimensions.is_empty() {
        return None;
    }
    Some(Collapse {
        step,
        dimensions,
        validation: *score,
        spread: *spread,
        causes: causes(config, step, spread, train_loss),
    })
}

fn causes(
    config: &TrainConfig,
    step: u64,
    spread: &Spread,
    train_loss: Option<f64>,
) -> Vec<String> {
    let mut causes = Vec::new();
    if let Some(loss) = train_loss.filter(|l| {
        config.loss.kind != LossKind::Mse
            && step > config.loss.warmup_steps
            && *l < MEMORISED_TRAIN_LOSS
    }) {
        causes.push(format!(
            "the network fits its training batches (smoothed training loss {loss:.3}) but not \
             unseen videos: it memorises the training videos — within a video the person, head \
             pose and lighting change smoothly with time, as the labels do, so they predict the \
             labels there and nowhere else; train on more people (videos), or add landmarks"
        ));
    }
    if config.optim.lr > HIGH_LR {
        causes.push(format!(
            "optim.lr = {} is far above the paper's 1e-3: lower it",
            config.optim.lr
        ));
    }
    let drifted = (0..2).any(|d| {
        let label = spread.label_std[d].max(1e-6);
        spread.prediction_std[d] > 2.0 * label
            || (spread.prediction_mean[d] - spread.label_mean[d]).abs() > label
    });
    if drifted {
        causes.push(
            "the output's mean or scale drifted away from the labels': with output/label \
             covariance ≈ 0 or < 0 the CCC loss does not hold them (and gains by inflating \
             them)"
                .into(),
        );
    }
    if config.loss.kind != LossKind::Mse && config.loss.anchor_weight == 0.0 {
        causes.push(
            "CCC loss without the moment anchor (loss.anchor_weight = 0, the paper's setting): \
             nothing holds the output's mean and scale; set loss.anchor_weight = 1"
                .into(),
        );
    }
    if config.network.is_recurrent() && !config.network.feature_norm {
        causes.push(
            "recurrent layers read unnormalised features (network.feature_norm = false, the \
             paper's network): trained from scratch they grow until the gates saturate; set \
             network.feature_norm = true"
                .into(),
        );
    }
    if config.network.is_recurrent()
        && config.network.cell == Cell::Lstm
        && config.network.forget_bias.is_none_or(|b| b < 1.0)
    {
        causes.push(
            "LSTM forget-gate bias starts small (PyTorch's uniform initialisation, or \
             network.forget_bias < 1): set network.forget_bias = 1 to keep the memory open early"
                .into(),
        );
    }
    if !config.network.landmarks {
        causes.push(
            "image-only input: the image features may carry no signal yet (train longer, or \
             add landmarks)"
                .into(),
        );
    }
    if config.optim.clip_norm.is_none() {
        causes.push("no gradient clipping bounds a bad step: set optim.clip_norm".into());
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use affect_shared::metadata::DimensionScore;

    fn collapsed_validation() -> (Validation, Spread) {
        let dim = |ccc| DimensionScore { ccc, mse: 0.5 };
        let score = Validation {
            valence: dim(0.01),
            arousal: dim(-0.02),
            frames: 100,
        };
        let spread = Spread {
            prediction_mean: [0.1, 0.0],
            prediction_std: [0.3, 0.3],
            label_mean: [0.2, 0.1],
            label_std: [0.3, 0.3],
        };
        (score, spread)
    }

    #[test]
    fn a_collapse_with_a_low_training_loss_names_memorisation_first() {
        let config = TrainConfig::default();
        let (score, spread) = collapsed_validation();
        let memorised = check(&config, 300, &score, &spread, Some(0.06)).expect("collapsed");
        assert!(
            memorised.causes[0].contains("memorises the training videos"),
            "{:?}",
            memorised.causes
        );
        let untrained = check(&config, 300, &score, &spread, Some(0.9)).expect("collapsed");
        assert!(
            untrained.causes.iter().all(|c| !c.contains("memorises")),
            "{:?}",
            untrained.causes
        );
        let unknown = check(&config, 300, &score, &spread, None).expect("collapsed");
        assert!(unknown.causes.iter().all(|c| !c.contains("memorises")));
    }
}
