//! `affect-train data inspect`: what a dataset holds and what is wrong with it — videos, frames,
//! labels, faces, landmarks, problems by file and line, the label distribution as text and as a
//! 2-D valence–arousal histogram PNG (like Fig. 3 of Kollias et al. 2017).

use std::fmt;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use rayon::prelude::*;
use serde::Serialize;

use super::dataset::{Annotation, Dataset, Format, ReadOptions};
use super::problems::{DataError, Problem, ProblemKind, Problems};
use super::sampling::Quadrant;

/// What to check.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Fail once more than this many problems are found in total (`None`: never).
    pub max_errors: Option<usize>,
    /// Decode every face image (finds truncated or corrupt files; costs a full pass).
    pub check_images: bool,
    /// Histogram bins per axis.
    pub bins: usize,
    /// Splits to inspect (empty: all).
    pub splits: Vec<String>,
    /// The annotation read as labels (default: the annotators' mean).
    pub annotation: Annotation,
}

impl Default for InspectOptions {
    fn default() -> Self {
        Self {
            max_errors: None,
            check_images: true,
            bins: 20,
            splits: Vec::new(),
            annotation: Annotation::Mean,
        }
    }
}

/// A 2-D histogram of labels over [-1, 1]², `bins` × `bins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Histogram2d {
    /// Bins per axis.
    pub bins: usize,
    /// Counts, row-major: `counts[arousal_bin * bins + valence_bin]`, bin 0 at -1.
    pub counts: Vec<u64>,
}

impl Histogram2d {
    /// An empty histogram.
    pub fn new(bins: usize) -> Self {
        let bins = bins.max(1);
        Self {
            bins,
            counts: vec![0; bins * bins],
        }
    }

    fn bin(&self, value: f32) -> usize {
        (((value + 1.0) / 2.0 * self.bins as f32) as usize).min(self.bins - 1)
    }

    /// Counts one label.
    pub fn add(&mut self, label: [f32; 2]) {
        let (v, a) = (self.bin(label[0]), self.bin(label[1]));
        self.counts[a * self.bins + v] += 1;
    }

    /// Adds another histogram with the same bins.
    pub fn merge(&mut self, other: &Histogram2d) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Marginal counts over valence (`axis` 0) or arousal (1), bin 0 at -1.
    pub fn marginal(&self, axis: usize) -> Vec<u64> {
        let mut out = vec![0; self.bins];
        for a in 0..self.bins {
            for v in 0..self.bins {
                out[if axis == 0 { v } else { a }] += self.counts[a * self.bins + v];
            }
        }
        out
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The report for one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    /// Split name.
    pub split: String,
    /// Videos.
    pub videos: usize,
    /// Frames (annotation rows).
    pub frames: usize,
    /// Frames with a valid label.
    pub labelled: usize,
    /// Frames with a face image.
    pub with_face: usize,
    /// Frames without a face image.
    pub without_face: usize,
    /// Frames with landmarks.
    pub with_landmarks: usize,
    /// Frames with a face and a label (what training uses).
    pub usable: usize,
    /// Labelled frames per quadrant, Q1..Q4 (see [`Quadrant`]).
    pub quadrants: [usize; 4],
    /// Label histogram.
    pub histogram: Histogram2d,
    /// Problems found, by file and line.
    pub problems: Vec<Problem>,
}

/// The whole inspection.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Dataset root.
    pub root: PathBuf,
    /// Layout.
    pub format: Format,
    /// The annotation the labels were read from.
    pub annotation: Annotation,
    /// One report per split.
    pub splits: Vec<SplitReport>,
}

impl Inspection {
    /// Problems over all splits.
    pub fn problem_count(&self) -> usize {
        self.splits.iter().map(|s| s.problems.len()).sum()
    }

    /// The histogram over all splits.
    pub fn histogram(&self) -> Histogram2d {
        let bins = self.splits.first().map_or(20, |s| s.histogram.bins);
        let mut out = Histogram2d::new(bins);
        for split in &self.splits {
            out.merge(&split.histogram);
        }
        out
    }
}

