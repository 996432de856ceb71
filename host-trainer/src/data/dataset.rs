//! The in-memory index of a dataset split: videos, their frames, labels, face images and
//! landmarks. Pixels stay on disk; the [`super::loader`] decodes them.

use std::path::{Path, PathBuf};

use affect_shared::preprocess::{FaceBox, Landmarks68};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::problems::{DataError, Problem};
use super::{affwild, affwild2};

/// The on-disk layout of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// Aff-Wild (2017): per-dimension annotation files, frames with boxes and landmarks, and
    /// optionally each annotator's own files (`affect-train synth --layout affwild`).
    AffWild,
    /// Aff-Wild2 / ABAW (also the synthetic generator's default output): `valence,arousal` files
    /// and aligned face crops.
    AffWild2,
}

impl Format {
    /// Recognises the layout of `root`.
    pub fn detect(root: &Path) -> Result<Self, DataError> {
        if affwild2::annotation_root(root).is_some() {
            Ok(Self::AffWild2)
        } else if root.join("annotations").is_dir() {
            Ok(Self::AffWild)
        } else {
            Err(DataError::NotADataset {
                path: root.to_owned(),
                reason: "no `annotations/` directory (expected Aff-Wild or Aff-Wild2 layout)"
                    .into(),
            })
        }
    }

    /// Human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AffWild => "Aff-Wild",
            Self::AffWild2 => "Aff-Wild2",
        }
    }
}

/// Where a frame's face pixels come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FaceSource {
    /// An aligned face crop (Aff-Wild2 `cropped_aligned/`): the whole image is the face plus the
    /// crop margin, and landmarks (if any) are in its pixels.
    Crop(PathBuf),
    /// A full video frame and the face's box in it (Aff-Wild).
    InFrame {
        /// The frame image.
        image: PathBuf,
        /// The face box in pixels of that image.
        face_box: FaceBox,
    },
}

impl FaceSource {
    /// The image file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Crop(path) | Self::InFrame { image: path, .. } => path,
        }
    }
}

/// One video frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    /// `[valence, arousal]`, or `None` when unannotated (`-5`) or unreadable.
    pub label: Option<[f32; 2]>,
    /// The face, or `None` when no face was detected in this frame.
    pub face: Option<FaceSource>,
    /// 68 landmarks in pixels of the face image, when known.
    pub landmarks: Option<Box<Landmarks68>>,
}

impl Frame {
    /// Whether the frame can train or score: it has a face and a label.
    pub fn usable(&self) -> bool {
        self.label.is_some() && self.face.is_some()
    }
}

/// One video: its name and frames (index 0 = the annotation file's first frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    /// Video name (annotation file stem).
    pub name: String,
    /// Frames in order.
    pub frames: Vec<Frame>,
}

/// Which annotation a reader takes as the frames' labels (`--annotation mean|NAME`,
/// `data.annotation`).
///
/// Aff-Wild's annotation files hold the per-frame mean of its annotators; the Aff-Wild layout
/// may also carry each annotator's own trace under `annotations/<split>/annotators/<name>/`
/// (the synthetic generator writes them, see [`super::synth`]). The Aff-Wild2 layout has no
/// per-annotator files, so only [`Annotation::Mean`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Annotation {
    /// The mean of the annotators: the release's annotation files.
    #[default]
    Mean,
    /// One annotator's own trace, by name (e.g. `annotator-1`).
    Annotator(String),
}

/// An annotation choice that is neither `mean` nor a plain annotator name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation `{0}`: expected `mean` or an annotator name (letters, digits, `-`, `_`, `.`; \
     e.g. `annotator-1`)"
)]
pub struct BadAnnotation(pub String);

impl std::str::FromStr for Annotation {
    type Err = BadAnnotation;

