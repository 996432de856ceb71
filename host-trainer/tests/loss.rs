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

/// A batch of `[2, 10]` frames with random labels, every frame counted.
fn batch() -> affect_trainer::train::source::BatchTensors {
    let shape = [2i64, 10];
    tch::manual_seed(4);
    affect_trainer::train::source::BatchTensors {
        faces: Tensor::zeros([2, 10, 3, 4, 4], (Kind::Float, tch::Device::Cpu)),
        landmarks: Tensor::zeros([2, 10, 136], (Kind::Float, tch::Device::Cpu)),
        labels: Tensor::rand([2, 10, 2], (Kind::Float, tch::Device::Cpu)) * 2.0 - 1.0,
        mask: Tensor::ones(shape, (Kind::Float, tch::Device::Cpu)),
        present: Tensor::ones(shape, (Kind::Float, tch::Device::Cpu)),
    }
}

fn config(kind: &str, dimensions: &str) -> affect_trainer::train::config::TrainConfig {
    let s = |v: &str| toml::Value::String(v.to_owned());
    affect_trainer::train::config::TrainConfig::from_overrides(&[
        ("loss.kind".into(), s(kind)),
        ("loss.dimensions".into(), s(dimensions)),
        ("loss.anchor_weight".into(), toml::Value::Float(0.0)),
        ("loss.warmup_steps".into(), toml::Value::Integer(0)),
    ])
    .unwrap()
}

#[test]
fn a_one_dimension_loss_is_that_dimension_alone_and_only_it_gets_gradient() {
    use affect_trainer::train::loss_at_step;

    let t = batch();
    let mut pred =
        (Tensor::rand([2, 10, 2], (Kind::Float, tch::Device::Cpu)) - 0.5).set_requires_grad(true);
    let per_dimension = loss::ccc(&pred, &t.labels, &t.mask);
    for (d, name) in [(0i64, "valence"), (1, "arousal")] {
        let value = loss_at_step(&config("ccc", name), 0, &pred, &t);
        let alone = 1.0 - per_dimension.double_value(&[d]);
        assert!(
            (value.double_value(&[]) - alone).abs() < 1e-5,
            "{name}: {} vs 1 − CCC {alone}",
            value.double_value(&[])
        );
        pred.zero_grad();
        value.backward();
        let grad = pred.grad();
        let of = |dim: i64| {
            grad.select(2, dim)
                .abs()
                .sum(Kind::Double)
                .double_value(&[])
        };
        assert!(of(d) > 0.0, "{name}: the trained output gets gradient");
        assert_eq!(of(1 - d), 0.0, "{name}: the other output gets none");
    }
    // The MSE of one dimension: the mean squared error of that output alone.
    let mse = loss_at_step(&config("mse", "arousal"), 0, &pred, &t).double_value(&[]);
    let diff = pred.select(2, 1) - t.labels.select(2, 1);
    let expected = (&diff * &diff).mean(Kind::Double).double_value(&[]);
    assert!((mse - expected).abs() < 1e-6, "{mse} vs {expected}");
    // Both dimensions (the default): both outputs learn.
    pred.zero_grad();
    loss_at_step(&config("ccc", "both"), 0, &pred, &t).backward();
    let grad = pred.grad();
    for d in 0..2 {
        assert!(grad.select(2, d).abs().sum(Kind::Double).double_value(&[]) > 0.0);
    }
}
