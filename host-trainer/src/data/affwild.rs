//! Aff-Wild (2017) layout:
//!
//! ```text
//! annotations/<split>/valence/<video>.txt     one value per frame, no header
//! annotations/<split>/arousal/<video>.txt
//! annotations/<split>/annotators/<name>/{valence,arousal}/<video>.txt
//!                                             optional: one annotator's own trace, same format
//! bboxs/<split>/<video>/<n>.pts               face box corners of frame n (iBUG .pts)
//! landmarks/<split>/<video>/<n>.pts           68 landmarks of frame n (iBUG .pts)
//! frames/<split>/<video>/<n>.jpg              the video's frames
//! ```
//!
//! The release ships `videos/`; frames are extracted once, e.g.
//! `ffmpeg -i videos/train/105.mp4 frames/train/105/%05d.jpg`. Frame numbers are read from the
//! file stems (padding does not matter); numbering is 1-based (line n of the annotation = file
//! n) unless a file numbered 0 exists, in which case it is 0-based. A frame has a face when its
//! image exists and it has a box (from `bboxs/`, else the extent of its landmarks).
//!
//! The release's annotation files hold the per-frame mean of the annotators, and that is what
//! [`Annotation::Mean`] (the default) reads. [`Annotation::Annotator`] reads one annotator's
//! trace from `annotations/<split>/annotators/<name>/` instead (the synthetic generator writes
//! these, [`super::synth`]); the videos are still those of the mean's `valence/` directory.

use affect_shared::contract::LANDMARK_POINTS;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use affect_shared::preprocess::{FaceBox, Landmarks68};

use super::dataset::{Annotation, Dataset, FaceSource, Format, Frame, ReadOptions, Video};
use super::files::{self, INVALID_LABEL};
use super::problems::{DataError, Problem, ProblemKind, Problems};

/// Maps either layout's split spelling to Aff-Wild's (`train`, `validation`, `test`).
pub fn split_name(split: &str) -> String {
    match split.to_ascii_lowercase().as_str() {
        "train_set" | "training" => "train".into(),
        "val" | "valid" | "validation_set" => "validation".into(),
        "test_set" => "test".into(),
        other => other.to_owned(),
    }
}

/// Split directories under `annotations/`, sorted.
pub fn splits(root: &Path) -> Result<Vec<String>, DataError> {
    with_valence(&root.join("annotations"))
}

