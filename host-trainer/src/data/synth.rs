//! Writes a synthetic dataset ([`affect_shared::synth`]) so training and evaluation on synthetic
//! data run the real readers: in the Aff-Wild2 layout ([`SynthLayout::AffWild2`], the default),
//!
//! ```text
//! annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt
//! cropped_aligned/<video>/00001.jpg     (missing where no face was "detected")
//! landmarks/<video>.csv                 frame,x0,y0,…,x67,y67 in crop pixels
//! synth.json                            the generator's configuration and counts
//! ```
//!
//! or in the Aff-Wild layout ([`SynthLayout::AffWild`]), the only one with room for each
//! simulated annotator's own trace ([`SynthConfig::annotators`], noise model in
//! [`affect_shared::synth::AnnotatorNoise`]):
//!
//! ```text
//! annotations/{train,validation}/{valence,arousal}/<video>.txt         the annotators' mean
//! annotations/{train,validation}/annotators/<name>/{valence,arousal}/<video>.txt
//!                                      annotator <name> (`annotator-1`, …) alone
//! frames/{train,validation}/<video>/00001.jpg   the crop as the frame (missing: no face)
//! bboxs/{train,validation}/<video>/00001.pts    the face box: the crop at the default 20 % margin
//! landmarks/{train,validation}/<video>/00001.pts
//! synth.json
//! ```
//!
//! Annotation files hold one value per frame (`-5`: unannotated), 3 decimals; the mean files are
//! the per-frame mean of the annotators' files (rounded to 3 decimals), as Aff-Wild's are. The
//! readers take the mean by default and one annotator with `--annotation <name>`
//! ([`super::Annotation`]).
//!
//! Videos render in parallel (rayon), each from its own `(seed, index)` random stream, and every
//! file's bytes depend only on that stream: the same seed gives a byte-identical tree whatever
//! the thread count.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use affect_shared::preprocess::{FaceBox, Preprocess};
use affect_shared::synth::{SynthConfig, SyntheticVideo, annotator_name};
use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;
use serde::Serialize;

use super::files::{self, landmark_header, landmark_row};
use super::problems::DataError;

/// The directory layout the dataset is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthLayout {
    /// Aff-Wild2 / ABAW (`affwild2`): aligned crops, one `valence,arousal` file per video.
    #[default]
    AffWild2,
    /// Aff-Wild, 2017 (`affwild`): frames with boxes and `.pts` landmarks, per-dimension
    /// annotation files, and each simulated annotator's files beside the mean.
    AffWild,
}

impl std::str::FromStr for SynthLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "affwild2" => Ok(Self::AffWild2),
            "affwild" => Ok(Self::AffWild),
            _ => Err(format!("layout `{s}`: expected `affwild2` or `affwild`")),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthDatasetConfig {
    /// Directory layout; annotators (`render.annotators > 0`) need [`SynthLayout::AffWild`].
    pub layout: SynthLayout,
    /// Number of videos (people).
    pub videos: usize,
    /// Fraction of videos in `Validation_Set` (the last ones); at least one each when
    /// `videos >= 2` and the fraction is in (0, 1).
    pub val_fraction: f64,
    /// Random seed: the same seed gives byte-identical output.
    pub seed: u64,
    /// JPEG quality (1–100) of the crops.
    pub jpeg_quality: u8,
    /// Renderer settings (crop size, frames per video, nuisance rates).
    pub render: SynthConfig,
}

impl Default for SynthDatasetConfig {
    fn default() -> Self {
        Self {
            layout: SynthLayout::AffWild2,
            videos: 40,
            val_fraction: 0.2,
            seed: 0,
            jpeg_quality: 90,
            render: SynthConfig::default(),
        }
    }
}

/// Counts of what was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    /// Videos in `Train_Set`.
    pub train_videos: usize,
    /// Videos in `Validation_Set`.
    pub validation_videos: usize,
    /// Frames (annotation rows) in total.
    pub frames: usize,
    /// Frames with a face crop.
    pub faces: usize,
    /// Frames annotated `-5`.
    pub unlabelled: usize,
}

/// The name of synthetic video `index`: Aff-Wild2 style, encoding fps and size.
pub fn video_name(index: usize, size: u32) -> String {
    format!("synth{index:04}-30-{size}x{size}")
}

