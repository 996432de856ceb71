//! What can be wrong with a dataset, and the errors of the data layer.
//!
//! Bad data never crashes a reader: each defect becomes a [`Problem`] naming the file (and line),
//! the frame is skipped or masked, and reading goes on — until more than `max_errors` problems
//! have been seen, which turns into [`DataError::TooManyProblems`].

use std::fmt;
use std::path::{Path, PathBuf};

use affect_shared::preprocess::PreprocessError;
use serde::Serialize;

/// The kind of a dataset defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A file or directory could not be read.
    Unreadable,
    /// An annotation file's header is not `valence,arousal`.
    BadHeader,
    /// A line does not have the expected fields (e.g. a truncated last line).
    BadLine,
    /// A value is NaN or infinite.
    NotFinite,
    /// A label outside [-1, 1] (other than the `-5` marker).
    OutOfRange,
    /// Files of one video disagree on the number of frames.
    FrameCountMismatch,
    /// A file the layout requires is missing.
    MissingFile,
    /// A face image cannot be decoded.
    BadImage,
    /// A landmark or bounding-box file is malformed.
    BadLandmarks,
}

impl ProblemKind {
    /// Every kind, in report order.
    pub const ALL: [ProblemKind; 9] = [
        Self::Unreadable,
        Self::BadHeader,
        Self::BadLine,
        Self::NotFinite,
        Self::OutOfRange,
        Self::FrameCountMismatch,
        Self::MissingFile,
        Self::BadImage,
        Self::BadLandmarks,
    ];

    /// Short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::BadHeader => "bad header",
            Self::BadLine => "bad line",
            Self::NotFinite => "not finite",
            Self::OutOfRange => "out of range",
            Self::FrameCountMismatch => "frame count mismatch",
            Self::MissingFile => "missing file",
            Self::BadImage => "bad image",
            Self::BadLandmarks => "bad landmarks",
        }
    }
}

/// One defect in a dataset: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// 1-based line number, when the defect is on one line.
    pub line: Option<usize>,
    /// What kind of defect.
    pub kind: ProblemKind,
    /// Human-readable description.
    pub message: String,
}

impl Problem {
    /// A problem with a whole file.
    pub fn file(path: &Path, kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            kind,
            message: message.into(),
        }
    }

    /// A problem on one line of a file.
    pub fn line(path: &Path, line: usize, kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: Some(line),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Collects problems up to a limit.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    limit: Option<usize>,
    items: Vec<Problem>,
}

impl Problems {
    /// A collector that fails once more than `limit` problems are pushed (`None`: never).
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            items: Vec::new(),
        }
    }

    /// Records a problem; fails with [`DataError::TooManyProblems`] when over the limit.
    pub fn push(&mut self, problem: Problem) -> Result<(), DataError> {
        tracing::debug!("{problem}");
        self.items.push(problem);
        match self.limit {
            Some(limit) if self.items.len() > limit => Err(DataError::TooManyProblems {
                limit,
                first: Box::new(self.items[0].clone()),
                last: Box::new(self.items[self.items.len() - 1].clone()),
            }),
            _ => Ok(()),
        }
    }

    /// Number of problems recorded.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The recorded problems, in the order found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.items
    }
}

/// Errors of the data layer (readers, writer, loader).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory is not a dataset this crate reads.
    #[error("{}: {reason}", path.display())]
    NotADataset {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// More problems than the configured limit (`--max-errors`).
    #[error("more than {limit} data problems (first: {first}; last: {last})")]
    TooManyProblems {
        /// The limit.
        limit: usize,
        /// The first problem found.
        first: Box<Problem>,
        /// The problem that crossed the limit.
        last: Box<Problem>,
    },
    /// An image cannot be decoded or encoded.
    #[error("{}: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// Preprocessing a face failed.
    #[error("{}: {source}", path.display())]
    Preprocess {
        /// The face image.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: PreprocessError,
    },
    /// A plot cannot be drawn.
    #[error("{}: {message}", path.display())]
    Plot {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A configuration value is unusable.
    #[error("invalid data configuration: {0}")]
    Config(String),
    /// The annotation choice names an annotator the dataset has no annotations of.
    #[error("{}: no annotations of annotator `{name}` ({reason})", dir.display())]
    UnknownAnnotator {
        /// Where that annotator's files would be.
        dir: PathBuf,
        /// The annotator asked for.
        name: String,
        /// Which annotators the split has, or why the layout has none.
        reason: String,
    },
}

impl DataError {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
        move |source| DataError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