/// Inspects the dataset at `root`.
pub fn inspect(root: &Path, options: &InspectOptions) -> Result<Inspection, DataError> {
    let format = Format::detect(root)?;
    let splits = if options.splits.is_empty() {
        Dataset::splits(root)?
    } else {
        options.splits.clone()
    };
    let mut reports = Vec::new();
    let mut total_problems = 0;
    for split in splits {
        let remaining = options
            .max_errors
            .map(|limit| limit.saturating_sub(total_problems));
        let dataset = Dataset::open(
            root,
            &split,
            &ReadOptions {
                max_errors: remaining,
                annotation: options.annotation.clone(),
            },
        )?;
        let mut problems = Problems::new(remaining);
        for problem in &dataset.problems {
            problems.push(problem.clone())?;
        }
        if options.check_images {
            for problem in check_images(&dataset) {
                problems.push(problem)?;
            }
        }
        let report = summarise(&dataset, problems.into_vec(), options.bins);
        total_problems += report.problems.len();
        reports.push(report);
    }
    Ok(Inspection {
        root: root.to_owned(),
        format,
        annotation: options.annotation.clone(),
        splits: reports,
    })
}

/// Decodes every face image in parallel; each one that fails is a problem.
fn check_images(dataset: &Dataset) -> Vec<Problem> {
    let paths: Vec<&Path> = dataset
        .frames()
        .filter_map(|f| f.face.as_ref().map(|face| face.path()))
        .collect();
    let mut problems: Vec<Problem> = paths
        .par_iter()
        .filter_map(|path| match image::open(path) {
            Ok(_) => None,
            Err(err) => Some(Problem::file(
                path,
                ProblemKind::BadImage,
                format!("cannot decode: {err}"),
            )),
        })
        .collect();
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    problems
}

fn summarise(dataset: &Dataset, problems: Vec<Problem>, bins: usize) -> SplitReport {
    let mut histogram = Histogram2d::new(bins);
    let mut quadrants = [0; 4];
    for label in dataset.frames().filter_map(|f| f.label) {
        histogram.add(label);
        quadrants[Quadrant::of(label) as usize] += 1;
    }
    let frames = dataset.frame_count();
    let with_face = dataset.face_count();
    SplitReport {
        split: dataset.split.clone(),
        videos: dataset.videos.len(),
        frames,
        labelled: dataset.labelled_count(),
        with_face,
        without_face: frames - with_face,
        with_landmarks: dataset.frames().filter(|f| f.landmarks.is_some()).count(),
        usable: dataset.usable_count(),
        quadrants,
        histogram,
        problems,
    }
}

/// Problems listed per split in the text report; the rest are counted.
const LISTED_PROBLEMS: usize = 20;

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}, annotation: {})",
            self.root.display(),
            self.format.name(),
            self.annotation
        )?;
        for s in &self.splits {
            let pct = |n: usize| 100.0 * n as f64 / s.frames.max(1) as f64;
            writeln!(f, "\n[{}]", s.split)?;
            writeln!(f, "  videos              {:>9}", s.videos)?;
            writeln!(f, "  frames              {:>9}", s.frames)?;
            writeln!(
                f,
                "  valid labels        {:>9}  ({:.1}%)",
                s.labelled,
                pct(s.labelled)
            )?;
            writeln!(
                f,
                "  frames with face    {:>9}  ({:.1}%)",
                s.with_face,
                pct(s.with_face)
            )?;
            writeln!(f, "  frames without face {:>9}", s.without_face)?;
            writeln!(f, "  with landmarks      {:>9}", s.with_landmarks)?;
            writeln!(
                f,
                "  usable (face+label) {:>9}  ({:.1}%)",
                s.usable,
                pct(s.usable)
            )?;
            let labelled = s.labelled.max(1) as f64;
            write!(f, "  quadrants          ")?;
            for q in Quadrant::ALL {
                let n = s.quadrants[q as usize];
                write!(f, " {} {n} ({:.1}%)", q.name(), 100.0 * n as f64 / labelled)?;
            }
            writeln!(f)?;
            write_marginal(f, "valence", &s.histogram.marginal(0))?;
            write_marginal(f, "arousal", &s.histogram.marginal(1))?;
            write_grid(f, &s.histogram)?;
            writeln!(f, "  problems            {:>9}", s.problems.len())?;
            for kind in ProblemKind::ALL {
                let n = s.problems.iter().filter(|p| p.kind == kind).count();
                if n > 0 {
                    writeln!(f, "    {:<20} {n}", kind.name())?;
                }
            }
            for p in s.problems.iter().take(LISTED_PROBLEMS) {
                writeln!(f, "    {p}")?;
            }
            if s.problems.len() > LISTED_PROBLEMS {
                writeln!(f, "    … and {} more", s.problems.len() - LISTED_PROBLEMS)?;
            }
        }
        Ok(())
    }
}

