//! Readers under bad data: a corrupted copy of a synthetic dataset is inspected and loaded
//! without a crash, each problem reported by file and line; `max_errors` turns too many into a
//! failure. And a small Aff-Wild (2017 layout) fixture written here.

use affect_shared::contract::LANDMARK_VALUES;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use affect_shared::preprocess::Preprocess;
use affect_shared::synth::{FaceState, Person, SynthConfig, render_face};
use affect_trainer::data::inspect::{InspectOptions, inspect};
use affect_trainer::data::synth::{SynthDatasetConfig, SynthLayout, video_name, write_dataset};
use affect_trainer::data::{
    DataError, Dataset, FaceSource, Format, Loader, LoaderConfig, Problem, ProblemKind, ReadOptions,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn synthetic(root: &Path) {
    write_dataset(
        root,
        &SynthDatasetConfig {
            layout: SynthLayout::AffWild2,
            videos: 3,
            val_fraction: 0.0,
            seed: 5,
            jpeg_quality: 90,
            render: SynthConfig {
                size: 40,
                frames: 30,
                no_face_rate: 0.0,
                invalid_label_rate: 0.0,
                ..SynthConfig::default()
            },
        },
    )
    .unwrap();
}

fn annotation(root: &Path, video: usize) -> PathBuf {
    root.join("annotations/VA_Estimation_Challenge/Train_Set")
        .join(format!("{}.txt", video_name(video, 40)))
}

fn replace_line(path: &Path, line: usize, text: &str) {
    let content = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = content.lines().map(str::to_owned).collect();
    lines[line - 1] = text.to_owned();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn find<'a>(problems: &'a [Problem], kind: ProblemKind, file: &Path) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.kind == kind && p.path == file)
        .unwrap_or_else(|| panic!("no {kind:?} problem for {}: {problems:#?}", file.display()))
}

