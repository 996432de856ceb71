//! Aff-Wild2 / ABAW valence–arousal layout (also what `affect-train synth` writes by default):
//!
//! ```text
//! annotations/VA_Estimation_Challenge/Train_Set/<video>.txt       valence,arousal header, one row per frame, -5 = unannotated
//! annotations/VA_Estimation_Challenge/Validation_Set/<video>.txt
//! cropped_aligned/<video>/00001.jpg                               face crop of frame 1 (missing = no face)
//! landmarks/<video>.csv                                           optional: frame,x0,y0,…,x67,y67 in crop pixels
//! ```
//!
//! Older ABAW releases name the annotation directory `VA_Set`; both are accepted. The layout has
//! one label file per video (the annotators' consensus) and no per-annotator files, so only
//! [`Annotation::Mean`] reads it; naming an annotator is an [`DataError::UnknownAnnotator`].

use std::path::{Path, PathBuf};

use super::dataset::{Annotation, Dataset, FaceSource, Format, Frame, ReadOptions, Video};
use super::files::{self, INVALID_LABEL};
use super::problems::{DataError, Problem, ProblemKind, Problems};

/// Names of the valence–arousal annotation directory under `annotations/`.
const ANNOTATION_DIRS: [&str; 2] = ["VA_Estimation_Challenge", "VA_Set"];

/// The valence–arousal annotation directory of an Aff-Wild2 root, if it has one.
pub fn annotation_root(root: &Path) -> Option<PathBuf> {
    ANNOTATION_DIRS
        .iter()
        .map(|d| root.join("annotations").join(d))
        .find(|p| p.is_dir())
}

/// Maps either layout's split spelling to Aff-Wild2's.
pub fn split_name(split: &str) -> &str {
    match split.to_ascii_lowercase().as_str() {
        "train" | "training" | "train_set" => "Train_Set",
        "val" | "valid" | "validation" | "validation_set" => "Validation_Set",
        "test" | "test_set" => "Test_Set",
        _ => split,
    }
}

