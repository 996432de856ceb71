//! Concordance correlation coefficient (CCC) and mean squared error (MSE), batch and streaming.
//!
//! CCC (Lin, 1989) between predictions `x` and truth `y`:
//! `2·cov(x,y) / (var(x) + var(y) + (mean(x) − mean(y))²)`, with population (1/n) moments, as
//! in the Aff-Wild / ABAW evaluation.
//!
//! Defined behaviour where the formula breaks down (no NaN surprises):
//! - no samples: [`Moments::ccc`] and [`Moments::mse`] return `None`;
//! - the denominator is zero (both series constant and equal): CCC is `1.0` (perfect agreement);
//! - one series constant, the other not: covariance is zero, so CCC is `0.0`.
//!
//! [`Moments`] is a streaming accumulator (Welford updates, Chan et al. merge, all in `f64`):
//! pushing samples one by one, or splitting them into any parts and merging, gives the same
//! result as the batch functions up to rounding.

/// Running first and second moments of a paired series (prediction, truth).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    /// Sum of squared deviations of `x` from its mean.
    m2_x: f64,
    /// Sum of squared deviations of `y` from its mean.
    m2_y: f64,
    /// Sum of products of deviations.
    c_xy: f64,
    /// Sum of squared errors `(x − y)²`.
    sse: f64,
}

impl Moments {
    /// An empty accumulator.
    pub const fn new() -> Self {
        Self {
            n: 0,
            mean_x: 0.0,
            mean_y: 0.0,
            m2_x: 0.0,
            m2_y: 0.0,
            c_xy: 0.0,
            sse: 0.0,
        }
    }

    /// Adds one (prediction, truth) pair.
    pub fn push(&mut self, x: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / n;
        self.mean_y += dy / n;
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.c_xy += dx * (y - self.mean_y);
        let e = x - y;
        self.sse += e * e;
    }

    /// Combines another accumulator into this one, as if its samples had been pushed here.
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let dx = other.mean_x - self.mean_x;
        let dy = other.mean_y - self.mean_y;
        self.m2_x += other.m2_x + dx * dx * na * nb / n;
        self.m2_y += other.m2_y + dy * dy * na * nb / n;
        self.c_xy += other.c_xy + dx * dy * na * nb / n;
        self.mean_x += dx * nb / n;
        self.mean_y += dy * nb / n;
        self.sse += other.sse;
        self.n += other.n;
    }

    /// Number of pairs seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Concordance correlation coefficient; `None` without samples (see the module docs).
    pub fn ccc(&self) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let (var_x, var_y, cov) = (self.m2_x / n, self.m2_y / n, self.c_xy / n);
        let d = self.mean_x - self.mean_y;
        let denominator = var_x + var_y + d * d;
        if denominator == 0.0 {
            return Some(1.0);
        }
        Some(2.0 * cov / denominator)
    }

    /// Mean squared error; `None` without samples.
    pub fn mse(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sse / self.n as f64)
    }
}

/// CCC of two equally long series in one pass; `None` if empty or the lengths differ.
pub fn ccc(pred: &[f64], truth: &[f64]) -> Option<f64> {
    batch(pred, truth)?.ccc()
}

/// MSE of two equally long series; `None` if empty or the lengths differ.
pub fn mse(pred: &[f64], truth: &[f64]) -> Option<f64> {
    batch(pred, truth)?.mse()
}

/// Exact two-pass moments (mean first, then deviations): the reference the streaming form is
/// tested against.
fn batch(pred: &[f64], truth: &[f64]) -> Option<Moments> {
    if pred.len() != truth.len() || pred.is_empty() {
        return None;
    }
    let n = pred.len() as f64;
    let mean_x = pred.iter().sum::<f64>() / n;
    let mean_y = truth.iter().sum::<f64>() / n;
    let mut m = Moments {
        n: pred.len() as u64,
        mean_x,
        mean_y,
        ..Moments::new()
    };
    for (&x, &y) in pred.iter().zip(truth) {
        let (dx, dy) = (x - mean_x, y - mean_y);
        m.m2_x += dx * dx;
        m.m2_y += dy * dy;
        m.c_xy += dx * dy;
        m.sse += (x - y) * (x - y);
    }
    Some(m)
}