    fn from_str(s: &str) -> Result<Self, BadAnnotation> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        match s {
            "mean" => Ok(Self::Mean),
            _ if !s.is_empty() && s != "." && s != ".." && s.chars().all(plain) => {
                Ok(Self::Annotator(s.to_owned()))
            }
            _ => Err(BadAnnotation(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Annotation {
    type Error = BadAnnotation;

    fn try_from(s: String) -> Result<Self, BadAnnotation> {
        s.parse()
    }
}

impl From<Annotation> for String {
    fn from(a: Annotation) -> String {
        a.to_string()
    }
}

impl std::fmt::Display for Annotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mean => f.write_str("mean"),
            Self::Annotator(name) => f.write_str(name),
        }
    }
}

/// Options for reading a dataset.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Fail once more than this many problems are found (`None`: never fail, report them all).
    pub max_errors: Option<usize>,
    /// Which annotation becomes the labels (default: the mean of the annotators).
    pub annotation: Annotation,
}

/// One split of a dataset, indexed: the type the trainer, the evaluator and the loader share.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The dataset's root directory.
    pub root: PathBuf,
    /// Its layout.
    pub format: Format,
    /// The split's directory name (`Train_Set`, `Validation_Set`, `train`, …).
    pub split: String,
    /// Videos, sorted by name.
    pub videos: Vec<Video>,
    /// Defects found while reading (each frame concerned was skipped or left unlabelled).
    pub problems: Vec<Problem>,
}

impl Dataset {
    /// Reads split `split` of the dataset at `root`, detecting its layout. Split names may be
    /// given in either layout's spelling (`train` / `Train_Set`, `validation` / `Validation_Set`).
    pub fn open(root: &Path, split: &str, options: &ReadOptions) -> Result<Self, DataError> {
        match Format::detect(root)? {
            Format::AffWild2 => affwild2::read(root, split, options),
            Format::AffWild => affwild::read(root, split, options),
        }
    }

    /// The splits present at `root`, in the layout's own spelling.
    pub fn splits(root: &Path) -> Result<Vec<String>, DataError> {
        match Format::detect(root)? {
            Format::AffWild2 => affwild2::splits(root),
            Format::AffWild => affwild::splits(root),
        }
    }

    /// Total number of frames.
    pub fn frame_count(&self) -> usize {
        self.videos.iter().map(|v| v.frames.len()).sum()
    }

    /// Frames with a valid label.
    pub fn labelled_count(&self) -> usize {
        self.frames().filter(|f| f.label.is_some()).count()
    }

    /// Frames with a face image.
    pub fn face_count(&self) -> usize {
        self.frames().filter(|f| f.face.is_some()).count()
    }

    /// Frames with both a face and a label.
    pub fn usable_count(&self) -> usize {
        self.frames().filter(|f| f.usable()).count()
    }

    /// Every frame of every video, in order.
    pub fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.videos.iter().flat_map(|v| v.frames.iter())
    }

    /// A SHA-256 over video names, frame counts, labels, face files and boxes, and landmarks:
    /// identifies the training data in run configs and exported models.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.split.as_bytes());
        for video in &self.videos {
            hash.update(video.name.as_bytes());
            hash.update((video.frames.len() as u64).to_le_bytes());
            for frame in &video.frames {
                match frame.label {
                    Some([v, a]) => {
                        hash.update([1]);
                        hash.update(v.to_le_bytes());
                        hash.update(a.to_le_bytes());
                    }
                    None => hash.update([0]),
                }
                match &frame.face {
                    Some(face) => {
                        hash.update([1]);
                        let relative = face.path().strip_prefix(&self.root).unwrap_or(face.path());
                        hash.update(relative.to_string_lossy().as_bytes());
                        if let FaceSource::InFrame { face_box, .. } = face {
                            for v in [face_box.x, face_box.y, face_box.w, face_box.h] {
                                hash.update(v.to_le_bytes());
                            }
                        }
                    }
                    None => hash.update([0]),
                }
                if let Some(lm) = &frame.landmarks {
                    for v in lm.0.iter().flatten() {
                        hash.update(v.to_le_bytes());
                    }
                }
            }
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}
