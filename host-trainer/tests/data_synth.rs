//! The synthetic dataset writer: read back by the Aff-Wild2 reader with zero problems, counts that
//! match, byte-identical trees for a seed whatever the thread count, and the two CLI commands.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use affect_shared::synth::SynthConfig;
use affect_trainer::data::inspect::{InspectOptions, inspect};
use affect_trainer::data::synth::{SynthDatasetConfig, SynthSummary, write_dataset};
use affect_trainer::data::{Dataset, Format, ReadOptions};
use sha2::{Digest, Sha256};

fn config(seed: u64) -> SynthDatasetConfig {
    SynthDatasetConfig {
        videos: 5,
        val_fraction: 0.4,
        seed,
        jpeg_quality: 85,
        render: SynthConfig {
            size: 48,
            frames: 40,
            no_face_rate: 0.03,
            invalid_label_rate: 0.02,
            ..SynthConfig::default()
        },
    }
}

/// Relative path → SHA-256 of every file under `root`.
fn tree_hashes(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(relative, hex);
            }
        }
    }
    out
}

fn write_with_threads(out: &Path, config: &SynthDatasetConfig, threads: usize) -> SynthSummary {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| write_dataset(out, config))
        .unwrap()
}

#[test]
fn same_seed_writes_a_byte_identical_tree_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    write_with_threads(&a, &config(7), 1);
    write_with_threads(&b, &config(7), 3);
    write_with_threads(&c, &config(8), 2);
    let (ha, hb, hc) = (tree_hashes(&a), tree_hashes(&b), tree_hashes(&c));
    assert!(ha.len() > 100, "{} files", ha.len());
    assert_eq!(ha, hb);
    assert_ne!(ha, hc, "another seed is another dataset");
}

#[test]
fn synthetic_output_reads_back_with_zero_problems_and_matching_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    let cfg = config(3);
    let summary = write_with_threads(&root, &cfg, 2);
    assert_eq!(summary.train_videos + summary.validation_videos, 5);
    assert_eq!(summary.validation_videos, 2);
    assert_eq!(summary.frames, 5 * 40);
    assert!(summary.faces < summary.frames, "some frames have no face");
    assert!(summary.unlabelled > 0, "some frames are -5");

    assert_eq!(
        Dataset::splits(&root).unwrap(),
        ["Train_Set", "Validation_Set"]
    );
    let (mut frames, mut faces, mut labelled) = (0, 0, 0);
    for (split, videos) in [("train", 3), ("Validation_Set", 2)] {
        let ds = Dataset::open(
            &root,
            split,
            &ReadOptions {
                max_errors: Some(0),
            },
        )
        .unwrap();
        assert_eq!(ds.format, Format::AffWild2);
        assert!(ds.problems.is_empty(), "{:?}", ds.problems);
        assert_eq!(ds.videos.len(), videos);
        for video in &ds.videos {
            assert_eq!(video.frames.len(), 40);
            for frame in &video.frames {
                // Every synthetic face comes with its landmarks, inside the crop.
                assert_eq!(frame.face.is_some(), frame.landmarks.is_some());
                if let Some(lm) = &frame.landmarks {
                    assert!(lm.0.iter().flatten().all(|v| (0.0..48.0).contains(v)));
                }
                if let Some([v, a]) = frame.label {
                    assert!((-1.0..=1.0).contains(&v) && (-1.0..=1.0).contains(&a));
                }
            }
        }
        frames += ds.frame_count();
        faces += ds.face_count();
        labelled += ds.labelled_count();
    }
    assert_eq!(frames, summary.frames);
    assert_eq!(faces, summary.faces);
    assert_eq!(labelled, summary.frames - summary.unlabelled);

    let report = inspect(
        &root,
        &InspectOptions {
            max_errors: Some(0),
            ..InspectOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.problem_count(), 0);
    let total: usize = report.splits.iter().map(|s| s.frames).sum();
    assert_eq!(total, summary.frames);
    assert_eq!(report.histogram().total() as usize, labelled);
    let quadrants: usize = report.splits.iter().flat_map(|s| s.quadrants).sum();
    assert_eq!(quadrants, labelled);
}

#[test]
fn the_synth_and_inspect_commands_write_report_and_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cli");
    let bin = env!("CARGO_BIN_EXE_affect-train");
    let status = Command::new(bin)
        .args([
            "synth", "--videos", "3", "--frames", "12", "--size", "32", "--seed", "1",
        ])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    // A second run into the same (now non-empty) directory is refused as bad input.
    let again = Command::new(bin)
        .args(["synth", "--videos", "1", "--frames", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let plot = tmp.path().join("hist.png");
    let inspected = Command::new(bin)
        .args(["data", "inspect"])
        .arg(&out)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let text = String::from_utf8(inspected.stdout).unwrap();
    assert!(
        text.contains("[Train_Set]") && text.contains("[Validation_Set]"),
        "{text}"
    );
    assert!(text.contains("problems                    0"), "{text}");
    let png = image::open(&plot).unwrap();
    assert_eq!((png.width(), png.height()), (640, 600));

    let missing = Command::new(bin)
        .args(["data", "inspect"])
        .arg(tmp.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}
