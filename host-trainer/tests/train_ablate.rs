//! The ablation plan forms valid, equal-budget configurations, and its tables and quick check
//! read the results correctly.
#![cfg(feature = "torch")]

use affect_shared::metadata::{DimensionScore, Validation};
use affect_trainer::ablate::{
    VariantResult, plan, quick_base, quick_check, tables, variant_config,
};
use affect_trainer::model::Architecture;

fn result(id: &str, v: f64, a: f64) -> VariantResult {
    VariantResult {
        id: id.into(),
        best: Some(Validation {
            valence: DimensionScore { ccc: v, mse: 0.1 },
            arousal: DimensionScore { ccc: a, mse: 0.2 },
            frames: 100,
        }),
        best_step: Some(300),
        seconds: 1.0,
    }
}

#[test]
fn every_variant_is_a_valid_config_with_the_same_frames_per_step() {
    let base = quick_base();
    let variants = plan(true);
    let mut ids: Vec<&str> = variants.iter().map(|v| v.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), variants.len(), "variant ids must be unique");
    for v in &variants {
        let config = variant_config(&base, v).unwrap();
        let (b, t) = config.batch_shape();
        assert_eq!(b * t, 4 * 32, "{}: frames per step", v.id);
        assert_eq!(config.schedule.steps, 300, "{}", v.id);
        if v.id.starts_with("cnn") {
            assert_eq!(config.network.kind, Architecture::Cnn, "{}", v.id);
        }
    }
    assert!(variants.iter().any(|v| v.id == "lstm-128x2-lm"));
    assert!(variants.iter().any(|v| v.id == "gru-150x2-lm"));
}

#[test]
fn tables_show_the_rows_that_ran_and_the_quick_check_compares_at_equal_budget() {
    let results = vec![
        result("cnn-vgg16-lm", 0.40, 0.30),
        result("cnn-vgg16-nolm", 0.20, 0.10),
        result("gru-128x2-lm", 0.70, 0.65),
        result("gru-128x2-lm-mse", 0.50, 0.45),
    ];
    let md = tables(&results);
    assert!(md.contains("| VGG-16, image + landmarks | 0.400 | 0.300 | 0.1000 | 0.2000 |"));
    assert!(md.contains("| CNN-GRU 128×2 | 0.700 | 0.650 |"));
    assert!(md.contains("| CNN-GRU, MSE | 0.500 | 0.450 |"));
    // Rows and tables without results are left out.
    assert!(!md.contains("ResNet-50"));
    assert!(!md.contains("Table 9") || md.contains("image + landmarks"));
    assert!(quick_check(&results, 0.6).is_ok());
    assert!(quick_check(&results, 0.68).is_err());
    let weak = vec![
        result("cnn-vgg16-lm", 0.80, 0.80),
        result("gru-128x2-lm", 0.70, 0.65),
    ];
    assert!(
        quick_check(&weak, 0.6).is_err(),
        "the GRU must beat the CNN"
    );
}
