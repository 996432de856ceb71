//! Training losses on libtorch tensors, defined exactly like `affect_shared::metrics` so the
//! number the optimiser sees is the number evaluation reports.
//!
//! Inputs are `[..., 2]` tensors (valence, arousal in the last dimension) with a `[...]` mask that
//! is 1 for frames with a label and a face, 0 otherwise. Both losses are differentiable.

use tch::Tensor;

/// Per-dimension CCC over the masked frames, pooled: a `[2]` tensor (valence, arousal).
/// Population moments; a small epsilon keeps the gradient finite when both series are constant.
pub fn ccc(pred: &Tensor, truth: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(pred.kind()).unsqueeze(-1);
    let count = m.sum(pred.kind()).clamp_min(1.0);
    let flat = |t: &Tensor| t.reshape([-1, 2]);
    let (x, y, w) = (flat(pred), flat(truth), flat(&m.expand_as(pred)));
    let mean_x = (&x * &w).sum_dim_intlist(0, false, pred.kind()) / &count;
    let mean_y = (&y * &w).sum_dim_intlist(0, false, pred.kind()) / &count;
    let dx = (&x - &mean_x) * &w;
    let dy = (&y - &mean_y) * &w;
    let var_x = (&dx * &dx).sum_dim_intlist(0, false, pred.kind()) / &count;
    let var_y = (&dy * &dy).sum_dim_intlist(0, false, pred.kind()) / &count;
    let cov = (&dx * &dy).sum_dim_intlist(0, false, pred.kind()) / &count;
    let diff = &mean_x - &mean_y;
    cov * 2.0 / (var_x + var_y + &diff * &diff + 1e-12)
}

/// The paper's CCC loss: `1 − mean(CCC_valence, CCC_arousal)`, a scalar.
pub fn ccc_loss(pred: &Tensor, truth: &Tensor, mask: &Tensor) -> Tensor {
    1.0 - ccc(pred, truth, mask).mean(pred.kind())
}

/// Masked mean squared error over both dimensions, a scalar.
pub fn mse_loss(pred: &Tensor, truth: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(pred.kind()).unsqueeze(-1);
    let err = (pred - truth) * &m;
    (&err * &err).sum(pred.kind()) / (m.sum(pred.kind()) * 2.0).clamp_min(1.0)
}

/// The moment anchor: per dimension `(mean_pred − mean_truth)² + (sd_pred − sd_truth)²` over the
/// masked frames, averaged over the two dimensions (a scalar).
///
/// For any correlation between prediction and truth, CCC is largest when the prediction's mean
/// and standard deviation equal the truth's, so adding this term does not move the CCC's
/// optimum; it gives the mean and scale the gradient the CCC lacks while the covariance is ≈ 0
/// (and the push back the CCC reverses while it is negative), which otherwise lets them drift
/// until every gradient vanishes — the collapse [`crate::train::collapse`] detects.
pub fn moment_anchor(pred: &Tensor, truth: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(pred.kind()).unsqueeze(-1);
    let count = m.sum(pred.kind()).clamp_min(1.0);
    let flat = |t: &Tensor| t.reshape([-1, 2]);
    let (x, y, w) = (flat(pred), flat(truth), flat(&m.expand_as(pred)));
    let moments = |v: &Tensor| {
        let mean = (v * &w).sum_dim_intlist(0, false, pred.kind()) / &count;
        let dev = (v - &mean) * &w;
        let var = (&dev * &dev).sum_dim_intlist(0, false, pred.kind()) / &count;
        (mean, (var + 1e-12).sqrt())
    };
    let (mean_x, sd_x) = moments(&x);
    let (mean_y, sd_y) = moments(&y);
    let d_mean = mean_x - mean_y;
    let d_sd = sd_x - sd_y;
    (&d_mean * &d_mean + &d_sd * &d_sd).mean(pred.kind())
}