/// Streaming CCC/MSE for both dimensions at once: one per video, merged for the pooled score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VaMoments {
    /// Valence moments.
    pub valence: Moments,
    /// Arousal moments.
    pub arousal: Moments,
}

impl VaMoments {
    /// An empty accumulator.
    pub const fn new() -> Self {
        Self {
            valence: Moments::new(),
            arousal: Moments::new(),
        }
    }

    /// Adds one frame: prediction and truth as `[valence, arousal]`.
    pub fn push(&mut self, pred: [f32; 2], truth: [f32; 2]) {
        self.valence.push(f64::from(pred[0]), f64::from(truth[0]));
        self.arousal.push(f64::from(pred[1]), f64::from(truth[1]));
    }

    /// Combines another accumulator (e.g. another video) into this one.
    pub fn merge(&mut self, other: &VaMoments) {
        self.valence.merge(&other.valence);
        self.arousal.merge(&other.arousal);
    }

    /// Frames seen.
    pub fn count(&self) -> u64 {
        self.valence.count()
    }

    /// Mean of the valence and arousal CCC (the ABAW challenge score); `None` without samples.
    pub fn mean_ccc(&self) -> Option<f64> {
        Some((self.valence.ccc()? + self.arousal.ccc()?) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_agreement_is_one_and_negation_is_minus_one() {
        let x = [0.1, -0.4, 0.7, 0.2];
        assert!((ccc(&x, &x).unwrap() - 1.0).abs() < 1e-12);
        let neg: [f64; 4] = core::array::from_fn(|i| -x[i]);
        let mean = x.iter().sum::<f64>() / 4.0;
        assert!(mean != 0.0);
        // Lin's CCC of x and −x is −var / (var + mean²·…) — check against the formula by hand.
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 4.0;
        let expected = -2.0 * var / (2.0 * var + 4.0 * mean * mean);
        assert!((ccc(&x, &neg).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_example() {
        // x = [1,2,3], y = [1,3,2]: means 2,2; var 2/3 each; cov = (1·1 + 0 + 1·0·… ) computed below.
        let (x, y) = ([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]);
        // deviations x: -1,0,1; y: -1,1,0 → cov = (1 + 0 + 0)/3 = 1/3; ccc = (2/3)/(4/3) = 0.5
        assert!((ccc(&x, &y).unwrap() - 0.5).abs() < 1e-12);
        assert!((mse(&x, &y).unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn degenerate_inputs_are_defined() {
        assert_eq!(ccc(&[], &[]), None);
        assert_eq!(mse(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(ccc(&[0.3, 0.3], &[0.3, 0.3]), Some(1.0));
        assert_eq!(ccc(&[0.3, 0.3], &[0.1, 0.5]), Some(0.0));
        assert_eq!(Moments::new().ccc(), None);
        assert_eq!(Moments::new().mse(), None);
    }

    #[test]
    fn streaming_and_merging_match_batch() {
        let x: [f64; 9] = [0.5, -0.2, 0.9, 0.0, -0.7, 0.3, 0.31, -0.99, 0.12];
        let y: [f64; 9] = [0.4, -0.1, 0.5, 0.2, -0.8, 0.1, 0.35, -0.5, 0.0];
        for split in 0..=x.len() {
            let (mut a, mut b) = (Moments::new(), Moments::new());
            x[..split]
                .iter()
                .zip(&y[..split])
                .for_each(|(&p, &t)| a.push(p, t));
            x[split..]
                .iter()
                .zip(&y[split..])
                .for_each(|(&p, &t)| b.push(p, t));
            a.merge(&b);
            assert!((a.ccc().unwrap() - ccc(&x, &y).unwrap()).abs() < 1e-12);
            assert!((a.mse().unwrap() - mse(&x, &y).unwrap()).abs() < 1e-12);
            assert_eq!(a.count(), 9);
        }
    }
}