#[test]
fn a_corrupted_copy_is_inspected_and_loaded_with_every_problem_located() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("bad");
    synthetic(&root);
    let crops = |video: usize| root.join("cropped_aligned").join(video_name(video, 40));

    // Video 0: garbage line, NaN, out of range, truncated last line, a truncated JPEG.
    let ann0 = annotation(&root, 0);
    replace_line(&ann0, 3, "abc,def");
    replace_line(&ann0, 5, "nan,0.1");
    replace_line(&ann0, 7, "1.5,0.2");
    let text = std::fs::read_to_string(&ann0).unwrap();
    let cut = text.trim_end().rfind(',').unwrap();
    std::fs::write(&ann0, &text[..cut]).unwrap();
    let jpg = crops(0).join("00010.jpg");
    let bytes = std::fs::read(&jpg).unwrap();
    std::fs::write(&jpg, &bytes[..bytes.len() / 8]).unwrap();
    // Video 1: an image beyond the annotated frames, and a bad landmark row.
    std::fs::copy(crops(1).join("00001.jpg"), crops(1).join("00031.jpg")).unwrap();
    let lm1 = root
        .join("landmarks")
        .join(format!("{}.csv", video_name(1, 40)));
    replace_line(&lm1, 4, "3,1.0,2.0");
    // Video 2: its crops directory is missing; a wrong header.
    std::fs::remove_dir_all(crops(2)).unwrap();
    let ann2 = annotation(&root, 2);
    replace_line(&ann2, 1, "v,a");

    let report = inspect(&root, &InspectOptions::default()).unwrap();
    let problems = &report.splits[0].problems;
    let line_of = |kind, file: &Path| find(problems, kind, file).line;
    assert_eq!(line_of(ProblemKind::BadLine, &ann0), Some(3));
    assert_eq!(line_of(ProblemKind::NotFinite, &ann0), Some(5));
    assert_eq!(line_of(ProblemKind::OutOfRange, &ann0), Some(7));
    assert_eq!(
        problems
            .iter()
            .filter(|p| p.kind == ProblemKind::BadLine && p.path == ann0)
            .count(),
        2,
        "the garbage line and the truncated last line"
    );
    assert_eq!(line_of(ProblemKind::BadHeader, &ann2), Some(1));
    find(problems, ProblemKind::BadImage, &jpg);
    find(problems, ProblemKind::FrameCountMismatch, &crops(1));
    assert_eq!(line_of(ProblemKind::BadLandmarks, &lm1), Some(4));
    find(problems, ProblemKind::MissingFile, &crops(2));
    // Each problem prints as FILE:LINE: message.
    let shown = find(problems, ProblemKind::NotFinite, &ann0).to_string();
    assert!(
        shown.starts_with(&format!("{}:5: ", ann0.display())),
        "{shown}"
    );
    assert!(report.to_string().contains(&shown));

    // Frames stay aligned: bad lines are unlabelled frames, not dropped ones.
    let ds = Dataset::open(&root, "Train_Set", &ReadOptions::default()).unwrap();
    let v0 = &ds.videos[0];
    assert_eq!(v0.frames.len(), 30);
    for line in [3, 5, 7, 31] {
        assert_eq!(v0.frames[line - 2].label, None, "annotation line {line}");
    }
    assert!(v0.frames[2].label.is_some());
    // A mangled header is not a frame; without its crops directory the video has no faces.
    assert_eq!(ds.videos[2].frames.len(), 30);
    assert!(ds.videos[2].frames.iter().all(|f| f.face.is_none()));

    // Loading goes through: the truncated JPEG is masked and counted.
    let loader = Loader::new(
        Arc::new(ds),
        Preprocess::imagenet(32),
        LoaderConfig {
            batch_size: 16,
            workers: 2,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let batches: Vec<_> = loader.epoch(0).unwrap().collect();
    let masked: f32 = batches.iter().flat_map(|b| &b.mask).sum();
    let clips = loader.clips().len();
    assert_eq!(loader.stats().failed, 1);
    assert_eq!(masked as usize, clips - 1);

    // A limit turns too many problems into an error naming the first and the last.
    let err = inspect(
        &root,
        &InspectOptions {
            max_errors: Some(3),
            ..InspectOptions::default()
        },
    )
    .unwrap_err();
    match err {
        DataError::TooManyProblems { limit, first, .. } => {
            assert_eq!(limit, 3);
            assert_eq!(first.path, ann0);
        }
        other => panic!("expected TooManyProblems, got {other}"),
    }
}

fn write_pts(path: &Path, points: &[[f32; 2]]) {
    let mut text = format!("version: 1\nn_points: {}\n{{\n", points.len());
    for p in points {
        text.push_str(&format!("{:.3} {:.3}\n", p[0], p[1]));
    }
    text.push_str("}\n");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Aff-Wild (2017): per-dimension annotations, full frames with the face somewhere in them,
/// `.pts` boxes and landmarks.
#[test]
fn the_aff_wild_2017_layout_reads_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let person = Person::random(&mut ChaCha8Rng::seed_from_u64(1));
    let frames = 6;
    let (mut valence, mut arousal) = (String::new(), String::new());
    for i in 0..frames {
        let (v, a) = (-0.5 + 0.2 * i as f32, 0.3 - 0.1 * i as f32);
        valence.push_str(&format!("{v:.3}\n"));
        arousal.push_str(&format!("{a:.3}\n"));
        let number = i + 1;
        if number == 4 {
            continue; // no face detected on frame 4: image but no box, no landmarks
        }
        let (crop, lm) = render_face(
            &person,
            &FaceState::neutral_pose([v, a]),
            48,
            &mut ChaCha8Rng::seed_from_u64(i as u64),
        );
        let (ox, oy) = (30.0 + 4.0 * i as f32, 10.0);
        let mut frame = image::RgbImage::new(128, 80);
        image::imageops::replace(&mut frame, &crop, ox as i64, oy as i64);
        let dir = root.join("frames/train/vid1");
        std::fs::create_dir_all(&dir).unwrap();
        frame.save(dir.join(format!("{number:05}.png"))).unwrap();
        let shifted: Vec<[f32; 2]> = lm.0.iter().map(|p| [p[0] + ox, p[1] + oy]).collect();
        write_pts(
            &root.join(format!("landmarks/train/vid1/{number}.pts")),
            &shifted,
        );
        write_pts(
            &root.join(format!("bboxs/train/vid1/{number}.pts")),
            &[
                [ox, oy],
                [ox + 48.0, oy],
                [ox, oy + 48.0],
                [ox + 48.0, oy + 48.0],
            ],
        );
    }
    // Frame 4 has an image but no box.
    std::fs::copy(
        root.join("frames/train/vid1/00001.png"),
        root.join("frames/train/vid1/00004.png"),
    )
    .unwrap();
    for (dim, text) in [("valence", &valence), ("arousal", &arousal)] {
        let dir = root.join("annotations/train").join(dim);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vid1.txt"), text).unwrap();
    }
    // A second video whose arousal file is one line short and whose landmark file is broken.
    let dir = root.join("annotations/train");
    std::fs::write(dir.join("valence/vid2.txt"), "0.1\n0.2\n0.3\n").unwrap();
    std::fs::write(dir.join("arousal/vid2.txt"), "0.1\n0.2\n").unwrap();
    let broken = root.join("landmarks/train/vid2/1.pts");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, "version: 1\nn_points: 68\n{\n1.0 2.0\n3.0\n").unwrap();

    assert_eq!(Format::detect(root).unwrap(), Format::AffWild);
    assert_eq!(Dataset::splits(root).unwrap(), ["train"]);
    let ds = Dataset::open(root, "Train_Set", &ReadOptions::default()).unwrap();
    assert_eq!(ds.split, "train");
    assert_eq!(ds.videos.len(), 2);
    let vid1 = &ds.videos[0];
    assert_eq!(vid1.frames.len(), frames);
    assert_eq!(vid1.frames[0].label, Some([-0.5, 0.3]));
    assert!(vid1.frames[3].face.is_none() && vid1.frames[3].landmarks.is_none());
    match &vid1.frames[1].face {
        Some(FaceSource::InFrame { face_box, image }) => {
            assert_eq!((face_box.x, face_box.y, face_box.w), (34.0, 10.0, 48.0));
            assert!(image.ends_with("00002.png"));
        }
        other => panic!("expected a face in a frame, got {other:?}"),
    }
    let vid2 = &ds.videos[1];
    assert_eq!(vid2.frames.len(), 3);
    assert_eq!(vid2.frames[2].label, None, "arousal missing for frame 3");
    let arousal2 = root.join("annotations/train/arousal/vid2.txt");
    find(&ds.problems, ProblemKind::FrameCountMismatch, &arousal2);
    let bad = find(&ds.problems, ProblemKind::BadLandmarks, &broken);
    assert_eq!(bad.line, Some(5));
    find(
        &ds.problems,
        ProblemKind::MissingFile,
        &root.join("frames/train/vid2"),
    );

    // The loader crops each face out of its frame, landmarks relative to the crop.
    let loader = Loader::new(
        Arc::new(ds),
        Preprocess {
            landmarks: true,
            ..Preprocess::imagenet(32)
        },
        LoaderConfig {
            batch_size: 8,
            shuffle: false,
            workers: 1,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    assert_eq!(loader.clips().len(), 5, "vid1 frames with face and label");
    let batch = loader.epoch(0).unwrap().next().unwrap();
    assert_eq!(batch.mask, vec![1.0; 5]);
    assert_eq!(batch.labels[..2], [-0.5, 0.3]);
    let lm = &batch.landmarks[..LANDMARK_VALUES];
    assert!(lm.iter().all(|v| (0.0..1.0).contains(v)), "{lm:?}");
}

/// Editing an Aff-Wild box file changes the crop even with the crop cache on (the cache key
/// holds the box), and changes the dataset fingerprint.
#[test]
fn an_edited_face_box_changes_the_cached_crop_and_the_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("affwild");
    let cache = tmp.path().join("cache");
    let person = Person::random(&mut ChaCha8Rng::seed_from_u64(3));
    let frames = 3;
    let mut labels = String::new();
    for i in 0..frames {
        labels.push_str("0.25\n");
        let number = i + 1;
        let (crop, _) = render_face(
            &person,
            &FaceState::neutral_pose([0.25, 0.25]),
            48,
            &mut ChaCha8Rng::seed_from_u64(i as u64),
        );
        let mut frame = image::RgbImage::new(128, 80);
        image::imageops::replace(&mut frame, &crop, 30, 10);
        let dir = root.join("frames/train/vid1");
        std::fs::create_dir_all(&dir).unwrap();
        frame.save(dir.join(format!("{number:05}.png"))).unwrap();
    }
    let write_boxes = |x: f32| {
        for number in 1..=frames {
            write_pts(
                &root.join(format!("bboxs/train/vid1/{number}.pts")),
                &[[x, 10.0], [x + 48.0, 10.0], [x, 58.0], [x + 48.0, 58.0]],
            );
        }
    };
    write_boxes(30.0);
    for dim in ["valence", "arousal"] {
        let dir = root.join("annotations/train").join(dim);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vid1.txt"), &labels).unwrap();
    }
    let open = || Arc::new(Dataset::open(&root, "train", &ReadOptions::default()).unwrap());
    let faces = |ds: &Arc<Dataset>, cache_dir: Option<&Path>| {
        let loader = Loader::new(
            Arc::clone(ds),
            Preprocess::imagenet(32),
            LoaderConfig {
                batch_size: frames,
                shuffle: false,
                workers: 1,
                cache_dir: cache_dir.map(Path::to_owned),
                ..LoaderConfig::default()
            },
        )
        .unwrap();
        let batch = loader.epoch(0).unwrap().next().unwrap();
        assert_eq!(batch.sequences, frames);
        batch.faces
    };

    let before = open();
    let first = faces(&before, Some(&cache));
    assert_eq!(first, faces(&before, None));

    // The face box moves 20 pixels to the right; images and annotations stay as they were.
    write_boxes(50.0);
    let after = open();
    let cached = faces(&after, Some(&cache));
    let uncached = faces(&after, None);
    assert!(uncached != first, "the new box crops other pixels");
    assert!(cached == uncached, "the cache served a crop of the old box");
    assert_ne!(after.fingerprint(), before.fingerprint());
}