/// Split directories present, sorted.
pub fn splits(root: &Path) -> Result<Vec<String>, DataError> {
    let dir = annotation_root(root).ok_or_else(|| DataError::NotADataset {
        path: root.to_owned(),
        reason: "no annotations/VA_Estimation_Challenge directory".into(),
    })?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(DataError::io(&dir))? {
        let entry = entry.map_err(DataError::io(&dir))?;
        if entry.path().is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one split.
pub fn read(root: &Path, split: &str, options: &ReadOptions) -> Result<Dataset, DataError> {
    let annotations = annotation_root(root).ok_or_else(|| DataError::NotADataset {
        path: root.to_owned(),
        reason: "no annotations/VA_Estimation_Challenge directory".into(),
    })?;
    let split = split_name(split).to_owned();
    let split_dir = annotations.join(&split);
    if let Annotation::Annotator(name) = &options.annotation {
        return Err(DataError::UnknownAnnotator {
            dir: split_dir,
            name: name.clone(),
            reason: "the Aff-Wild2 layout has no per-annotator annotations, only one label file \
                     per video: use `mean`"
                .into(),
        });
    }
    if !split_dir.is_dir() {
        return Err(DataError::NotADataset {
            path: split_dir,
            reason: format!(
                "split `{split}` not found (present: {})",
                splits(root)?.join(", ")
            ),
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&split_dir)
        .map_err(DataError::io(&split_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut problems = Problems::new(options.max_errors);
    let mut videos = Vec::with_capacity(files.len());
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        videos.push(read_video(root, &name, &file, &mut problems)?);
    }
    Ok(Dataset {
        root: root.to_owned(),
        format: Format::AffWild2,
        split,
        videos,
        problems: problems.into_vec(),
    })
}

/// Parses a `valence,arousal` annotation text: one entry per frame line (the header excluded);
/// `None` for `-5` and for lines with problems.
pub fn parse_annotation(
    text: &str,
    path: &Path,
    problems: &mut Problems,
) -> Result<Vec<Option<[f32; 2]>>, DataError> {
    let mut labels = Vec::new();
    let mut lines = text.trim_end().lines().enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, header))
            if header
                .trim()
                .replace(' ', "")
                .eq_ignore_ascii_case("valence,arousal") => {}
        Some((line, header)) => {
            problems.push(Problem::line(
                path,
                line,
                ProblemKind::BadHeader,
                format!(
                    "expected header `valence,arousal`, found `{}`",
                    header.trim()
                ),
            ))?;
            // A first line of two numbers is a frame whose header is missing: keep it so frames
            // stay aligned. Anything else is a mangled header.
            let numbers = header.split(',').count() == 2
                && header.split(',').all(|f| f.trim().parse::<f32>().is_ok());
            if numbers {
                labels.push(parse_row(header, path, line, problems)?);
            }
        }
        None => {
            problems.push(Problem::file(
                path,
                ProblemKind::BadHeader,
                "empty annotation file",
            ))?;
        }
    }
    for (line, row) in lines {
        labels.push(parse_row(row, path, line, problems)?);
    }
    Ok(labels)
}

fn parse_row(
    row: &str,
    path: &Path,
    line: usize,
    problems: &mut Problems,
) -> Result<Option<[f32; 2]>, DataError> {
    let fields: Vec<&str> = row.split(',').collect();
    if fields.len() != 2 {
        problems.push(Problem::line(
            path,
            line,
            ProblemKind::BadLine,
            format!(
                "expected `valence,arousal`, found {} field(s): `{}`",
                fields.len(),
                row.trim()
            ),
        ))?;
        return Ok(None);
    }
    let mut va = [0.0f32; 2];
    for (slot, (field, name)) in va.iter_mut().zip(fields.iter().zip(["valence", "arousal"])) {
        match files::check_label(field, name) {
            Ok(v) => *slot = v,
            Err((kind, message)) => {
                problems.push(Problem::line(path, line, kind, message))?;
                return Ok(None);
            }
        }
    }
    Ok((!va.contains(&INVALID_LABEL)).then_some(va))
}

fn read_video(
    root: &Path,
    name: &str,
    annotation: &Path,
    problems: &mut Problems,
) -> Result<Video, DataError> {
    let labels = match files::read_text(annotation, problems)? {
        Some(text) => parse_annotation(&text, annotation, problems)?,
        None => Vec::new(),
    };
    let crops_dir = root.join("cropped_aligned").join(name);
    if !crops_dir.is_dir() {
        problems.push(Problem::file(
            &crops_dir,
            ProblemKind::MissingFile,
            "no face crop directory for this video: every frame counts as having no face",
        ))?;
    }
    let crops = files::numbered_images(&crops_dir, problems)?;
    let beyond: Vec<u64> = crops
        .keys()
        .copied()
        .filter(|&n| n == 0 || n as usize > labels.len())
        .collect();
    if let (Some(first), Some(last)) = (beyond.first(), beyond.last()) {
        problems.push(Problem::file(
            &crops_dir,
            ProblemKind::FrameCountMismatch,
            format!(
                "{} face image(s) outside the {} annotated frames (numbers {first}..={last})",
                beyond.len(),
                labels.len()
            ),
        ))?;
    }
    let landmark_file = root.join("landmarks").join(format!("{name}.csv"));
    let mut landmarks = if landmark_file.is_file() {
        match files::read_text(&landmark_file, problems)? {
            Some(text) => files::parse_landmark_table(&text, &landmark_file, problems)?,
            None => Default::default(),
        }
    } else {
        Default::default()
    };
    if let Some((&last, _)) = landmarks.last_key_value()
        && last > labels.len()
    {
        problems.push(Problem::file(
            &landmark_file,
            ProblemKind::FrameCountMismatch,
            format!(
                "landmarks for frame {last} but only {} annotated frames",
                labels.len()
            ),
        ))?;
    }
    let frames = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let number = i as u64 + 1;
            Frame {
                label,
                face: crops.get(&number).cloned().map(FaceSource::Crop),
                landmarks: landmarks.remove(&(i + 1)).map(Box::new),
            }
        })
        .collect();
    Ok(Video {
        name: name.to_owned(),
        frames,
    })
}
