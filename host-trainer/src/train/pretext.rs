//! Landmark pretraining: a stand-in for the pretrained backbones the paper starts from.
//!
//! The paper's networks start from VGG-Face or ImageNet weights. Width-scaled networks (the
//! quick study's 1/16-width VGG-16 and ResNet-50 at 48 px) have no such weights, and trained
//! from random weights the image-only ones learned nothing in a few hundred steps on some seeds
//! (README, "Collapses"). [`pretrain_landmarks`] trains a backbone to regress the 68 facial
//! landmarks from the (augmented) training crops — what a face-alignment network learns; no
//! affect label is read — and writes its conv part under the torchvision names
//! `network.pretrained` loads ([`crate::model::pretrained::load_backbone`]). The pretext head
//! (one linear layer from the backbone's features to the 136 standardised coordinates) is
//! discarded.

use std::path::Path;

use affect_shared::contract::LANDMARK_VALUES;
use tch::{Kind, Tensor, nn};

use super::augment::Augmented;
use super::config::TrainConfig;
use super::optim::{Adam, learning_rate};
use super::source::{BatchSource, BatchTensors};
use super::{LANDMARK_STATISTICS_BATCHES, TrainError, landmark_statistics, select_device};
use crate::model::backbone::Features;
use crate::model::pretrained::is_backbone_parameter;

/// What a landmark pretraining reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PretextSummary {
    /// Loss of the first step (mean squared error of standardised coordinates; ≈ 1 at the start).
    pub first_loss: f64,
    /// Exponentially smoothed loss (factor 0.9) at the last step.
    pub last_loss: f64,
}

/// Trains `config.network`'s backbone for `config.schedule.steps` steps to regress the
/// landmarks of `source`'s frames (augmented with `config.augment`, optimised with
/// `config.optim`, seeded by `config.seed`) and writes the backbone's parameters and BatchNorm
/// statistics to `out` (`.safetensors`, written to a temporary file and renamed).
pub fn pretrain_landmarks(
    config: &TrainConfig,
    source: &mut dyn BatchSource,
    out: &Path,
) -> Result<PretextSummary, TrainError> {
    config.validate()?;
    let device = select_device(config.device)?;
    if let Some(threads) = config.threads {
        tch::set_num_threads(threads as i32);
    }
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(device);
    let features = Features::new(&vs.root(), &config.network);
    let head = nn::linear(
        vs.root() / "pretext",
        features.features(),
        LANDMARK_VALUES as i64,
        Default::default(),
    );
    let mut source = Augmented::new(source, &config.augment, config.seed);
    let (mean, std) = landmark_statistics(&mut source, LANDMARK_STATISTICS_BATCHES)?;
    scale_first_conv(&vs, &config.network, &mut source)?;
    let mean = Tensor::from_slice(&mean).to_device(device);
    let std = Tensor::from_slice(&std).to_device(device);
    let mut trainable: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    trainable.sort_by(|a, b| a.0.cmp(&b.0));
    let mut adam = Adam::new(trainable, &config.optim);
    let mut summary = PretextSummary {
        first_loss: f64::NAN,
        last_loss: f64::NAN,
    };
    for step in 0..config.schedule.steps {
        tch::manual_seed(config.seed.wrapping_add(step + 1) as i64);
        let batch = source.next_batch().map_err(TrainError::Source)?;
        let t = BatchTensors::new(&batch, device)?;
        let size = t.faces.size();
        let faces = t.faces.reshape([-1, size[2], size[3], size[4]]);
        let target = (t.landmarks.reshape([-1, LANDMARK_VALUES as i64]) - &mean) / &std;
        let mask = t.mask.reshape([-1, 1]);
        let pred = features.forward(&faces, true).apply(&head);
        let frames = mask.sum(Kind::Float).clamp_min(1.0) * LANDMARK_VALUES as f64;
        let loss = ((pred - target).square() * &mask).sum(Kind::Float) / frames;
        adam.zero_grad();
        loss.backward();
        adam.step(learning_rate(&config.optim, step));
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::Diverged {
                step: step + 1,
                loss: value,
            });
        }
        if step == 0 {
            summary.first_loss = value;
            summary.last_loss = value;
        }
        summary.last_loss = 0.9 * summary.last_loss + 0.1 * value;
    }
    let mut backbone: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| is_backbone_parameter(&config.network, name))
        .map(|(name, t)| (name, t.detach().to_device(tch::Device::Cpu)))
        .collect();
    backbone.sort_by(|a, b| a.0.cmp(&b.0));
    let io = |source| TrainError::Io {
        path: out.to_owned(),
        source,
    };
    let partial = out.with_extension("safetensors.partial");
    Tensor::write_safetensors(&backbone, &partial)?;
    std::fs::rename(&partial, out).map_err(io)?;
    Ok(summary)
}

/// Divides the first convolution's initial weights by the standard deviation of the crops in
/// `source`'s next batch (which is then rewound): He initialisation assumes inputs of unit
/// variance, which ImageNet-normalised crops have, while Caffe-preprocessed ones (VGG-Face:
/// mean-subtracted 0–255 values) have a deviation near 60 — from random weights every
/// activation of the unnormalised VGG stack is then that much too large.
fn scale_first_conv(
    vs: &nn::VarStore,
    network: &crate::model::NetworkConfig,
    source: &mut dyn BatchSource,
) -> Result<(), TrainError> {
    let start = source.position();
    let batch = source.next_batch().map_err(TrainError::Source)?;
    source.seek(start).map_err(TrainError::Source)?;
    let n = batch.faces.len().max(1) as f64;
    let mean = batch.faces.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = batch
        .faces
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = var.sqrt();
    if !(sd.is_finite() && sd > 0.0) {
        return Ok(());
    }
    let name = if network.backbone == crate::model::Backbone::Resnet50 {
        "conv1.weight"
    } else {
        "features.0.weight"
    };
    if let Some(mut weight) = vs.variables().remove(name) {
        tch::no_grad(|| {
            let _ = weight.g_mul_scalar_(1.0 / sd);
        });
    }
    Ok(())
}