fn write_marginal(f: &mut fmt::Formatter<'_>, name: &str, counts: &[u64]) -> fmt::Result {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    writeln!(f, "  {name} histogram (bins from -1 to 1):")?;
    let width = 2.0 / counts.len() as f64;
    for (i, &n) in counts.iter().enumerate() {
        let lo = -1.0 + width * i as f64;
        let bar = "#".repeat((40 * n).div_ceil(max) as usize);
        writeln!(f, "    [{lo:+.2},{:+.2}) {n:>8} {bar}", lo + width)?;
    }
    Ok(())
}

fn write_grid(f: &mut fmt::Formatter<'_>, h: &Histogram2d) -> fmt::Result {
    const SHADES: &[u8] = b" .:-=+*#%@";
    let max = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    writeln!(f, "  valence (→) × arousal (↑), log density:")?;
    for a in (0..h.bins).rev() {
        let row: String = (0..h.bins)
            .map(|v| {
                let n = h.counts[a * h.bins + v];
                if n == 0 {
                    ' '
                } else {
                    let level = ((n as f64).ln_1p() / max.ln_1p() * 9.0).round() as usize;
                    SHADES[level.clamp(1, 9)] as char
                }
            })
            .collect();
        writeln!(f, "    |{row}|")?;
    }
    Ok(())
}

/// Colour of a normalised density in [0, 1] (dark blue → teal → yellow, viridis-like).
fn density_colour(t: f64) -> RGBColor {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x as usize).min(STOPS.len() - 2);
    let w = x - i as f64;
    let c: [u8; 3] =
        core::array::from_fn(|k| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * w).round() as u8);
    RGBColor(c[0], c[1], c[2])
}

/// Draws the histogram as a PNG heat map (log density), valence across, arousal up.
pub fn plot_histogram(histogram: &Histogram2d, title: &str, path: &Path) -> Result<(), DataError> {
    let plot_error = |err: &dyn fmt::Display| DataError::Plot {
        path: path.to_owned(),
        message: err.to_string(),
    };
    let root = BitMapBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(-1.0f64..1.0, -1.0f64..1.0)
        .map_err(|e| plot_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("valence")
        .y_desc("arousal")
        .disable_mesh()
        .draw()
        .map_err(|e| plot_error(&e))?;
    let bins = histogram.bins;
    let width = 2.0 / bins as f64;
    let max = histogram.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let cells = (0..bins * bins).filter_map(|i| {
        let n = histogram.counts[i];
        (n > 0).then(|| {
            let (a, v) = (i / bins, i % bins);
            let (x0, y0) = (-1.0 + width * v as f64, -1.0 + width * a as f64);
            let t = (n as f64).ln_1p() / max.ln_1p();
            Rectangle::new(
                [(x0, y0), (x0 + width, y0 + width)],
                density_colour(t).filled(),
            )
        })
    });
    chart.draw_series(cells).map_err(|e| plot_error(&e))?;
    // Quadrant axes.
    for line in [[(-1.0, 0.0), (1.0, 0.0)], [(0.0, -1.0), (0.0, 1.0)]] {
        chart
            .draw_series(LineSeries::new(line, BLACK.stroke_width(1)))
            .map_err(|e| plot_error(&e))?;
    }
    root.present().map_err(|e| plot_error(&e))?;
    Ok(())
}
