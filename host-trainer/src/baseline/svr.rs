//! Linear support vector regression: L2-regularised, ε-insensitive (L1) loss, solved in the dual
//! by coordinate descent (Ho & Lin 2012; liblinear's `L2R_L1LOSS_SVR_DUAL`):
//!
//! ```text
//! min_w  ½‖w‖² + C Σ max(0, |wᵀxᵢ − yᵢ| − ε)        (xᵢ carries a constant 1 for the bias)
//! ```
//! Features are standardised (training mean and standard deviation) before fitting.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// SVR hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SvrParams {
    /// Penalty on errors beyond ε.
    pub c: f64,
    /// Width of the insensitive tube.
    pub epsilon: f64,
    /// Passes over the data at most.
    pub max_epochs: usize,
    /// Stop when no coordinate moved more than this in an epoch.
    pub tolerance: f64,
    /// Seed of the coordinate order.
    pub seed: u64,
}

impl Default for SvrParams {
    fn default() -> Self {
        Self {
            c: 0.1,
            epsilon: 0.05,
            max_epochs: 200,
            tolerance: 1e-4,
            seed: 0,
        }
    }
}

/// A fitted linear SVR with its feature standardisation.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvr {
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

/// Feature mean and inverse standard deviation (1 for constant features).
fn standardisation(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let dim = rows[0].len();
    let n = rows.len() as f64;
    let mut mean = vec![0.0; dim];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += f64::from(*v) / n;
        }
    }
    let mut var = vec![0.0; dim];
    for r in rows {
        for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    let scale = var
        .into_iter()
        .map(|v| if v > 1e-12 { 1.0 / v.sqrt() } else { 1.0 })
        .collect();
    (mean, scale)
}

impl LinearSvr {
    /// Fits `targets` from `rows` (all rows the same length, at least one).
    pub fn fit(rows: &[Vec<f32>], targets: &[f32], params: SvrParams) -> Self {
        assert!(!rows.is_empty() && rows.len() == targets.len());
        let (mean, scale) = standardisation(rows);
        let dim = mean.len();
        // Standardised rows with a trailing 1 for the bias.
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (f64::from(*v) - m) * s)
                    .chain(std::iter::once(1.0))
                    .collect()
            })
            .collect();
        let diag: Vec<f64> = x.iter().map(|r| r.iter().map(|v| v * v).sum()).collect();
        let mut beta = vec![0.0; x.len()];
        let mut w = vec![0.0; dim + 1];
        let mut order: Vec<usize> = (0..x.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        for _ in 0..params.max_epochs {
            order.shuffle(&mut rng);
            let mut largest_step: f64 = 0.0;
            for &i in &order {
                let xi = &x[i];
                let g = xi.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() - f64::from(targets[i]);
                let (gp, gn) = (g + params.epsilon, g - params.epsilon);
                let h = diag[i];
                let d = if gp < h * beta[i] {
                    -gp / h
                } else if gn > h * beta[i] {
                    -gn / h
                } else {
                    -beta[i]
                };
                let new = (beta[i] + d).clamp(-params.c, params.c);
                let delta = new - beta[i];
                if delta != 0.0 {
                    beta[i] = new;
                    for (wj, xj) in w.iter_mut().zip(xi) {
                        *wj += delta * xj;
                    }
                    largest_step = largest_step.max(delta.abs());
                }
            }
            if largest_step < params.tolerance {
                break;
            }
        }
        let bias = w.pop().unwrap_or(0.0);
        Self {
            mean,
            scale,
            weights: w,
            bias,
        }
    }

    /// Prediction for one feature row.
    pub fn predict(&self, row: &[f32]) -> f32 {
        let s: f64 = row
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((v, m), s), w)| (f64::from(*v) - m) * s * w)
            .sum();
        (s + self.bias) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn recovers_a_noisy_linear_function() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let rows: Vec<Vec<f32>> = (0..400)
            .map(|_| (0..5).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let f = |r: &[f32]| 0.5 * r[0] - 0.3 * r[2] + 0.1;
        let targets: Vec<f32> = rows
            .iter()
            .map(|r| f(r) + rng.random_range(-0.02..0.02))
            .collect();
        let svr = LinearSvr::fit(&rows, &targets, SvrParams::default());
        let worst = rows
            .iter()
            .map(|r| (svr.predict(r) - f(r)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.08, "worst error {worst}");
    }
}
