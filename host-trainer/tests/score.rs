//! `affect-train score` end to end: agreement with an independent numpy implementation on
//! random and adversarial data, and clear errors (file and line, exit code 2) on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng, rngs::StdRng};

mod common;

fn write_csv(path: &Path, rows: &[[f64; 2]]) {
    let mut text = String::from("valence,arousal\n");
    for [v, a] in rows {
        text.push_str(&format!("{v:?},{a:?}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn affect_train(args: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_affect-train"));
    cmd.arg("score")
        .arg("--pred")
        .arg(args[0])
        .arg("--truth")
        .arg(args[1]);
    cmd.output().unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// One scoring case: name, predictions, truth.
type Case = (&'static str, Vec<[f64; 2]>, Vec<[f64; 2]>);

fn cases() -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut uniform = |n: usize| -> Vec<[f64; 2]> {
        (0..n)
            .map(|_| [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)])
            .collect()
    };
    let truth = uniform(5000);
    let noisy: Vec<[f64; 2]> = truth
        .iter()
        .zip(uniform(5000))
        .map(|(t, e)| [0.7 * t[0] + 0.2 * e[0], t[1] - 0.3 * e[1]])
        .collect();
    let constant = vec![[0.1, -0.2]; 5000];
    let tiny: Vec<[f64; 2]> = uniform(5000)
        .iter()
        .map(|e| [0.3 + 1e-4 * e[0], -0.6 + 1e-4 * e[1]])
        .collect();
    let mut with_invalid = truth.clone();
    for row in with_invalid.iter_mut().step_by(7) {
        row[0] = -5.0;
    }
    for row in with_invalid.iter_mut().skip(3).step_by(11) {
        *row = [-5.0, -5.0];
    }
    let big_truth = uniform(1_000_000);
    let big_pred: Vec<[f64; 2]> = big_truth
        .iter()
        .map(|t| [t[0] * 0.5 + 0.1, -t[1]])
        .collect();
    vec![
        ("random", uniform(5000), truth.clone()),
        ("correlated", noisy.clone(), truth.clone()),
        ("constant predictions", constant, truth.clone()),
        (
            "tiny variance",
            tiny.clone(),
            tiny.iter().rev().copied().collect(),
        ),
        ("identical", truth.clone(), truth.clone()),
        ("-5 rows", noisy, with_invalid),
        ("1e6 frames", big_pred, big_truth),
    ]
}

#[test]
fn agrees_with_independent_numpy_implementation() {
    let python = common::oracle_env("AFFECT_PYTHON", "the numpy score oracle");
    let oracle: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "tests",
        "oracles",
        "score_oracle.py",
    ]
    .iter()
    .collect();
    let dir = tempfile::tempdir().unwrap();
    for (name, pred, truth) in cases() {
        let (p, t) = (dir.path().join("pred.csv"), dir.path().join("truth.csv"));
        write_csv(&p, &pred);
        write_csv(&t, &truth);
        let out = affect_train(&[&p, &t]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = json(&out.stdout);
        let expected_frames = truth.iter().filter(|r| !r.contains(&-5.0)).count();
        assert_eq!(
            ours["frames"].as_u64(),
            Some(expected_frames as u64),
            "{name}"
        );
        for dim in ["valence", "arousal"] {
            let ccc = ours[dim]["ccc"].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&ccc), "{name} {dim}: ccc {ccc}");
        }
        if name == "identical" {
            assert_eq!(ours["valence"]["ccc"].as_f64(), Some(1.0));
            assert_eq!(ours["arousal"]["mse"].as_f64(), Some(0.0));
        }
        if name == "constant predictions" {
            assert!(ours["valence"]["ccc"].as_f64().unwrap().abs() < 1e-12);
        }
        let Some(python) = &python else { continue };
        let out = Command::new(python)
            .arg(&oracle)
            .arg(&p)
            .arg(&t)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = json(&out.stdout);
        assert_eq!(ours["frames"], theirs["frames"], "{name}");
        for dim in ["valence", "arousal"] {
            for metric in ["ccc", "mse"] {
                let (a, b) = (
                    ours[dim][metric].as_f64().unwrap(),
                    theirs[dim][metric].as_f64().unwrap(),
                );
                assert!(
                    (a - b).abs() <= 1e-9,
                    "{name} {dim} {metric}: ours {a}, numpy {b}"
                );
            }
        }
    }
}

#[test]
fn bad_input_names_file_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    write_csv(&good, &[[0.1, 0.2], [0.3, -0.4], [0.0, 0.5]]);
    let cases: [(&str, &str, &str); 6] = [
        (
            "garbage.csv",
            "valence,arousal\n0.1,0.2\nabc,0.3\n0.1,0.1\n",
            "garbage.csv:3: valence: `abc`",
        ),
        (
            "nan.csv",
            "valence,arousal\n0.1,0.2\n0.3,NaN\n0.1,0.1\n",
            "nan.csv:3: arousal",
        ),
        (
            "short.csv",
            "valence,arousal\n0.1,0.2\n0.3,0.1\n",
            "has 2 frames",
        ),
        (
            "columns.csv",
            "valence,arousal\n0.1,0.2,0.3\n0.3,0.1\n0.1,0.1\n",
            "columns.csv:2: expected 2",
        ),
        (
            "header.csv",
            "0.1,0.2\n0.3,0.1\n0.1,0.1\n",
            "header.csv:1: expected header",
        ),
        (
            "missing.csv",
            "valence,arousal\n0.1,0.2\n-5,-5\n0.1,0.1\n",
            "missing.csv:3: no prediction",
        ),
    ];
    for (file, text, message) in cases {
        let bad = dir.path().join(file);
        std::fs::write(&bad, text).unwrap();
        let out = affect_train(&[&bad, &good]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(message),
            "{file}: expected `{message}` in {stderr}"
        );
    }
    let out = affect_train(&[&good, &dir.path().join("absent.csv")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.csv"));
}
