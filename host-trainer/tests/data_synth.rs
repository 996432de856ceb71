//! The synthetic dataset writer: read back by the Aff-Wild2 reader with zero problems, counts that
//! match, byte-identical trees for a seed whatever the thread count, and the two CLI commands;
//! in the Aff-Wild layout, every simulated annotator's files beside their mean, read back with
//! `--annotation mean|NAME`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use affect_shared::preprocess::FaceBox;
use affect_shared::synth::{SynthConfig, SyntheticVideo};
use affect_trainer::data::affwild;
use affect_trainer::data::inspect::{InspectOptions, inspect};
use affect_trainer::data::synth::{SynthDatasetConfig, SynthLayout, SynthSummary, write_dataset};
use affect_trainer::data::{Annotation, DataError, Dataset, FaceSource, Format, ReadOptions};
use sha2::{Digest, Sha256};

fn config(seed: u64) -> SynthDatasetConfig {
    SynthDatasetConfig {
        layout: SynthLayout::AffWild2,
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
                ..ReadOptions::default()
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

/// Three videos (two train, one validation) in the Aff-Wild layout with three annotators.
fn annotated_config(seed: u64) -> SynthDatasetConfig {
    SynthDatasetConfig {
        layout: SynthLayout::AffWild,
        videos: 3,
        val_fraction: 0.34,
        seed,
        jpeg_quality: 85,
        render: SynthConfig {
            size: 40,
            frames: 30,
            annotators: 3,
            no_face_rate: 0.03,
            invalid_label_rate: 0.03,
            ..SynthConfig::default()
        },
    }
}

fn open(root: &Path, split: &str, annotation: &str) -> Result<Dataset, DataError> {
    Dataset::open(
        root,
        split,
        &ReadOptions {
            max_errors: Some(0),
            annotation: annotation.parse().unwrap(),
        },
    )
}

#[test]
fn the_aff_wild_layout_holds_each_annotator_beside_their_mean_and_reads_back_either() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    let cfg = annotated_config(4);
    let summary = write_with_threads(&root, &cfg, 2);
    assert_eq!((summary.train_videos, summary.validation_videos), (2, 1));
    assert_eq!(Format::detect(&root).unwrap(), Format::AffWild);
    assert_eq!(Dataset::splits(&root).unwrap(), ["train", "validation"]);
    let names = ["annotator-1", "annotator-2", "annotator-3"];
    assert_eq!(affwild::annotators(&root, "Train_Set").unwrap(), names);
    assert_eq!(affwild::annotators(&root, "validation").unwrap(), names);

    let mean = open(&root, "train", "mean").unwrap();
    assert!(mean.problems.is_empty(), "{:?}", mean.problems);
    assert_eq!(mean.videos.len(), 2);
    let per_annotator: Vec<Dataset> = names
        .iter()
        .map(|n| open(&root, "train", n).unwrap())
        .collect();
    let mut disagree = false;
    for (v, video) in mean.videos.iter().enumerate() {
        // The files hold exactly what the generator's annotators wrote.
        let rendered: Vec<_> = SyntheticVideo::new(&cfg.render, cfg.seed, v as u64).collect();
        assert_eq!(video.frames.len(), 30);
        for (t, frame) in video.frames.iter().enumerate() {
            assert_eq!(frame.label, rendered[t].annotation, "video {v} frame {t}");
            assert_eq!(frame.face.is_some(), rendered[t].face.is_some());
            if let Some(FaceSource::InFrame { face_box, .. }) = &frame.face {
                // The box the default 20 % margin enlarges back to the whole crop.
                let expected = FaceBox::whole_crop(40, 40, 0.2);
                let got = [face_box.x, face_box.y, face_box.w, face_box.h];
                let want = [expected.x, expected.y, expected.w, expected.h];
                assert!(
                    got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-4),
                    "{got:?}"
                );
            }
            let labels: Vec<Option<[f32; 2]>> = per_annotator
                .iter()
                .map(|ds| ds.videos[v].frames[t].label)
                .collect();
            for (k, ds) in per_annotator.iter().enumerate() {
                let other = &ds.videos[v].frames[t];
                assert!(ds.problems.is_empty(), "{:?}", ds.problems);
                assert_eq!(other.face, frame.face, "the same frames, other labels");
                assert_eq!(other.landmarks, frame.landmarks);
                assert_eq!(other.label, rendered[t].annotators.get(k).copied());
            }
            match frame.label {
                Some(m) => {
                    let labels: Vec<[f32; 2]> = labels.into_iter().map(Option::unwrap).collect();
                    for d in 0..2 {
                        let average = labels.iter().map(|l| l[d]).sum::<f32>() / 3.0;
                        assert!((m[d] - average).abs() <= 0.0005 + 1e-6, "mean = average");
                    }
                    disagree |= labels.iter().any(|l| *l != m);
                }
                None => assert!(labels.iter().all(Option::is_none), "unannotated for all"),
            }
        }
    }
    assert!(disagree, "annotators differ from their mean");
}

