//! The ablation plan forms valid, equal-budget configurations, and its tables and quick check
//! read the results correctly; an interrupted ablation resumes without retraining finished runs,
//! refuses a changed configuration and never deletes a used output directory; `--plan` prices
//! every variant without training.
#![cfg(feature = "torch")]

mod common;

use affect_shared::metadata::{DimensionScore, Validation};
use affect_trainer::ablate::{
    AROUSAL_ONLY, ONE_ANNOTATOR, QUICK_RESNET50_WIDTH, SEPARATE, VALENCE_ONLY, VariantResult,
    Verdict, findings, findings_table, plan, pretext_learning_rate, quick_base, quick_check,
    quick_recipes, select, stats, tables, variant_config, with_separate,
};
use affect_trainer::data::Annotation;
use affect_trainer::model::{Architecture, Backbone};
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
fn quick_resnet_variants_are_twice_as_wide_and_learn_at_their_pretraining_rate() {
    let mut variants = plan(true);
    quick_recipes(&mut variants, &[]);
    let mut resnets = 0;
    for v in &variants {
        let config = variant_config(&quick_base(), v).unwrap();
        let (width, lr) = if config.network.backbone == Backbone::Resnet50 {
            resnets += 1;
            (
                QUICK_RESNET50_WIDTH,
                pretext_learning_rate(Backbone::Resnet50),
            )
        } else {
            (0.0625, 3e-3)
        };
        assert_eq!(
            (config.network.width, config.optim.lr),
            (width, lr),
            "{}",
            v.id
        );
    }
    assert_eq!(resnets, 2);
    // A key the user sets for every variant wins.
    let mut variants = plan(false);
    quick_recipes(&mut variants, &["optim.lr".to_owned()]);
    let resnet = variants
        .iter()
        .find(|v| v.id == "cnn-resnet50-nolm")
        .unwrap();
    let config = variant_config(&quick_base(), resnet).unwrap();
    assert_eq!(
        (config.network.width, config.optim.lr),
        (QUICK_RESNET50_WIDTH, 3e-3)
    );
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

// ---- Resumable layout -------------------------------------------------------------------------

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use affect_shared::synth::{SynthConfig, render_size};
use affect_trainer::ablate::{
    AblateError, AblationData, InMemory, PRETEXT_DIR, PretextProvenance, Provenance, RESULT_FILE,
    RunOptions, RunRecord, TrainingSet, pretrain_backbones, run, run_dir,
};
use affect_trainer::model::Model;
use affect_trainer::model::pretrained::load_backbone;
use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::memory::{MemoryDataset, render_synthetic, render_synthetic_annotated};
use affect_trainer::train::source::{BatchSource, VideoSource};
use common::StopAfter;
/// Two-stage training: every CNN-RNN starts from a CNN earlier in the plan that was trained like
/// it (backbone, landmarks, loss, dimensions, labels, everything else of the base); VGG-Face when
/// its weights are given, else VGG-16 (the same architecture).
#[test]
fn every_cnn_rnn_starts_from_an_earlier_cnn_trained_on_the_same_things() {
    let base = quick_base();
    for (with_vgg_face, backbone) in [(false, Backbone::Vgg16), (true, Backbone::VggFace)] {
        let variants = plan(with_vgg_face);
        let mut recurrent = 0;
        for (k, v) in variants.iter().enumerate() {
            let config = variant_config(&base, v).unwrap();
            let Some(first) = &v.starts_from else {
                assert_eq!(config.network.kind, Architecture::Cnn, "{}", v.id);
                continue;
            };
            recurrent += 1;
            assert_eq!(config.network.kind, Architecture::CnnRnn, "{}", v.id);
            assert_eq!(config.network.backbone, backbone, "{}", v.id);
            let at = variants.iter().position(|w| &w.id == first).unwrap();
            assert!(at < k, "{} starts from {first}, which comes later", v.id);
            let cnn = variant_config(&base, &variants[at]).unwrap();
            assert_eq!(cnn.network.kind, Architecture::Cnn, "{first}");
            let mut as_cnn = config.clone();
            as_cnn.network.kind = Architecture::Cnn;
            as_cnn.network.cell = cnn.network.cell;
            as_cnn.network.hidden = cnn.network.hidden;
            as_cnn.network.layers = cnn.network.layers;
            assert_eq!(as_cnn, cnn, "{} vs {first}", v.id);
        }
        assert_eq!(recurrent, 12, "with VGG-Face: {with_vgg_face}");
    }
    let starts = |id: &str| {
        plan(false)
            .into_iter()
            .find(|v| v.id == id)
            .and_then(|v| v.starts_from)
    };
    assert_eq!(starts("gru-128x2-nolm").as_deref(), Some("cnn-vgg16-nolm"));
    assert_eq!(
        starts("gru-128x2-lm-mse").as_deref(),
        Some("cnn-vgg16-lm-mse")
    );
    assert_eq!(
        starts(ONE_ANNOTATOR).as_deref(),
        Some("cnn-vgg16-lm-annotator-1")
    );
    // --only keeps the chosen variants and the CNNs they start from, in plan order.
    let only = |ids: &[&str]| -> Vec<String> {
        let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        select(&plan(false), &ids)
            .into_iter()
            .map(|v| v.id)
            .collect()
    };
    assert_eq!(
        only(&[VALENCE_ONLY, "cnn-resnet50-lm"]),
        ["cnn-resnet50-lm", "cnn-vgg16-lm-valence", VALENCE_ONLY]
    );
    assert_eq!(
        only(&["gru-128x1-lm", "gru-128x2-lm"]),
        ["cnn-vgg16-lm", "gru-128x2-lm", "gru-128x1-lm"]
    );
}

/// A CNN-RNN whose CNN is not trained before it is refused before anything trains.
#[test]
fn a_cnn_rnn_without_its_cnn_is_refused() {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = tiny_base(&[]);
    let (train_set, validation) = tiny_data(&base);
    let data = InMemory {
        train: &train_set,
        validation: &validation,
    };
    let out = tempfile::tempdir().unwrap();
    let plan = variants(&["cnn-vgg16-nolm", "gru-128x2-lm"]);
    let err = run(
        &base,
        &plan,
        &[0],
        &data,
        out.path(),
        &RunOptions::default(),
        |r, _| panic!("{} trained", r.id),
    )
    .unwrap_err();
    assert!(
        matches!(&err, AblateError::StartsFrom { id, first } if id == "gru-128x2-lm" && first == "cnn-vgg16-lm"),
        "{err}"
    );
    assert!(err.to_string().contains("cnn-vgg16-lm"), "{err}");
}

/// libtorch's random generator is process-global and `train` seeds it per step: trainings in one
/// process must not overlap (cargo runs tests on parallel threads).
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The quick base shrunk to seconds: 32 px, 2 clips of 6 frames, 4 steps, checkpoints every 2.
fn tiny_base(extra: &[(&str, toml::Value)]) -> Vec<(String, toml::Value)> {
    let mut base = quick_base();
    for (k, v) in [
        ("threads", toml::Value::Integer(1)),
        ("network.input_size", toml::Value::Integer(32)),
        ("batch.sequences", toml::Value::Integer(2)),
        ("batch.sequence_length", toml::Value::Integer(6)),
        ("schedule.steps", toml::Value::Integer(4)),
        ("schedule.validate_every", toml::Value::Integer(2)),
        ("schedule.checkpoint_every", toml::Value::Integer(2)),
        ("schedule.log_every", toml::Value::Integer(1)),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    {
        base.push((k.to_owned(), v));
    }
    base
}

/// Two tiny synthetic splits at the base's preprocessing (with landmarks).
fn tiny_data(base: &[(String, toml::Value)]) -> (TrainingSet, MemoryDataset) {
    let mut config = TrainConfig::from_overrides(base).unwrap();
    config.network.landmarks = true;
    let preprocess = config.preprocess();
    let synth = SynthConfig {
        size: render_size(preprocess.size),
        frames: 40,
        annotators: 2,
        ..SynthConfig::default()
    };
    let (train, annotators) = render_synthetic_annotated(&synth, 3, 0..2, &preprocess).unwrap();
    let validation = render_synthetic(&synth, 3, 2..3, &preprocess).unwrap();
    (
        TrainingSet {
            data: Arc::new(train),
            annotators: annotators.into_iter().map(Arc::new).collect(),
        },
        validation,
    )
}

fn variants(ids: &[&str]) -> Vec<affect_trainer::ablate::Variant> {
    plan(false)
        .into_iter()
        .filter(|v| ids.contains(&v.id.as_str()))
        .collect()
}

/// Content and modification time of a file: equal before and after means untouched.
fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
fn an_interrupted_ablation_resumes_without_retraining_finished_runs() {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = tiny_base(&[]);
    let (train_set, validation) = tiny_data(&base);
    let data = InMemory {
        train: &train_set,
        validation: &validation,
    };
    let plan = variants(&["cnn-vgg16-lm", "gru-128x2-lm"]);
    let seeds = [0, 1];
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("ablation");

    // Ctrl-C right after the first run finished: the next one does not start.
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let mut done = Vec::new();
    let err = run(&base, &plan, &seeds, &data, &out, &options, |r, how| {
        done.push((r.id.clone(), r.seed, how));
        stop.store(true, Ordering::SeqCst);
    })
    .unwrap_err();
    assert_eq!(done, [("cnn-vgg16-lm".to_owned(), 0, Provenance::Trained)]);
    match &err {
        AblateError::Interrupted { id, seed, step, .. } => {
            assert_eq!((id.as_str(), *seed, *step), ("cnn-vgg16-lm", 1, None));
        }
        other => panic!("expected Interrupted, got {other}"),
    }
    let first = run_dir(&out, "cnn-vgg16-lm", 0);
    let record: RunRecord =
        serde_json::from_slice(&std::fs::read(first.join(RESULT_FILE)).unwrap()).unwrap();
    assert_eq!(
        (record.result.id.as_str(), record.result.seed),
        ("cnn-vgg16-lm", 0)
    );
    assert_eq!(
        record.config["schedule"]["steps"], 4,
        "the full configuration is stored"
    );
    assert!(!run_dir(&out, "cnn-vgg16-lm", 1).exists());
    let result_before = fingerprint(&first.join(RESULT_FILE));
    let metrics_before = fingerprint(&first.join("metrics.jsonl"));

    // Without --resume a used OUT is refused, and nothing in it is deleted.
    let err = run(
        &base,
        &plan,
        &seeds,
        &data,
        &out,
        &RunOptions::default(),
        |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, AblateError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(fingerprint(&first.join(RESULT_FILE)), result_before);

    // A changed `--set` is refused, naming the run and the key.
    let changed = tiny_base(&[("optim.lr", toml::Value::Float(1e-4))]);
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let err = run(&changed, &plan, &seeds, &data, &out, &resume, |_, _| {}).unwrap_err();
    match &err {
        AblateError::Changed { dir, key, .. } => {
            assert_eq!(dir, &first);
            assert_eq!(key, "optim.lr");
        }
        other => panic!("expected Changed, got {other}"),
    }
    assert!(err.to_string().contains("`optim.lr`"), "{err}");

    // --resume with the same configuration completes the rest and reuses the finished run.
    let mut done = Vec::new();
    let results = run(&base, &plan, &seeds, &data, &out, &resume, |r, how| {
        done.push((r.id.clone(), r.seed, how));
    })
    .unwrap();
    assert_eq!(
        done,
        [
            ("cnn-vgg16-lm".to_owned(), 0, Provenance::Reused),
            ("cnn-vgg16-lm".to_owned(), 1, Provenance::Trained),
            ("gru-128x2-lm".to_owned(), 0, Provenance::Trained),
            ("gru-128x2-lm".to_owned(), 1, Provenance::Trained),
        ]
    );
    assert_eq!(results[0], record.result);
    assert_eq!(fingerprint(&first.join(RESULT_FILE)), result_before);
    assert_eq!(fingerprint(&first.join("metrics.jsonl")), metrics_before);
    for r in &results {
        assert!(run_dir(&out, &r.id, r.seed).join(RESULT_FILE).exists());
    }
    // Each seed's CNN-GRU started from the CNN of its seed.
    for seed in seeds {
        let record: RunRecord = serde_json::from_slice(
            &std::fs::read(run_dir(&out, "gru-128x2-lm", seed).join(RESULT_FILE)).unwrap(),
        )
        .unwrap();
        let first = run_dir(&out, "cnn-vgg16-lm", seed).join("best/model.safetensors");
        assert_eq!(
            record.config["network"]["pretrained"]
                .as_str()
                .map(Path::new),
            Some(std::fs::canonicalize(first).unwrap().as_path())
        );
    }
    assert!(tables(&results).contains("| CNN-GRU 128 × 2 |"));
}

/// Data whose training source raises the stop flag once `after` batches were drawn (Ctrl-C in
/// the middle of a run), the first time only.
struct StopMidRun<'a> {
    inner: InMemory<'a>,
    stop: Arc<AtomicBool>,
    after: u64,
    armed: AtomicBool,
}

impl AblationData for StopMidRun<'_> {
    fn training(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Box<dyn BatchSource>, AblateError> {
        let inner = self.inner.training(id, config)?;
        if self.armed.swap(false, Ordering::SeqCst) {
            Ok(Box::new(StopAfter {
                inner,
                after: self.after,
                stop: self.stop.clone(),
            }))
        } else {
            Ok(inner)
        }
    }
    fn validation(
        &self,
        id: &str,
        config: &TrainConfig,
    ) -> Result<Option<Box<dyn VideoSource + '_>>, AblateError> {
        self.inner.validation(id, config)
    }
}

#[test]
fn a_run_interrupted_mid_way_resumes_from_its_checkpoint_to_the_same_result() {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = tiny_base(&[]);
    let (train_set, validation) = tiny_data(&base);
    let data = InMemory {
        train: &train_set,
        validation: &validation,
    };
    // Recurrent state makes this the harder case; started from its own initialisation here.
    let mut plan = variants(&["gru-128x2-lm"]);
    plan[0].starts_from = None;
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let expected = run(
        &base,
        &plan,
        &[5],
        &data,
        &straight,
        &RunOptions::default(),
        |_, _| {},
    )
    .unwrap();

    let out = dir.path().join("interrupted");
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = StopMidRun {
        inner: data,
        stop: stop.clone(),
        after: 3,
        armed: AtomicBool::new(true),
    };
    let options = RunOptions {
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let err = run(&base, &plan, &[5], &stopping, &out, &options, |_, _| {}).unwrap_err();
    match &err {
        AblateError::Interrupted { step, dir, .. } => {
            assert_eq!(*step, Some(3));
            assert!(dir.join("checkpoint/state.json").exists());
            assert!(!dir.join(RESULT_FILE).exists());
        }
        other => panic!("expected Interrupted, got {other}"),
    }
    assert!(err.to_string().contains("at step 3"), "{err}");

    stop.store(false, Ordering::SeqCst);
    let options = RunOptions {
        resume: true,
        stop,
        ..RunOptions::default()
    };
    let mut how = Vec::new();
    let resumed = run(&base, &plan, &[5], &stopping, &out, &options, |_, h| {
        how.push(h)
    })
    .unwrap();
    assert_eq!(how, [Provenance::Resumed { from: 3 }]);
    // Bit for bit what the uninterrupted run reached (only the wall-clock time differs).
    let strip = |r: &VariantResult| VariantResult {
        seconds: 0.0,
        ..r.clone()
    };
    assert_eq!(strip(&resumed[0]), strip(&expected[0]));
}

#[test]
fn a_full_size_ablation_must_checkpoint() {
    let base = tiny_base(&[("schedule.checkpoint_every", toml::Value::Integer(0))]);
    let config = variant_config(&base, &variants(&["gru-128x2-lm"])[0]).unwrap();
    let err = affect_trainer::ablate::check_checkpoints("gru-128x2-lm", &config).unwrap_err();
    assert!(
        err.to_string().contains("schedule.checkpoint_every"),
        "{err}"
    );
    // The full-size default checkpoints.
    let full = variant_config(&[], &variants(&["gru-128x2-lm"])[0]).unwrap();
    assert!(full.schedule.checkpoint_every > 0);
}

/// The stand-in for published weights: one landmark-pretrained backbone per backbone of the
/// plan, learnt from the crops (Caffe-scaled ones included), loaded by every variant that has no
/// `network.pretrained` of its own, reused by a second call and refused when its configuration
/// changed.
#[test]
fn variants_start_from_one_landmark_pretrained_backbone_per_backbone() {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = tiny_base(&[]);
    let (train_set, validation) = tiny_data(&base);
    let data = InMemory {
        train: &train_set,
        validation: &validation,
    };
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("ablation");
    let own = Path::new("/weights/of/its/own.safetensors");
    let vgg_face = |ids: &[&str]| -> Vec<affect_trainer::ablate::Variant> {
        plan(true)
            .into_iter()
            .filter(|v| ids.contains(&v.id.as_str()))
            .collect()
    };
    let mut plan = vgg_face(&[
        "cnn-vgg_face-lm",
        "cnn-vgg_face-nolm",
        "gru-128x2-nolm",
        "cnn-vgg_face-lm-mse",
    ]);
    assert_eq!(plan[2].id, "gru-128x2-nolm");
    plan[3].overrides.push((
        "network.pretrained".into(),
        toml::Value::String(own.display().to_string()),
    ));
    let mut records = Vec::new();
    pretrain_backbones(&base, &mut plan, &data, &out, 40, 7, |path, record, how| {
        records.push((path.to_owned(), record.clone(), how));
    })
    .unwrap();
    assert_eq!(
        records.len(),
        1,
        "one backbone: VGG-Face at the base's size"
    );
    let (weights, record, how) = &records[0];
    assert_eq!(*how, PretextProvenance::Trained);
    assert_eq!(
        weights,
        &std::fs::canonicalize(out.join(PRETEXT_DIR))
            .unwrap()
            .join("vgg_face-w0.0625-32px.safetensors")
    );
    // Caffe crops (deviation ≈ 60) with He initialisation started near 1e4 before the first
    // convolution was scaled to the crops' deviation; the loss falls from there.
    assert!(record.first_loss < 50.0, "first loss {}", record.first_loss);
    assert!(
        record.last_loss < 0.8 * record.first_loss,
        "{} -> {}",
        record.first_loss,
        record.last_loss
    );
    assert_eq!(record.config["network"]["kind"], "cnn");
    assert_eq!(record.config["network"]["landmarks"], false);
    assert_eq!(record.config["schedule"]["steps"], 40);
    assert_eq!(record.config["seed"], 7);
    // Both variants without weights of their own load it, backbone complete.
    for v in &plan[..2] {
        let config = variant_config(&base, v).unwrap();
        assert_eq!(
            config.network.pretrained.as_deref(),
            Some(weights.as_path())
        );
        let mut model = Model::new(&config.network, tch::Device::Cpu).unwrap();
        let report = load_backbone(&mut model, weights).unwrap();
        assert!(
            report.loaded.iter().any(|n| n == "features.0.weight"),
            "{report:?}"
        );
        assert!(
            report.ignored.is_empty(),
            "only the backbone is saved: {report:?}"
        );
    }
    // The CNN-GRU starts from its trained CNN instead (`run` sets that).
    let config = variant_config(&base, &plan[2]).unwrap();
    assert_eq!(config.network.pretrained, None);
    let config = variant_config(&base, &plan[3]).unwrap();
    assert_eq!(config.network.pretrained.as_deref(), Some(own));
    // A second call (a resumed ablation) reuses the file untouched.
    let before = fingerprint(weights);
    let mut plan = vgg_face(&["cnn-vgg_face-nolm"]);
    let mut hows = Vec::new();
    pretrain_backbones(&base, &mut plan, &data, &out, 40, 7, |_, _, how| {
        hows.push(how)
    })
    .unwrap();
    assert_eq!(hows, [PretextProvenance::Reused]);
    assert_eq!(fingerprint(weights), before);
    // Other pretraining steps are refused, naming the key; the file stays.
    let mut plan = vgg_face(&["cnn-vgg_face-nolm"]);
    let err = pretrain_backbones(&base, &mut plan, &data, &out, 41, 7, |_, _, _| {}).unwrap_err();
    assert!(
        matches!(&err, AblateError::Changed { key, .. } if key == "schedule.steps"),
        "{err}"
    );
    assert_eq!(fingerprint(weights), before);
}

fn affect_train(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_affect-train"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_cli_refuses_a_used_out_without_resume_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ablation");
    let run = out.join("gru-128x2-lm").join("seed-0");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
    let output = affect_train(&["ablate", "--quick", "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--resume") && stderr.contains("--out"),
        "{stderr}"
    );
    assert!(stderr.contains("seed-0"), "names a run: {stderr}");
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
        "{\"step\":1}\n"
    );
    // A full-size ablation without checkpoints is refused, naming the key.
    let output = affect_train(&[
        "ablate",
        "--out",
        dir.path().join("other").to_str().unwrap(),
        "--set",
        "schedule.checkpoint_every=0",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("schedule.checkpoint_every"), "{stderr}");
}

#[test]
fn the_plan_prices_every_variant_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let output = affect_train(&["ablate", "--plan", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for v in plan(false) {
        assert!(
            stdout.contains(&format!("| {} |", v.id)),
            "{} missing:\n{stdout}",
            v.id
        );
    }
    // Full size: VGG-16 at 224 px is ≈ 15.4 G multiply-adds per frame, 400 frames per step.
    assert!(
        stdout.contains("| gru-128x2-lm | 119.") || stdout.contains("| gru-128x2-lm | 12"),
        "{stdout}"
    );
    assert!(stdout.contains("| 15.4"), "{stdout}");
    assert!(
        stdout.contains("20 variants × 3 seeds = 60 runs"),
        "{stdout}"
    );
    assert!(stdout.contains("not a measurement"), "{stdout}");
    assert!(!out.exists(), "--plan writes nothing");
    // --gpu-tflops scales the time; --quick prices the quick base.
    let quick = affect_train(&[
        "ablate",
        "--plan",
        "--quick",
        "--seeds",
        "1",
        "--gpu-tflops",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&quick.stdout);
    assert!(quick.status.success());
    assert!(stdout.contains("the --quick base"), "{stdout}");
    assert!(stdout.contains("at 1 TFLOP/s"), "{stdout}");
    assert!(stdout.contains("= 20 runs"), "{stdout}");
}

#[test]
fn ablate_trains_on_a_dataset_directory_with_the_streaming_loader() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("affwild");
    let synth = affect_train(&[
        "synth",
        "--layout",
        "affwild",
        "--annotators",
        "2",
        "--videos",
        "4",
        "--frames",
        "30",
        "--size",
        "64",
        "--val-fraction",
        "0.25",
        "--jobs",
        "1",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let out = dir.path().join("ablation");
    let ablate = |extra: &[&str]| {
        let mut args = vec![
            "ablate",
            "--quick",
            "--seeds",
            "1",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--only",
            "gru-128x2-lm",
            "--only",
            ONE_ANNOTATOR,
            "--pretext-steps",
            "2",
        ];
        for set in [
            "threads=1",
            "data.workers=1",
            "network.input_size=32",
            "batch.sequences=2",
            "batch.sequence_length=6",
            "schedule.steps=3",
            "schedule.validate_every=3",
            "schedule.log_every=1",
        ] {
            args.extend(["--set", set]);
        }
        args.extend(extra);
        affect_train(&args)
    };
    let first = ablate(&[]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    // The quick check's thresholds are not the point here (3 steps): only that both ran.
    for id in ["gru-128x2-lm", ONE_ANNOTATOR] {
        let record: RunRecord = serde_json::from_slice(
            &std::fs::read(run_dir(&out, id, 0).join(RESULT_FILE))
                .unwrap_or_else(|e| panic!("{id}: {e}\n{stderr}")),
        )
        .unwrap();
        assert!(
            record.result.best.is_some(),
            "{id} validated on Validation_Set"
        );
        let root = record.config["data"]["root"].as_str().unwrap();
        assert_eq!(Path::new(root), std::fs::canonicalize(&data).unwrap());
    }
    // Each CNN-GRU starts from its CNN (trained on the same labels, same seed), which starts
    // from the backbone pretrained on the dataset's landmarks.
    for (id, first) in [
        ("gru-128x2-lm", "cnn-vgg16-lm"),
        (ONE_ANNOTATOR, "cnn-vgg16-lm-annotator-1"),
    ] {
        let pretrained = |id: &str| {
            let record: RunRecord = serde_json::from_slice(
                &std::fs::read(run_dir(&out, id, 0).join(RESULT_FILE)).unwrap(),
            )
            .unwrap();
            let weights = record.config["network"]["pretrained"].as_str().unwrap();
            assert!(Path::new(weights).exists(), "{weights}");
            weights.to_owned()
        };
        let weights = pretrained(id);
        assert_eq!(
            Path::new(&weights),
            std::fs::canonicalize(run_dir(&out, first, 0).join("best/model.safetensors")).unwrap()
        );
        let weights = pretrained(first);
        assert!(
            weights.ends_with("pretext/vgg16-w0.0625-32px.safetensors"),
            "{weights}"
        );
    }
    assert_eq!(
        stderr.matches("landmark-pretrained backbone").count(),
        1,
        "{stderr}"
    );
    let record: RunRecord = serde_json::from_slice(
        &std::fs::read(run_dir(&out, ONE_ANNOTATOR, 0).join(RESULT_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(record.config["data"]["annotation"], "annotator-1");
    // Resuming reuses both runs.
    let again = ablate(&["--resume"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(
        stderr.matches("(reused: result.json)").count(),
        4,
        "{stderr}"
    );
    assert!(stderr.contains("32px.safetensors: loss"), "{stderr}");
    assert!(stderr.contains("(reused)\n"), "{stderr}");
    // The plan prices validation on the dataset's own split: 1 video of 30 frames.
    let plan = ablate(&["--plan"]);
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(stdout.contains("validation: 30 frames"), "{stdout}");
}

/// Runs `ablate --quick` at a tiny size on `variants` into `out`, with `vgg_face` as the VGG-Face
/// weights, and returns the CNN-RNN variant's stored result (its `result.json`, wall-clock time
/// and the path of its starting CNN's weights, which lies in `out`, removed). No landmark
/// pretraining: the path of its weights would differ between outputs.
fn tiny_cli_result(out: &Path, vgg_face: &Path, variants: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "ablate",
        "--quick",
        "--seeds",
        "1",
        "--videos",
        "4",
        "--frames",
        "12",
        "--set",
        "threads=1",
        "--set",
        "schedule.steps=3",
        "--set",
        "schedule.validate_every=3",
        "--set",
        "network.input_size=32",
        "--pretext-steps",
        "0",
        "--vgg-face-weights",
        vgg_face.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for v in variants {
        args.extend(["--only", v]);
    }
    let output = affect_train(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gru-128x2-nolm"), "{stderr}");
    let path = out.join("gru-128x2-nolm/seed-0").join(RESULT_FILE);
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    record["result"]["seconds"] = serde_json::Value::Null;
    let first =
        std::fs::canonicalize(out.join("cnn-vgg_face-nolm/seed-0/best/model.safetensors")).unwrap();
    let pretrained = &mut record["config"]["network"]["pretrained"];
    assert_eq!(pretrained.as_str().map(Path::new), Some(first.as_path()));
    *pretrained = serde_json::Value::Null;
    record
}

/// The CNN variants on VGG-16 (ImageNet normalisation) and on VGG-Face (Caffe preprocessing),
/// and the CNN-RNN started from the VGG-Face CNN, need differently preprocessed crops: a
/// variant's result must not depend on which variants share its command (the in-memory set was
/// once rendered for the first variant's preprocessing only).
#[test]
fn every_variant_trains_on_crops_preprocessed_as_its_config_says() {
    let dir = tempfile::tempdir().unwrap();
    // "VGG-Face weights" of the quick base's size at 32 px: any weights of that shape do.
    let mut config = TrainConfig::from_overrides(&tiny_base(&[])).unwrap();
    config.network.backbone = Backbone::VggFace;
    config.network.kind = Architecture::Cnn;
    config.network.landmarks = false;
    let model = Model::new(&config.network, tch::Device::Cpu).unwrap();
    let vgg_face = dir.path().join("vgg_face.safetensors");
    model.save(&vgg_face).unwrap();

    let alone = tiny_cli_result(&dir.path().join("alone"), &vgg_face, &["gru-128x2-nolm"]);
    assert!(dir.path().join("alone/cnn-vgg_face-nolm/seed-0").exists());
    let after_cnn = tiny_cli_result(
        &dir.path().join("after-cnn"),
        &vgg_face,
        &["cnn-vgg16-nolm", "gru-128x2-nolm"],
    );
    assert_eq!(alone, after_cnn);
    assert_eq!(alone["config"]["network"]["backbone"], "vgg_face");
}
