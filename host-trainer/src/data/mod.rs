//! Datasets (Aff-Wild, Aff-Wild2, synthetic), balanced sampling and the parallel loader that
//! turns them into [`Batch`]es of preprocessed faces, landmarks and labels.
//!
//! * [`Dataset`] — one split indexed in memory (videos → frames → label, face file, landmarks),
//!   read from the Aff-Wild ([`affwild`]) or Aff-Wild2 ([`affwild2`]) layout; defects become
//!   [`Problem`]s with file and line instead of failures, up to a limit.
//! * [`synth`] — writes the synthetic dataset in the Aff-Wild2 layout, or in the Aff-Wild layout
//!   with each simulated annotator's own trace beside the mean.
//! * [`sampling`] — the paper's quadrant oversampling, for frames and for sequences.
//! * [`loader`] — parallel decode + preprocess + prefetch into [`Batch`]es, deterministic by seed.
//! * [`inspect`] — dataset statistics, problems and the label histogram (text and PNG).

pub mod affwild;
pub mod affwild2;
pub mod dataset;
pub mod files;
pub mod inspect;
pub mod loader;
pub mod problems;
pub mod sampling;
pub mod synth;

pub use dataset::{Annotation, Dataset, FaceSource, Format, Frame, ReadOptions, Video};
pub use loader::{Clip, Epoch, Loader, LoaderConfig};
pub use problems::{DataError, Problem, ProblemKind, Problems};

/// A batch of `sequences` clips of `steps` consecutive frames each, preprocessed with the run's
/// [`affect_shared::preprocess::Preprocess`]. CNN training uses `steps == 1` (a batch of frames);
/// CNN-RNN training uses whole sequences. All tensors are row-major `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Number of sequences (B).
    pub sequences: usize,
    /// Frames per sequence (T).
    pub steps: usize,
    /// Crop side length (S).
    pub size: usize,
    /// Face pixels, `[B, T, 3, S, S]`, normalised as the preprocess config says.
    pub faces: Vec<f32>,
    /// Landmarks relative to the crop, `[B, T, 136]`; zeros where there is no face.
    pub landmarks: Vec<f32>,
    /// Labels (valence, arousal), `[B, T, 2]`; zeros where invalid.
    pub labels: Vec<f32>,
    /// `[B, T]`: 1 where the frame has a face and a valid label, else 0 (loss and metrics skip it).
    pub mask: Vec<f32>,
    /// `[B, T]`: 1 where the frame has a usable face, whatever its label, else 0. The recurrent
    /// state advances only where this is 1 ([`affect_shared::contract`]).
    pub present: Vec<f32>,
    /// Video name of each sequence, `[B]`.
    pub videos: Vec<String>,
    /// 0-based index of each sequence's first frame in its video, `[B]`.
    pub first_frames: Vec<u32>,
}