#[test]
fn an_unknown_annotator_is_an_error_naming_the_directory_and_the_annotators_present() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("affwild");
    write_with_threads(&root, &annotated_config(5), 1);
    let err = open(&root, "validation", "annotator-9").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::UnknownAnnotator { .. }), "{err:?}");
    assert!(
        text.contains(
            &root
                .join("annotations/validation/annotators/annotator-9")
                .display()
                .to_string()
        ),
        "{text}"
    );
    assert!(
        text.contains("annotators present: annotator-1, annotator-2, annotator-3"),
        "{text}"
    );

    // The Aff-Wild2 layout has no per-annotator files: naming one is refused, clearly.
    let affwild2 = tmp.path().join("affwild2");
    write_with_threads(&affwild2, &config(5), 1);
    let text = open(&affwild2, "Train_Set", "annotator-1")
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("Aff-Wild2 layout has no per-annotator"),
        "{text}"
    );
    assert!(open(&affwild2, "Train_Set", "mean").is_ok());
    // … and the writer will not put annotators where they cannot be stored.
    let mut bad = config(5);
    bad.render.annotators = 2;
    let text = write_dataset(&tmp.path().join("bad"), &bad)
        .unwrap_err()
        .to_string();
    assert!(text.contains("--layout affwild"), "{text}");

    // Annotation choices: `mean` or a plain name (no paths).
    assert_eq!("mean".parse::<Annotation>().unwrap(), Annotation::Mean);
    assert_eq!(
        "annotator-2".parse::<Annotation>().unwrap(),
        Annotation::Annotator("annotator-2".into())
    );
    for bad in ["", "..", "../annotator-1", "a/b"] {
        assert!(bad.parse::<Annotation>().is_err(), "{bad:?}");
    }
}

#[test]
fn synth_writes_annotators_and_data_inspect_reads_one_with_annotation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cli");
    let bin = env!("CARGO_BIN_EXE_affect-train");
    let synth = Command::new(bin)
        .args([
            "synth",
            "--videos",
            "2",
            "--frames",
            "12",
            "--size",
            "32",
            "--seed",
            "2",
            "--layout",
            "affwild",
            "--annotators",
            "2",
            "--val-fraction",
            "0.5",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let inspect = |annotation: &str| {
        Command::new(bin)
            .args(["data", "inspect", "--no-plot", "--annotation", annotation])
            .arg(&out)
            .output()
            .unwrap()
    };
    let one = inspect("annotator-2");
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let text = String::from_utf8(one.stdout).unwrap();
    assert!(
        text.contains("(Aff-Wild, annotation: annotator-2)"),
        "{text}"
    );
    assert!(
        text.contains("[train]") && text.contains("[validation]"),
        "{text}"
    );
    assert!(text.contains("problems                    0"), "{text}");

    let unknown = inspect("annotator-7");
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("annotators present: annotator-1, annotator-2"),
        "{err}"
    );
    assert_eq!(inspect("../x").status.code(), Some(2), "not a plain name");

    let refused = Command::new(bin)
        .args([
            "synth",
            "--videos",
            "1",
            "--frames",
            "2",
            "--annotators",
            "2",
            "--out",
        ])
        .arg(tmp.path().join("affwild2"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--layout affwild"));
}

/// `train --annotation NAME` trains on that annotator (recorded as `data.annotation`) and
/// `eval --annotation NAME` scores against one; an unknown name is bad input (exit code 2).
#[cfg(feature = "torch")]
#[test]
fn train_and_eval_take_an_annotation() {
    use affect_trainer::train::config::TrainConfig;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let bin = env!("CARGO_BIN_EXE_affect-train");
    let ok = |args: &[&std::ffi::OsStr]| {
        let output = Command::new(bin).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    ok(&[
        "synth".as_ref(),
        "--layout".as_ref(),
        "affwild".as_ref(),
        "--annotators".as_ref(),
        "2".as_ref(),
        "--videos".as_ref(),
        "2".as_ref(),
        "--frames".as_ref(),
        "20".as_ref(),
        "--size".as_ref(),
        "32".as_ref(),
        "--val-fraction".as_ref(),
        "0.5".as_ref(),
        "--out".as_ref(),
        data.as_os_str(),
    ]);
    let train = |out: &Path, annotation: &str| {
        let mut args: Vec<std::ffi::OsString> = vec!["train".into(), "--data".into()];
        args.push(data.clone().into());
        args.extend(["--out".into(), out.as_os_str().to_owned()]);
        args.extend(["--annotation".into(), annotation.into()]);
        for set in [
            "device=\"cpu\"",
            "network.backbone=\"vgg16\"",
            "network.width=0.0625",
            "network.input_size=32",
            "network.hidden=8",
            "network.layers=1",
            "batch.sequences=1",
            "batch.sequence_length=8",
            "schedule.steps=2",
            "schedule.validate_every=2",
        ] {
            args.extend(["--set".into(), set.into()]);
        }
        Command::new(bin).args(&args).output().unwrap()
    };
    let trained = train(&run, "annotator-2");
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let config = TrainConfig::read(&run.join("config.toml")).unwrap();
    assert_eq!(
        config.data.annotation,
        Annotation::Annotator("annotator-2".into())
    );

    let unknown = train(&tmp.path().join("run2"), "annotator-5");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("annotators present: annotator-1, annotator-2"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    ok(&[
        "eval".as_ref(),
        "--run".as_ref(),
        run.as_os_str(),
        "--annotation".as_ref(),
        "annotator-1".as_ref(),
        "--plot-videos".as_ref(),
        "0".as_ref(),
    ]);
    assert!(run.join("eval/Validation_Set/report.json").is_file());
    let bad = Command::new(bin)
        .args(["eval", "--annotation", "annotator-5", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
