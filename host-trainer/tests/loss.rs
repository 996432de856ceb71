//! The tch training losses equal the shared evaluation metrics (and libtorch links and runs).
#![cfg(feature = "torch")]

use affect_shared::metrics;
use affect_trainer::loss;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tch::{Kind, Tensor};

#[test]
fn ccc_and_mse_losses_equal_the_shared_metrics_on_masked_frames() {
    let mut rng = StdRng::seed_from_u64(3);
    let (batch, time) = (4usize, 25usize);
    let n = batch * time;
    let truth: Vec<f64> = (0..2 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let pred: Vec<f64> = truth
        .iter()
        .map(|t| 0.6 * t + rng.random_range(-0.3..0.3) + 0.05)
        .collect();
    let mask: Vec<f64> = (0..n).map(|i| if i % 5 == 2 { 0.0 } else { 1.0 }).collect();
    let shape = [batch as i64, time as i64, 2];
    let to_tensor = |v: &[f64]| Tensor::from_slice(v).reshape(shape);
    let pred_t = to_tensor(&pred).set_requires_grad(true);
    let ccc = loss::ccc(
        &pred_t,
        &to_tensor(&truth),
        &Tensor::from_slice(&mask).reshape([batch as i64, time as i64]),
    );
    let mse = loss::mse_loss(
        &pred_t,
        &to_tensor(&truth),
        &Tensor::from_slice(&mask).reshape([batch as i64, time as i64]),
    );

    let kept = |d: usize, v: &[f64]| -> Vec<f64> {
        (0..n)
            .filter(|&i| mask[i] == 1.0)
            .map(|i| v[2 * i + d])
            .collect()
    };
    let mut squared = 0.0;
    for d in 0..2 {
        let (p, t) = (kept(d, &pred), kept(d, &truth));
        let expected = metrics::ccc(&p, &t).unwrap();
        let got = ccc.double_value(&[d as i64]);
        assert!(
            (got - expected).abs() < 1e-9,
            "dim {d}: tch {got}, shared {expected}"
        );
        squared += metrics::mse(&p, &t).unwrap();
    }
    assert!((mse.double_value(&[]) - squared / 2.0).abs() < 1e-12);

    let ccc_loss = loss::ccc_loss(
        &pred_t,
        &to_tensor(&truth),
        &Tensor::from_slice(&mask).reshape([batch as i64, time as i64]),
    );
    assert!(
        (ccc_loss.double_value(&[]) - (1.0 - ccc.mean(Kind::Double).double_value(&[]))).abs()
            < 1e-12
    );
    ccc_loss.backward();
    let grad = pred_t.grad();
    assert!(
        grad.isfinite().all().int64_value(&[]) == 1,
        "gradient must be finite"
    );
    // Masked frames get no gradient.
    assert_eq!(
        grad.get(0).get(2).abs().sum(Kind::Double).double_value(&[]),
        0.0
    );
    assert!(grad.abs().sum(Kind::Double).double_value(&[]) > 0.0);
}