/// Names of the directories in `dir` that hold a `valence/` directory, sorted.
fn with_valence(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let entry = entry.map_err(DataError::io(dir))?;
        if entry.path().join("valence").is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The annotators with their own annotations in `split` (directories under
/// `annotations/<split>/annotators/` that hold a `valence/` directory), sorted; empty when there
/// are none.
pub fn annotators(root: &Path, split: &str) -> Result<Vec<String>, DataError> {
    let dir = root
        .join("annotations")
        .join(split_name(split))
        .join("annotators");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    with_valence(&dir)
}

/// The directory holding the `valence/` and `arousal/` files of `annotation` in `split`; an
/// annotator the split has no files of is an [`DataError::UnknownAnnotator`] naming the
/// annotators present.
pub fn annotation_dir(
    root: &Path,
    split: &str,
    annotation: &Annotation,
) -> Result<PathBuf, DataError> {
    let split_dir = root.join("annotations").join(split_name(split));
    match annotation {
        Annotation::Mean => Ok(split_dir),
        Annotation::Annotator(name) => {
            let dir = split_dir.join("annotators").join(name);
            if dir.join("valence").is_dir() {
                return Ok(dir);
            }
            let present = annotators(root, split)?;
            let reason = if present.is_empty() {
                "this split has no per-annotator annotations, only their mean: use `mean`".into()
            } else {
                format!("annotators present: {}", present.join(", "))
            };
            Err(DataError::UnknownAnnotator {
                dir,
                name: name.clone(),
                reason,
            })
        }
    }
}

/// Reads one split, labelled with `options.annotation`.
pub fn read(root: &Path, split: &str, options: &ReadOptions) -> Result<Dataset, DataError> {
    let split = split_name(split);
    let valence_dir = root.join("annotations").join(&split).join("valence");
    if !valence_dir.is_dir() {
        return Err(DataError::NotADataset {
            path: valence_dir,
            reason: format!(
                "split `{split}` not found (present: {})",
                splits(root)?.join(", ")
            ),
        });
    }
    let mut names: Vec<String> = std::fs::read_dir(&valence_dir)
        .map_err(DataError::io(&valence_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let labels = annotation_dir(root, &split, &options.annotation)?;
    let mut problems = Problems::new(options.max_errors);
    let mut videos = Vec::with_capacity(names.len());
    for name in names {
        videos.push(read_video(root, &labels, &split, &name, &mut problems)?);
    }
    Ok(Dataset {
        root: root.to_owned(),
        format: Format::AffWild,
        split,
        videos,
        problems: problems.into_vec(),
    })
}

/// Parses a one-value-per-line annotation file (`name` is the dimension, for messages).
pub fn parse_values(
    text: &str,
    path: &Path,
    name: &str,
    problems: &mut Problems,
) -> Result<Vec<Option<f32>>, DataError> {
    let mut out = Vec::new();
    for (i, row) in text.trim_end().lines().enumerate() {
        match files::check_label(row, name) {
            Ok(v) if v == INVALID_LABEL => out.push(None),
            Ok(v) => out.push(Some(v)),
            Err((kind, message)) => {
                problems.push(Problem::line(path, i + 1, kind, message))?;
                out.push(None);
            }
        }
    }
    Ok(out)
}

/// Reads `labels/<dimension>/<name>.txt` (`labels`: the split's annotation directory, or one
/// annotator's).
fn read_dimension(
    labels: &Path,
    dimension: &str,
    name: &str,
    problems: &mut Problems,
) -> Result<(PathBuf, Vec<Option<f32>>), DataError> {
    let path = labels.join(dimension).join(format!("{name}.txt"));
    if !path.is_file() {
        problems.push(Problem::file(
            &path,
            ProblemKind::MissingFile,
            format!("no {dimension} annotation for this video"),
        ))?;
        return Ok((path, Vec::new()));
    }
    let values = match files::read_text(&path, problems)? {
        Some(text) => parse_values(&text, &path, dimension, problems)?,
        None => Vec::new(),
    };
    Ok((path, values))
}

/// Reads the `.pts` files of one directory: frame number → points (bad files are problems).
fn read_pts_dir(
    dir: &Path,
    problems: &mut Problems,
) -> Result<BTreeMap<u64, Vec<[f32; 2]>>, DataError> {
    let mut out = BTreeMap::new();
    for (number, path) in files::numbered_files(dir, &["pts"], problems)? {
        let Some(text) = files::read_text(&path, problems)? else {
            continue;
        };
        match files::parse_pts(&text, &path) {
            Ok(points) => {
                out.insert(number, points);
            }
            Err(problem) => problems.push(problem)?,
        }
    }
    Ok(out)
}

fn bounding_box(points: &[[f32; 2]]) -> Option<FaceBox> {
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in points {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    (x1 > x0 && y1 > y0).then_some(FaceBox {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    })
}

fn read_video(
    root: &Path,
    labels: &Path,
    split: &str,
    name: &str,
    problems: &mut Problems,
) -> Result<Video, DataError> {
    let (valence_path, valence) = read_dimension(labels, "valence", name, problems)?;
    let (arousal_path, arousal) = read_dimension(labels, "arousal", name, problems)?;
    if valence.len() != arousal.len() && !valence.is_empty() && !arousal.is_empty() {
        problems.push(Problem::file(
            &arousal_path,
            ProblemKind::FrameCountMismatch,
            format!(
                "{} arousal values but {} valence values in {}",
                arousal.len(),
                valence.len(),
                valence_path.display()
            ),
        ))?;
    }
    let count = valence.len().max(arousal.len());
    let frames_dir = root.join("frames").join(split).join(name);
    let images = files::numbered_images(&frames_dir, problems)?;
    if images.is_empty() {
        problems.push(Problem::file(
            &frames_dir,
            ProblemKind::MissingFile,
            "no frame images for this video (extract them from videos/ with ffmpeg)",
        ))?;
    }
    let boxes = read_pts_dir(&root.join("bboxs").join(split).join(name), problems)?;
    let landmark_points = read_pts_dir(&root.join("landmarks").join(split).join(name), problems)?;
    let zero_based = images.contains_key(&0) || boxes.contains_key(&0);
    let to_number = |i: usize| if zero_based { i as u64 } else { i as u64 + 1 };
    let last_number = if count == 0 {
        None
    } else {
        Some(to_number(count - 1))
    };
    let beyond = images
        .keys()
        .filter(|&&n| last_number.is_none_or(|last| n > last))
        .count();
    if beyond > 0 {
        problems.push(Problem::file(
            &frames_dir,
            ProblemKind::FrameCountMismatch,
            format!("{beyond} frame image(s) beyond the {count} annotated frames"),
        ))?;
    }
    let mut frames = Vec::with_capacity(count);
    for i in 0..count {
        let number = to_number(i);
        let label = match (
            valence.get(i).copied().flatten(),
            arousal.get(i).copied().flatten(),
        ) {
            (Some(v), Some(a)) => Some([v, a]),
            _ => None,
        };
        let landmarks = match landmark_points.get(&number) {
            Some(points) if points.len() == LANDMARK_POINTS => {
                Some(Box::new(Landmarks68(core::array::from_fn(|k| points[k]))))
            }
            Some(points) => {
                problems.push(Problem::file(
                    &root
                        .join("landmarks")
                        .join(split)
                        .join(name)
                        .join(format!("{number}.pts")),
                    ProblemKind::BadLandmarks,
                    format!("expected {LANDMARK_POINTS} points, found {}", points.len()),
                ))?;
                None
            }
            None => None,
        };
        let face_box = boxes
            .get(&number)
            .and_then(|points| bounding_box(points))
            .or_else(|| landmarks.as_ref().and_then(|lm| bounding_box(&lm.0)));
        let face = match (images.get(&number), face_box) {
            (Some(image), Some(face_box)) => Some(FaceSource::InFrame {
                image: image.clone(),
                face_box,
            }),
            _ => None,
        };
        frames.push(Frame {
            label,
            face,
            landmarks,
        });
    }
    Ok(Video {
        name: name.to_owned(),
        frames,
    })
}
