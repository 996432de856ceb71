//! The ablation plan forms valid, equal-budget configurations, and its tables and quick check
//! read the results correctly.
#![cfg(feature = "torch")]

use affect_shared::metadata::{DimensionScore, Validation};
use affect_trainer::ablate::{
    AROUSAL_ONLY, ONE_ANNOTATOR, SEPARATE, VALENCE_ONLY, VariantResult, Verdict, findings,
    findings_table, plan, quick_base, quick_check, stats, tables, variant_config, with_separate,
};
use affect_trainer::data::Annotation;
use affect_trainer::model::Architecture;
use affect_trainer::train::config::Dimensions;

fn result(id: &str, v: f64, a: f64) -> VariantResult {
    seeded(id, 0, v, a)
}

fn seeded(id: &str, seed: u64, v: f64, a: f64) -> VariantResult {
    VariantResult {
        id: id.into(),
        seed,
        collapsed: false,
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
    // The separate networks and the one-annotator network differ from the joint CNN-GRU
    // 128 × 2 with landmarks only in what they train on.
    let config = |id: &str| variant_config(&base, variants.iter().find(|v| v.id == id).unwrap());
    let joint = config("gru-128x2-lm").unwrap();
    assert_eq!(joint.loss.dimensions, Dimensions::Both);
    assert_eq!(joint.data.annotation, Annotation::Mean);
    for (id, dimensions, annotation) in [
        (VALENCE_ONLY, Dimensions::Valence, Annotation::Mean),
        (AROUSAL_ONLY, Dimensions::Arousal, Annotation::Mean),
        (
            ONE_ANNOTATOR,
            Dimensions::Both,
            Annotation::Annotator("annotator-1".into()),
        ),
    ] {
        let mut c = config(id).unwrap();
        assert_eq!(
            (c.loss.dimensions, &c.data.annotation),
            (dimensions, &annotation)
        );
        c.loss.dimensions = Dimensions::Both;
        c.data.annotation = Annotation::Mean;
        assert_eq!(c, joint, "{id}");
    }
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
    assert!(md.contains("| VGG-16, image + landmarks | 0.400 | 0.300 | 0.1000 | 0.2000 | 1 |"));
    assert!(md.contains("| CNN-GRU 128 × 2 | 0.700 | 0.650 |"));
    assert!(md.contains("| CNN-GRU, MSE | 0.500 | 0.450 |"));
    // Rows and tables without results are left out.
    assert!(!md.contains("ResNet-50"));
    assert!(!md.contains("| LSTM (peephole) |"), "no LSTM ran");
    // The paper's tables are cited by number, its numbers labelled as Aff-Wild results.
    assert!(md.contains("(paper Table 4) and landmarks (paper Table 5)"));
    assert!(md.contains("CNN vs CNN-RNN, with landmarks (paper Table 7)"));
    assert!(md.contains("*Paper (Aff-Wild, not this data)*: Table 7"));
    assert!(md.contains("CCC 0.57 / 0.43, MSE 0.08 / 0.06"));
    assert!(quick_check(&results, 0.6).is_ok());
    assert!(quick_check(&results, 0.68).is_err());
    let mut collapsed = results.clone();
    collapsed[1].collapsed = true;
    let failed = quick_check(&collapsed, 0.6).unwrap_err();
    assert!(
        failed.contains("collapsed runs: cnn-vgg16-nolm (seed 0)"),
        "{failed}"
    );
    let weak = vec![
        result("cnn-vgg16-lm", 0.80, 0.80),
        result("gru-128x2-lm", 0.70, 0.65),
    ];
    assert!(
        quick_check(&weak, 0.6).is_err(),
        "the GRU must beat the CNN"
    );
}

#[test]
fn seeds_give_mean_and_spread_and_the_findings_are_judged_against_the_spread() {
    let mut results = Vec::new();
    for (seed, jitter) in [(5, -0.02), (6, 0.0), (7, 0.02)] {
        // Clearly better than the CNN: holds.
        results.push(seeded("gru-128x2-lm", seed, 0.70 + jitter, 0.60 + jitter));
        results.push(seeded("cnn-vgg16-lm", seed, 0.40 + jitter, 0.30 + jitter));
        // Within the spread: inconclusive.
        results.push(seeded(
            "lstm-128x2-lm",
            seed,
            0.70 - 2.0 * jitter,
            0.59 - 2.0 * jitter,
        ));
        // The MSE loss clearly wins: does not hold.
        results.push(seeded(
            "gru-128x2-lm-mse",
            seed,
            0.80 + jitter,
            0.75 + jitter,
        ));
        // Best other size within the spread of 128 × 2.
        results.push(seeded("gru-128x1-lm", seed, 0.69, 0.61));
        results.push(seeded("gru-100x1-lm", seed, 0.30, 0.20));
    }
    let s = stats(&results, "gru-128x2-lm").unwrap();
    assert_eq!(s.runs, 3);
    assert!((s.ccc_valence.0 - 0.70).abs() < 1e-12);
    assert!(
        (s.ccc_valence.1 - 0.02).abs() < 1e-12,
        "sample sd: {:?}",
        s.ccc_valence
    );
    let md = tables(&results);
    assert!(
        md.contains("| CNN-GRU 128 × 2 | 0.700 ± 0.020 | 0.600 ± 0.020 |"),
        "{md}"
    );
    let f = findings(&results);
    let verdict = |claim: &str| {
        f.iter()
            .find(|f| f.claim.starts_with(claim))
            .unwrap_or_else(|| panic!("{claim} missing from {f:?}"))
            .verdict
    };
    assert_eq!(verdict("CNN-GRU > CNN"), Verdict::Holds);
    assert_eq!(verdict("GRU > LSTM"), Verdict::Inconclusive);
    assert_eq!(
        verdict("CCC loss > MSE loss, CNN-GRU"),
        Verdict::DoesNotHold
    );
    let sizes = f.iter().find(|f| f.claim.starts_with("2 × 128")).unwrap();
    assert_eq!(
        sizes.other, "gru-128x1-lm",
        "compared with the best other size"
    );
    assert_eq!(sizes.verdict, Verdict::Inconclusive);
    // Findings whose variants did not run are left out.
    assert!(!f.iter().any(|f| f.claim.starts_with("landmarks")));
    let table = findings_table(&f);
    assert!(table.contains("| CNN-GRU > CNN (Table 7) | gru-128x2-lm | cnn-vgg16-lm | +0.300 | 0.028 | 3 | **holds** |"), "{table}");
    // One seed has no spread: nothing can be concluded.
    let one: Vec<VariantResult> = results.iter().filter(|r| r.seed == 5).cloned().collect();
    assert!(
        findings(&one)
            .iter()
            .all(|f| f.verdict == Verdict::Inconclusive)
    );
}

#[test]
fn separate_networks_combine_per_seed_and_table_6_and_both_findings_are_judged() {
    let mut results = Vec::new();
    for (seed, jitter) in [(1, -0.01), (2, 0.0), (3, 0.01)] {
        results.push(seeded("gru-128x2-lm", seed, 0.60 + jitter, 0.50 + jitter));
        // The valence network's arousal output and the arousal network's valence output are
        // untrained: the combined row must not use them.
        results.push(seeded(VALENCE_ONLY, seed, 0.66 + jitter, 0.01));
        results.push(seeded(AROUSAL_ONLY, seed, -0.02, 0.56 + jitter));
        // Training on one annotator, validated on the mean: clearly worse.
        results.push(seeded(ONE_ANNOTATOR, seed, 0.40 + jitter, 0.35 + jitter));
    }
    let all = with_separate(&results);
    let separate: Vec<&VariantResult> = all.iter().filter(|r| r.id == SEPARATE).collect();
    assert_eq!(separate.len(), 3, "one combined result per seed");
    let first = separate[0].best.unwrap();
    assert!(
        (first.valence.ccc - 0.65).abs() < 1e-12,
        "the valence network's valence"
    );
    assert!(
        (first.arousal.ccc - 0.55).abs() < 1e-12,
        "the arousal network's arousal"
    );
    assert_eq!(separate[0].best_step, None);
    let s = stats(&all, SEPARATE).unwrap();
    assert!((s.ccc_mean.0 - 0.61).abs() < 1e-12, "{s:?}");

    let md = tables(&results);
    assert!(md.contains("(paper Table 6)"), "{md}");
    assert!(
        md.contains("| mean of the annotators | 0.600 ± 0.010 | 0.500 ± 0.010 |"),
        "{md}"
    );
    assert!(
        md.contains("| one annotator (annotator-1) | 0.400 ± 0.010 | 0.350 ± 0.010 |"),
        "{md}"
    );
    assert!(
        md.contains("One network per dimension vs one joint network"),
        "{md}"
    );
    assert!(
        md.contains("| one joint network | 0.600 ± 0.010 | 0.500 ± 0.010 |"),
        "{md}"
    );
    assert!(
        md.contains("| separate networks (valence net's V, arousal net's A) | 0.660 ± 0.010 | 0.560 ± 0.010 |"),
        "{md}"
    );
    let f = findings(&results);
    let find = |claim: &str| f.iter().find(|f| f.claim.starts_with(claim)).unwrap();
    let annotators = find("mean of annotators > one annotator (Table 6)");
    assert_eq!(
        (annotators.favoured.as_str(), annotators.other.as_str()),
        ("gru-128x2-lm", ONE_ANNOTATOR)
    );
    assert_eq!(annotators.verdict, Verdict::Holds);
    let separate = find("separate networks > one joint network");
    assert_eq!(
        (separate.favoured.as_str(), separate.other.as_str()),
        (SEPARATE, "gru-128x2-lm")
    );
    assert!((separate.difference - 0.06).abs() < 1e-12, "{separate:?}");
    assert_eq!(separate.verdict, Verdict::Holds);
    let table = findings_table(&f);
    assert!(
        table.contains("| separate networks > one joint network | gru-128x2-lm-separate | gru-128x2-lm | +0.060 |"),
        "{table}"
    );

    // Without the arousal network there is no combined row, and no finding about it.
    let valence_only: Vec<VariantResult> = results
        .iter()
        .filter(|r| r.id != AROUSAL_ONLY)
        .cloned()
        .collect();
    assert!(!tables(&valence_only).contains("separate networks ("));
    assert!(
        !findings(&valence_only)
            .iter()
            .any(|f| f.claim.starts_with("separate"))
    );
    // Without the one-annotator run there is no Table 6.
    let joint: Vec<VariantResult> = results
        .iter()
        .filter(|r| r.id == "gru-128x2-lm")
        .cloned()
        .collect();
    assert!(!tables(&joint).contains("Table 6"));
}