/// Renders and writes the dataset into `out` (created; must be empty or absent).
pub fn write_dataset(out: &Path, config: &SynthDatasetConfig) -> Result<SynthSummary, DataError> {
    if config.videos == 0 || config.render.frames == 0 || config.render.size < 16 {
        return Err(DataError::Config(
            "need at least one video, one frame and a crop size of 16 or more".into(),
        ));
    }
    if !(0.0..=1.0).contains(&config.val_fraction) {
        return Err(DataError::Config(format!(
            "validation fraction {} is outside [0, 1]",
            config.val_fraction
        )));
    }
    if !(1..=100).contains(&config.jpeg_quality) {
        return Err(DataError::Config(format!(
            "JPEG quality {} is outside 1..=100",
            config.jpeg_quality
        )));
    }
    if config.render.annotators > 0 && config.layout == SynthLayout::AffWild2 {
        return Err(DataError::Config(format!(
            "{} annotators need the Aff-Wild layout (`--layout affwild`): the Aff-Wild2 layout \
             has no per-annotator files",
            config.render.annotators
        )));
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(DataError::io(out))?
            .next()
            .is_some()
    {
        return Err(DataError::Config(format!(
            "{} exists and is not empty; choose a new directory",
            out.display()
        )));
    }
    let validation = validation_count(config.videos, config.val_fraction);
    let train = config.videos - validation;
    let summaries: Vec<SynthSummary> = (0..config.videos)
        .into_par_iter()
        .map(|index| {
            let in_train = index < train;
            match config.layout {
                SynthLayout::AffWild2 => {
                    let split = if in_train {
                        "Train_Set"
                    } else {
                        "Validation_Set"
                    };
                    let annotations = out.join("annotations").join("VA_Estimation_Challenge");
                    write_video(out, &annotations.join(split), index, config)
                }
                SynthLayout::AffWild => {
                    let split = if in_train { "train" } else { "validation" };
                    write_video_affwild(out, split, index, config)
                }
            }
        })
        .collect::<Result<_, _>>()?;
    let mut summary = SynthSummary {
        train_videos: train,
        validation_videos: validation,
        ..SynthSummary::default()
    };
    for s in summaries {
        summary.frames += s.frames;
        summary.faces += s.faces;
        summary.unlabelled += s.unlabelled;
    }
    let manifest = serde_json::json!({
        "generator": "affect-shared synth",
        "layout": config.layout,
        "seed": config.seed,
        "videos": config.videos,
        "frames_per_video": config.render.frames,
        "size": config.render.size,
        "val_fraction": config.val_fraction,
        "jpeg_quality": config.jpeg_quality,
        "render": {
            "expression_jitter": config.render.expression_jitter,
            "annotation_noise": config.render.annotation_noise,
            "annotators": config.render.annotators,
            "annotator_names": (0..config.render.annotators).map(annotator_name).collect::<Vec<_>>(),
            "annotator_noise": {
                "max_lag": config.render.annotator_noise.max_lag,
                "bias": config.render.annotator_noise.bias,
                "scale": config.render.annotator_noise.scale,
                "noise": config.render.annotator_noise.noise,
                "noise_frames": config.render.annotator_noise.noise_frames,
            },
            "blink_rate": config.render.blink_rate,
            "occlusion_rate": config.render.occlusion_rate,
            "blur_rate": config.render.blur_rate,
            "no_face_rate": config.render.no_face_rate,
            "invalid_label_rate": config.render.invalid_label_rate,
        },
        "summary": summary,
    });
    let text = serde_json::to_string_pretty(&manifest).expect("JSON values always serialise");
    files::write_text(&out.join("synth.json"), &(text + "\n"))?;
    Ok(summary)
}

/// Validation videos for `videos` in total: the rounded fraction, at least one on each side.
fn validation_count(videos: usize, fraction: f64) -> usize {
    let n = (videos as f64 * fraction).round() as usize;
    if videos >= 2 && fraction > 0.0 && fraction < 1.0 {
        n.clamp(1, videos - 1)
    } else {
        n.min(videos)
    }
}

fn write_video(
    root: &Path,
    annotation_dir: &Path,
    index: usize,
    config: &SynthDatasetConfig,
) -> Result<SynthSummary, DataError> {
    let name = video_name(index, config.render.size);
    let crops: PathBuf = root.join("cropped_aligned").join(&name);
    std::fs::create_dir_all(&crops).map_err(DataError::io(&crops))?;
    let mut annotation = String::from("valence,arousal\n");
    let mut landmarks = landmark_header() + "\n";
    let mut summary = SynthSummary::default();
    let mut jpeg = Vec::new();
    for frame in SyntheticVideo::new(&config.render, config.seed, index as u64) {
        let number = frame.index + 1;
        summary.frames += 1;
        match frame.annotation {
            Some([v, a]) => annotation.push_str(&format!("{v:.3},{a:.3}\n")),
            None => {
                summary.unlabelled += 1;
                annotation.push_str("-5,-5\n");
            }
        }
        if let Some((image, points)) = frame.face {
            summary.faces += 1;
            let path = crops.join(format!("{number:05}.jpg"));
            write_jpeg(&path, &image, config.jpeg_quality, &mut jpeg)?;
            landmarks.push_str(&landmark_row(number, &points));
            landmarks.push('\n');
        }
    }
    files::write_text(&annotation_dir.join(format!("{name}.txt")), &annotation)?;
    files::write_text(
        &root.join("landmarks").join(format!("{name}.csv")),
        &landmarks,
    )?;
    Ok(summary)
}

/// Encodes `image` as a JPEG of `quality` into `buffer` (reused between frames) and writes it
/// to `path`.
fn write_jpeg(
    path: &Path,
    image: &image::RgbImage,
    quality: u8,
    buffer: &mut Vec<u8>,
) -> Result<(), DataError> {
    buffer.clear();
    JpegEncoder::new_with_quality(&mut Cursor::new(&mut *buffer), quality)
        .encode_image(image)
        .map_err(|source| DataError::Image {
            path: path.to_owned(),
            source,
        })?;
    std::fs::write(path, &buffer).map_err(DataError::io(path))
}

/// One value per line (`-5` for an unannotated frame), 3 decimals: an Aff-Wild annotation file.
fn push_value(text: &mut String, value: Option<f32>) {
    match value {
        Some(v) => text.push_str(&format!("{v:.3}\n")),
        None => text.push_str("-5\n"),
    }
}

/// An iBUG `.pts` file of `points` (shortest exact decimals: they read back bit for bit).
fn pts(points: &[[f32; 2]]) -> String {
    let mut text = format!("version: 1\nn_points: {}\n{{\n", points.len());
    for [x, y] in points {
        text.push_str(&format!("{x} {y}\n"));
    }
    text + "}\n"
}

/// Writes video `index` into `split` of the Aff-Wild layout: the mean's and every annotator's
/// annotation files, the crops as frames, their boxes and landmarks.
fn write_video_affwild(
    root: &Path,
    split: &str,
    index: usize,
    config: &SynthDatasetConfig,
) -> Result<SynthSummary, DataError> {
    let name = video_name(index, config.render.size);
    let frames: PathBuf = root.join("frames").join(split).join(&name);
    let boxes = root.join("bboxs").join(split).join(&name);
    let landmarks = root.join("landmarks").join(split).join(&name);
    for dir in [&frames, &boxes, &landmarks] {
        std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    }
    let annotators = config.render.annotators;
    // [mean, annotator 1, …] × [valence, arousal].
    let mut texts = vec![[String::new(), String::new()]; annotators + 1];
    let mut summary = SynthSummary::default();
    let mut jpeg = Vec::new();
    // The box a default preprocess margin enlarges back to the whole crop.
    let margin = Preprocess::imagenet(config.render.size).margin;
    for frame in SyntheticVideo::new(&config.render, config.seed, index as u64) {
        let number = frame.index + 1;
        summary.frames += 1;
        if frame.annotation.is_none() {
            summary.unlabelled += 1;
        }
        for d in 0..2 {
            push_value(&mut texts[0][d], frame.annotation.map(|a| a[d]));
            for k in 0..annotators {
                push_value(&mut texts[k + 1][d], frame.annotators.get(k).map(|a| a[d]));
            }
        }
        if let Some((image, points)) = frame.face {
            summary.faces += 1;
            let path = frames.join(format!("{number:05}.jpg"));
            write_jpeg(&path, &image, config.jpeg_quality, &mut jpeg)?;
            let (w, h) = image.dimensions();
            let b = FaceBox::whole_crop(w, h, margin);
            files::write_text(
                &boxes.join(format!("{number:05}.pts")),
                &pts(&[
                    [b.x, b.y],
                    [b.x + b.w, b.y],
                    [b.x + b.w, b.y + b.h],
                    [b.x, b.y + b.h],
                ]),
            )?;
            files::write_text(&landmarks.join(format!("{number:05}.pts")), &pts(&points.0))?;
        }
    }
    let annotations = root.join("annotations").join(split);
    for (k, [valence, arousal]) in texts.iter().enumerate() {
        let dir = match k {
            0 => annotations.clone(),
            _ => annotations.join("annotators").join(annotator_name(k - 1)),
        };
        files::write_text(&dir.join("valence").join(format!("{name}.txt")), valence)?;
        files::write_text(&dir.join("arousal").join(format!("{name}.txt")), arousal)?;
    }
    Ok(summary)
}
