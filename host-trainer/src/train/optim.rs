//! Adam written on tensors (the update of `torch.optim.Adam`, L2 weight decay added to the
//! gradient), so its state — moments and step count — can be saved and restored exactly for a
//! bit-exact `--resume` (tch's built-in optimisers keep their state inside libtorch).

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use super::config::OptimConfig;

/// Learning rate at `step` (0-based): `lr · decay^⌊step / decay_steps⌋`.
pub fn learning_rate(config: &OptimConfig, step: u64) -> f64 {
    config.lr * config.decay.powi((step / config.decay_steps) as i32)
}

/// Adam over a fixed list of named parameters.
#[derive(Debug)]
pub struct Adam {
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    steps: u64,
    config: OptimConfig,
}

impl Adam {
    /// Optimiser for `params` (names must be unique) with zero moments.
    pub fn new(params: Vec<(String, Tensor)>, config: &OptimConfig) -> Self {
        let zeros = |p: &Tensor| p.zeros_like().detach();
        Self {
            exp_avg: params.iter().map(|(_, p)| zeros(p)).collect(),
            exp_avg_sq: params.iter().map(|(_, p)| zeros(p)).collect(),
            params,
            steps: 0,
            config: config.clone(),
        }
    }

    /// Clears the gradients of every parameter.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// L2 norm of the current gradients of all parameters (those without one count as zero).
    pub fn gradient_norm(&self) -> f64 {
        tch::no_grad(|| {
            self.params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(Tensor::defined)
                .map(|g| g.square().sum(Kind::Double).double_value(&[]))
                .sum::<f64>()
                .sqrt()
        })
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone. With
    /// `clip_norm`, the gradients are first scaled down so their joint L2 norm is at most that.
    pub fn step(&mut self, lr: f64) {
        let clip = self.config.clip_norm.map(|max| {
            let norm = self.gradient_norm();
            if norm > max { max / norm } else { 1.0 }
        });
        self.steps += 1;
        let (b1, b2) = (self.config.beta1, self.config.beta2);
        let correction1 = 1.0 - b1.powi(self.steps as i32);
        let correction2_sqrt = (1.0 - b2.powi(self.steps as i32)).sqrt();
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let mut grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                if let Some(scale) = clip.filter(|&s| s < 1.0) {
                    grad *= scale;
                }
                let grad = if self.config.weight_decay > 0.0 {
                    grad + &*p * self.config.weight_decay
                } else {
                    grad
                };
                let (m, v) = (&mut self.exp_avg[i], &mut self.exp_avg_sq[i]);
                *m *= b1;
                *m += &grad * (1.0 - b1);
                *v *= b2;
                *v += grad.square() * (1.0 - b2);
                let denom = v.sqrt() / correction2_sqrt + self.config.eps;
                *p -= &*m / denom * (lr / correction1);
            }
        });
    }

    /// Saves moments and step count (`<file>.safetensors`).
    pub fn save(&self, path: &Path) -> Result<(), tch::TchError> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            named.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            named.push((
                format!("exp_avg_sq.{name}"),
                self.exp_avg_sq[i].shallow_clone(),
            ));
        }
        named.push((
            "steps".into(),
            Tensor::from_slice(&[self.steps as i64]).to_kind(Kind::Int64),
        ));
        Tensor::write_safetensors(&named, path)
    }

    /// Restores what [`Adam::save`] wrote for the same parameter list.
    pub fn load(&mut self, path: &Path) -> Result<(), tch::TchError> {
        let saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        let get = |key: String| {
            saved
                .get(&key)
                .ok_or_else(|| tch::TchError::TensorNameNotFound(key, path.display().to_string()))
        };
        tch::no_grad(|| -> Result<(), tch::TchError> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                self.exp_avg[i].copy_(get(format!("exp_avg.{name}"))?);
                self.exp_avg_sq[i].copy_(get(format!("exp_avg_sq.{name}"))?);
            }
            Ok(())
        })?;
        self.steps = get("steps".into())?.int64_value(&[0]) as u64;
        Ok(())
    }
}
