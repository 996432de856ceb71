//! `affect-train export`: a trained run → streaming ONNX (fp32, optionally int8 QDQ) with
//! embedded preprocessing, proven equal to the trained network on a held-out clip.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use affect_shared::preprocess::Preprocess;
use affect_trainer::data::Batch;
use affect_trainer::data::dataset::{Dataset, ReadOptions};
use affect_trainer::data::loader::{Clip, Loader, LoaderConfig};
use affect_trainer::export::calibrate::RangeMethod;
use affect_trainer::export::pipeline::{
    ExportError, ExportOptions, Provenance, export, git_revision,
};
use affect_trainer::export::proof::Bounds;
use affect_trainer::train::source::{SourceError, VideoSource};
use affect_trainer::train::{BestScore, RunDir, load_run_model};
use anyhow::Context;
use tch::Device;

use super::bad_input;

/// One split of a dataset on disk as whole videos, preprocessed like training by the data
/// loader (one clip at a time, on the calling thread).
struct DiskVideos {
    dataset: Arc<Dataset>,
    preprocess: Preprocess,
}

impl DiskVideos {
    fn open(root: &Path, split: &str, preprocess: &Preprocess) -> anyhow::Result<Self> {
        let dataset = Dataset::open(root, split, &ReadOptions::default())
            .with_context(|| format!("dataset {} split {split}", root.display()))?;
        Ok(Self {
            dataset: Arc::new(dataset),
            preprocess: preprocess.clone(),
        })
    }

    fn index(&self, video: &str) -> Result<usize, SourceError> {
        self.dataset
            .videos
            .iter()
            .position(|v| v.name == video)
            .ok_or_else(|| format!("no video named {video} in split {}", self.dataset.split).into())
    }
}

impl VideoSource for DiskVideos {
    fn videos(&self) -> Vec<String> {
        self.dataset.videos.iter().map(|v| v.name.clone()).collect()
    }

    fn frames(&self, video: &str) -> Result<usize, SourceError> {
        Ok(self.dataset.videos[self.index(video)?].frames.len())
    }

    fn clip(&self, video: &str, first: usize, count: usize) -> Result<Batch, SourceError> {
        let index = self.index(video)?;
        let config = LoaderConfig {
            batch_size: 1,
            steps: count,
            stride: count,
            shuffle: false,
            workers: 1,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(Arc::clone(&self.dataset), self.preprocess.clone(), config)?;
        Ok(loader.load(&[Clip {
            video: index,
            first,
        }]))
    }
}

/// Flags of `affect-train export`.
#[derive(clap::Args)]
pub struct Args {
    /// Training run directory (its `config.toml` and best or latest weights).
    #[arg(long)]
    run: PathBuf,
    /// fp32 model to write; `<stem>.int8.onnx` and `<stem>.export.json` go beside it.
    #[arg(long)]
    out: PathBuf,
    /// Dataset the run trained on (calibration frames and the held-out proof clip); default:
    /// the one the run recorded.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also write the int8 QDQ model.
    #[arg(long)]
    int8: bool,
    /// Training frames to calibrate int8 activation ranges on.
    #[arg(long, default_value_t = 500, requires = "int8")]
    calibration: usize,
    /// Calibration range: central percentile of activations (e.g. 99.99); min/max when absent.
    #[arg(long, requires = "int8")]
    percentile: Option<f64>,
    /// Frames of the held-out clip the proof runs.
    #[arg(long, default_value_t = 200)]
    proof_frames: usize,
}

/// Writes the models and `model.export.json`; a broken bound fails with exit code 1 after the
/// report is written, an unusable run, dataset or network with exit code 2.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.calibration == 0 || args.proof_frames == 0 {
        return Err(bad_input(anyhow::anyhow!(
            "--calibration and --proof-frames must be positive"
        )));
    }
    if let Some(p) = args.percentile
        && !(p > 0.0 && p <= 100.0)
    {
        return Err(bad_input(anyhow::anyhow!(
            "--percentile {p} must be in (0, 100]"
        )));
    }
    let run = RunDir::new(&args.run);
    let (config, model) = load_run_model(&run, Device::Cpu).map_err(|e| {
        bad_input(anyhow::Error::new(e).context(format!("run {}", args.run.display())))
    })?;
    let preprocess = config.preprocess();
    let data = config
        .data
        .dataset_dir(args.data.as_deref())
        .map_err(bad_input)?;
    let training =
        DiskVideos::open(&data, &config.data.train_split, &preprocess).map_err(bad_input)?;
    let held_out_split = if config.data.validation_split.is_empty() {
        &config.data.train_split
    } else {
        &config.data.validation_split
    };
    let held_out = DiskVideos::open(&data, held_out_split, &preprocess).map_err(bad_input)?;
    let validation = run
        .best()
        .current()
        .and_then(|dir| std::fs::read_to_string(dir.join("score.json")).ok())
        .and_then(|text| serde_json::from_str::<BestScore>(&text).ok())
        .map(|best| best.validation);
    let provenance = Provenance {
        dataset_fingerprint: training.dataset.fingerprint(),
        validation,
        git_revision: git_revision(),
    };
    let options = ExportOptions {
        out: args.out.clone(),
        int8: args.int8,
        calibration_frames: args.calibration,
        range: args
            .percentile
            .map_or(RangeMethod::MinMax, RangeMethod::Percentile),
        proof_frames: args.proof_frames,
        bounds: Bounds::default(),
    };
    let (paths, report) = export(&config, &model, &provenance, &training, &held_out, &options)
        .map_err(|e| match e {
            ExportError::Network(_) | ExportError::Data { .. } => bad_input(e),
            other => anyhow::Error::new(other),
        })
        .context("export")?;
    let ort = report
        .onnxruntime
        .as_ref()
        .map_or("skipped".to_owned(), |r| format!("{:.2e}", r.max_abs_diff));
    eprintln!(
        "proof on {} ({} frames): max |Δ| vs tch: tract {:.2e}, onnxruntime {ort}; report {}",
        report.video,
        report.frames,
        report.tract.max_abs_diff,
        paths.report.display()
    );
    if let Some(why) = &report.onnxruntime_skipped {
        eprintln!("warning: ONNX Runtime and onnx.checker not run: {why}");
    }
    if let Some(int8) = &report.int8 {
        eprintln!(
            "int8: file {:.1} % of fp32; Conv/Gemm weights ({:.1} % of the fp32 bytes) at \
             {:.1} %; CCC drop valence {:.4} arousal {:.4} ({})",
            100.0 * int8.size_ratio,
            100.0 * int8.quantizable_share,
            100.0 * int8.weights_ratio,
            int8.ccc_drop[0],
            int8.ccc_drop[1],
            int8.ccc_drop_engine
        );
    }
    if !report.failures.is_empty() {
        anyhow::bail!(
            "the exported model is not proven equal to the trained network:\n  {}",
            report.failures.join("\n  ")
        );
    }
    Ok(())
}
