//! `affect-train ablate`: the paper's comparisons as Markdown tables (Tables 4–9), on a synthetic
//! dataset rendered in memory (the faces `affect-train synth` writes), labelled like Aff-Wild with
//! the per-frame mean of several simulated annotators — or, with `--data DIR`, on a dataset
//! directory read like `affect-train train --data` does.
//!
//! Every finished run leaves `OUT/<variant>/seed-<s>/result.json`; `--resume` continues an
//! interrupted ablation (Ctrl-C checkpoints the current run and exits non-zero, saying how).
//! `--plan` trains nothing: it prints what every run costs and how long the whole study takes
//! at a given throughput ([`ablate::budget`]), optionally after timing training steps here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use affect_shared::synth::SynthConfig;
use affect_trainer::ablate::{self, AblateError, Provenance, budget};
use affect_trainer::data::Annotation;
use affect_trainer::train::config::{TrainConfig, parse_set};
use affect_trainer::train::dataset;
use affect_trainer::train::memory::{MemoryDataset, render_synthetic, render_synthetic_annotated};

use super::bad_input;

/// Sustained training throughput assumed for the CUDA-workstation estimate, TFLOP/s: one A100
/// 80 GB training ResNet-50 v1.5 in TF32 (libtorch's default for cuDNN convolutions) reaches 938
/// images/s in NVIDIA's published benchmark (DeepLearningExamples, PyTorch 21.03 container), i.e.
/// 938 × 6 × 4.1 G multiply-adds ≈ 23 TFLOP/s.
const GPU_TFLOPS: f64 = 23.0;

/// Variants timed by `--measure` unless `--measure-variant` says otherwise: the VGG-16 CNN-GRU
/// and the ResNet-50 CNN (the two backbones, and a recurrent and a per-frame network).
const MEASURED: [&str; 2] = ["gru-128x2-lm", "cnn-resnet50-lm"];

/// Flags of `affect-train ablate`.
#[derive(clap::Args)]
pub struct Args {
    /// Train and validate on this dataset directory (a layout `affect-train train --data` reads:
    /// Aff-Wild or Aff-Wild2) instead of the synthetic set: every run streams
    /// `data.train_split` through the loader and validates on `data.validation_split`. The
    /// one-annotator variant runs only when the training split has `annotator-1`'s files.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Synthetic videos (one person each) rendered in memory for training; validation gets a
    /// quarter as many. Default: 512 with `--quick` (a few dozen people are memorised rather
    /// than read, README "Collapses"), else 24.
    #[arg(long)]
    videos: Option<u64>,
    /// Frames per synthetic video. Default: 40 with `--quick`, else 200.
    #[arg(long)]
    frames: Option<usize>,
    /// Simulated annotators per video (lag, bias, scale, smooth noise each; see `affect-train
    /// synth`): every variant trains on their per-frame mean except the one-annotator variant of
    /// Table 6 (`gru-128x2-lm-annotator-1`), and all validate against the mean. 0: one noisy
    /// annotation per frame, and the one-annotator variant is left out.
    #[arg(long, default_value_t = 4)]
    annotators: usize,
    /// Seed of the synthetic dataset, and the first training seed (the others follow:
    /// `seed + 1`, …).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training seeds per variant; tables show mean ± standard deviation over them and each of
    /// the paper's findings gets a verdict (holds / does not hold / inconclusive).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Where the runs and `ablation.md` go.
    #[arg(long, default_value = "ablation")]
    out: PathBuf,
    /// Small networks at 64 px for a few hundred steps on the CPU (minutes per seed), and check
    /// that no run collapsed and the CNN-GRU with landmarks reaches validation CCC ≥ 0.6 and
    /// beats the CNN.
    #[arg(long)]
    quick: bool,
    /// Override a base config key for every variant (repeatable), e.g. `--set schedule.steps=2000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Landmark-pretraining steps per backbone before the variants train: the stand-in for the
    /// VGG-Face / ImageNet weights the paper starts from (README, "Collapses"); every variant
    /// without `network.pretrained` starts from its backbone's. Default: 1000 with `--quick`,
    /// else 0 (random initialisation).
    #[arg(long, value_name = "STEPS")]
    pretext_steps: Option<u64>,
    /// Only these variants (repeatable), e.g. `--only gru-128x2-lm`, and the CNNs they start
    /// from; ids are listed in `ablation.json` and in the module documentation.
    #[arg(long)]
    only: Vec<String>,
    /// VGG-Face weights: adds the VGG-Face rows (same architecture as VGG-16, other weights).
    #[arg(long)]
    vgg_face_weights: Option<PathBuf>,
    /// Continue the ablation in `--out` (the same command as before plus `--resume`): runs with
    /// `result.json` are reused, interrupted ones resume from their checkpoint, missing ones
    /// start. Without it an `--out` that holds runs is refused.
    #[arg(long)]
    resume: bool,
    /// Train nothing: print every variant's parameters, FLOPs per frame and per step, steps,
    /// estimated memory, and the time of the whole study (all seeds) at `--gpu-tflops`.
    #[arg(long)]
    plan: bool,
    /// With `--plan`: first time this many training steps (after 2 untimed ones) of each
    /// `--measure-variant` on this CPU at its planned size with `--measure-frames` frames per
    /// step, the variants taking turns step by step, and print the fastest and median step, the
    /// FLOP/s achieved, and each variant's time predicted from the others' FLOP/s.
    #[arg(long, value_name = "STEPS", default_value_t = 0, requires = "plan")]
    measure: usize,
    /// Frames per timed step of `--measure`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..))]
    measure_frames: u32,
    /// Variant timed by `--measure` (repeatable; default: gru-128x2-lm and cnn-resnet50-lm).
    #[arg(long)]
    measure_variant: Vec<String>,
    /// Intra-op threads of `--measure`.
    #[arg(long, default_value_t = 2)]
    measure_threads: u32,
    /// Sustained training throughput of the machine the plan's time is estimated for, TFLOP/s
    /// (2 FLOPs per multiply-add). Default 23: one A100 80 GB, from NVIDIA's published ResNet-50
    /// TF32 training rate (see README, "A full-size run plan").
    #[arg(long, default_value_t = GPU_TFLOPS)]
    gpu_tflops: f64,
}

impl Args {
    /// Training videos and frames per video of the synthetic set: the flags, else the defaults
    /// of the chosen base.
    fn synthetic_shape(&self) -> (u64, usize) {
        let (videos, frames) = if self.quick {
            (ablate::QUICK_VIDEOS, ablate::QUICK_FRAMES)
        } else {
            (24, 200)
        };
        (self.videos.unwrap_or(videos), self.frames.unwrap_or(frames))
    }

    /// Landmark-pretraining steps per backbone: the flag, else the chosen base's default.
    fn pretext_steps(&self) -> u64 {
        let default = if self.quick {
            ablate::QUICK_PRETEXT_STEPS
        } else {
            0
        };
        self.pretext_steps.unwrap_or(default)
    }
}

/// Trains every variant with every seed and writes `OUT/ablation.md` (tables, findings) and
/// `OUT/ablation.json` (every run, the per-variant statistics and the findings); with `--plan`,
/// prints the plan's cost instead.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut base = if args.quick {
        ablate::quick_base()
    } else {
        Vec::new()
    };
    let sets = args
        .sets
        .iter()
        .map(|s| parse_set(s).map_err(bad_input))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let user_keys: Vec<String> = sets.iter().map(|(k, _)| k.clone()).collect();
    base.extend(sets);
    let root = match &args.data {
        Some(dir) => {
            let absolute = std::fs::canonicalize(dir)
                .map_err(|e| bad_input(anyhow::anyhow!("dataset {}: {e}", dir.display())))?;
            // Recorded in every run's configuration, so a resume checks it too.
            base.push((
                "data.root".into(),
                toml::Value::String(absolute.display().to_string()),
            ));
            Some(absolute)
        }
        None => None,
    };
    let mut plan = ablate::plan(args.vgg_face_weights.is_some());
    if let Some(weights) = &args.vgg_face_weights {
        for v in plan.iter_mut().filter(|v| v.id.contains("vgg_face")) {
            v.overrides.push((
                "network.pretrained".into(),
                toml::Value::String(weights.display().to_string()),
            ));
        }
    }
    if args.quick {
        ablate::quick_recipes(&mut plan, &user_keys);
    }
    if !args.only.is_empty() {
        plan = ablate::select(&plan, &args.only);
    }
    if plan.iter().any(|v| v.id == ablate::ONE_ANNOTATOR) {
        let missing = match &root {
            None => (args.annotators == 0).then(|| "--annotators 0".to_owned()),
            Some(root) => {
                let split = TrainConfig::from_overrides(&base)
                    .map_err(bad_input)?
                    .data
                    .train_split;
                let names =
                    affect_trainer::data::affwild::annotators(root, &split).map_err(bad_input)?;
                (!names.iter().any(|n| n == "annotator-1"))
                    .then(|| format!("{}: no annotator-1 files in {split}", root.display()))
            }
        };
        if let Some(why) = missing {
            eprintln!(
                "{why}: leaving out {} and the CNN it starts from (Table 6 needs annotators)",
                ablate::ONE_ANNOTATOR
            );
            plan.retain(|v| !v.overrides.iter().any(|(k, _)| k == "data.annotation"));
        }
    }
    if plan.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "no variant to train (check --only against the ids in the module documentation)"
        )));
    }
    let seeds: Vec<u64> = (0..args.seeds).map(|k| args.seed + k).collect();
    if args.plan {
        return print_plan(&args, &base, &plan, &seeds, root.as_deref());
    }
    // Bad configurations and a used --out are refused before minutes of rendering.
    for v in &plan {
        let config = ablate::variant_config(&base, v).map_err(bad_input)?;
        if !args.quick {
            ablate::check_checkpoints(&v.id, &config).map_err(bad_input)?;
        }
    }
    if !args.resume
        && let Some(first) = ablate::existing_runs(&args.out)
            .map_err(bad_input)?
            .into_iter()
            .next()
    {
        return Err(bad_input(AblateError::Exists {
            out: args.out.clone(),
            run: first,
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let in_memory;
    let directory;
    let data: &dyn ablate::AblationData = match &root {
        Some(root) => {
            eprintln!("{} variants on the dataset {}", plan.len(), root.display());
            directory = ablate::DatasetDir { root: root.clone() };
            &directory
        }
        None => {
            in_memory = render(&args, &base, &plan)?;
            &in_memory
        }
    };
    std::fs::create_dir_all(&args.out)?;
    let pretext_steps = args.pretext_steps();
    if pretext_steps > 0 {
        ablate::pretrain_backbones(
            &base,
            &mut plan,
            data,
            &args.out,
            pretext_steps,
            args.seed,
            |path, record, how| {
                let how = match how {
                    ablate::PretextProvenance::Trained => "",
                    ablate::PretextProvenance::Reused => "  (reused)",
                };
                eprintln!(
                    "landmark-pretrained backbone {}: loss {:.3} -> {:.3}{how}",
                    path.display(),
                    record.first_loss,
                    record.last_loss
                );
            },
        )
        .map_err(|e| match e {
            AblateError::Train { .. } | AblateError::Io { .. } => e.into(),
            other => bad_input(other),
        })?;
    }
    let options = ablate::RunOptions {
        resume: args.resume,
        require_checkpoints: !args.quick,
        stop,
    };
    let results = ablate::run(&base, &plan, &seeds, data, &args.out, &options, |r, how| {
        let how = match how {
            Provenance::Trained => String::new(),
            Provenance::Resumed { from } => format!("  (resumed from step {from})"),
            Provenance::Reused => "  (reused: result.json)".to_owned(),
        };
        match &r.best {
            Some(v) => eprintln!(
                "{:<26} seed {:<3} CCC V {:.3} A {:.3}  MSE V {:.4} A {:.4}  ({:.0} s){}{how}",
                r.id,
                r.seed,
                v.valence.ccc,
                v.arousal.ccc,
                v.valence.mse,
                v.arousal.mse,
                r.seconds,
                if r.collapsed { "  COLLAPSED" } else { "" }
            ),
            None => eprintln!(
                "{:<26} seed {:<3} no validation score ({:.0} s){how}",
                r.id, r.seed, r.seconds
            ),
        }
    })
    .map_err(|e| match e {
        AblateError::Interrupted { .. } => {
            anyhow::anyhow!("{e}.\nContinue with: {}", resume_command())
        }
        AblateError::Train { .. } | AblateError::Io { .. } => e.into(),
        other => bad_input(other),
    })?;
    let findings = ablate::findings(&results);
    let labels = match (&root, args.annotators) {
        (Some(root), _) => format!("the annotation of the dataset {}", root.display()),
        (None, 0) => "one noisy annotation per frame".to_owned(),
        (None, n) => format!("the per-frame mean of {n} simulated annotators"),
    };
    let mut md = format!(
        "## Ablation: {} variant(s) × seeds {seeds:?}\n\nLabels: {labels} (validation \
         always; training too unless a variant trains on one annotator). Every CNN-RNN starts \
         from the trained CNN with its backbone, landmarks, loss and labels, same seed.\n\n",
        plan.len()
    );
    md.push_str(&ablate::tables(&results));
    md.push_str(&ablate::findings_table(&findings));
    let check = args.quick.then(|| ablate::quick_check(&results, 0.6));
    if let Some(check) = &check {
        let line = match check {
            Ok(text) => format!("**quick check passed**: {text}\n"),
            Err(text) => format!("**quick check FAILED**: {text}\n"),
        };
        md.push_str(&line);
    }
    affect_shared::files::write_atomic(&args.out.join("ablation.md"), md.as_bytes())?;
    let combined = ablate::with_separate(&results);
    affect_shared::files::write_atomic(
        &args.out.join("ablation.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "seeds": seeds,
            "runs": results,
            "annotators": args.annotators,
            "variants": plan
                .iter()
                .map(|v| v.id.as_str())
                .chain([ablate::SEPARATE])
                .filter_map(|id| ablate::stats(&combined, id))
                .collect::<Vec<_>>(),
            "findings": findings,
        }))?
        .as_bytes(),
    )?;
    println!("{md}");
    match check {
        Some(Err(text)) => anyhow::bail!("quick check failed: {text}"),
        _ => Ok(()),
    }
}

/// This process's command line with `--resume` (added when missing), shell-quoted where needed.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--resume") {
        args.push("--resume".into());
    }
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--plan`: the cost of every variant at the chosen base, optionally a measured step on this
/// CPU, and the time of the whole study at `--gpu-tflops`.
fn print_plan(
    args: &Args,
    base: &[(String, toml::Value)],
    plan: &[ablate::Variant],
    seeds: &[u64],
    root: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if !(args.gpu_tflops.is_finite() && args.gpu_tflops > 0.0) {
        return Err(bad_input(anyhow::anyhow!(
            "--gpu-tflops must be a positive number, got {}",
            args.gpu_tflops
        )));
    }
    let (videos, frames) = args.synthetic_shape();
    let mut validation_frames = (videos / 4).max(1) * frames as u64;
    let mut costs = Vec::new();
    let mut configs = Vec::new();
    if let Some(root) = root {
        // The dataset's own validation split (frames do not depend on preprocessing).
        let config = ablate::variant_config(base, &plan[0]).map_err(bad_input)?;
        let split = &config.data.validation_split;
        validation_frames = 0;
        if !split.is_empty() {
            let videos =
                dataset::videos(root, split, &Annotation::Mean, &config).map_err(bad_input)?;
            for name in videos.videos() {
                let frames = videos
                    .frames(&name)
                    .map_err(|e| bad_input(anyhow::anyhow!("{split}/{name}: {e}")))?;
                validation_frames += frames as u64;
            }
        }
    }
    for v in plan {
        let config = ablate::variant_config(base, v).map_err(bad_input)?;
        costs.push(budget::VariantCost::of(&v.id, &config, validation_frames));
        configs.push((v.id.clone(), config));
    }
    let size = if args.quick {
        "the --quick base"
    } else {
        "full size (the paper's setting)"
    };
    println!(
        "## Ablation plan: {} variants at {size}, seeds {seeds:?}\n",
        plan.len(),
    );
    println!(
        "Counted from the network configurations (multiply-adds of convolutions, fully connected \
         and recurrent layers; FLOPs = 2 per multiply-add; a training step ≈ 3 forward passes); \
         validation: {validation_frames} frames every `schedule.validate_every` steps.\n"
    );
    if args.pretext_steps() > 0 {
        let mut backbones: Vec<&str> = configs
            .iter()
            .filter(|(_, c)| c.network.pretrained.is_none())
            .map(|(_, c)| c.network.backbone.name())
            .collect();
        backbones.sort_unstable();
        backbones.dedup();
        println!(
            "Before the variants: {} steps of landmark pretraining for each of {} ({} frames per \
             step; not priced below).\n",
            args.pretext_steps(),
            backbones.join(", "),
            configs.first().map_or(0, |(_, c)| c.batch.frames),
        );
    }
    if args.measure > 0 {
        let wanted: Vec<String> = if args.measure_variant.is_empty() {
            MEASURED.iter().map(|s| s.to_string()).collect()
        } else {
            args.measure_variant.clone()
        };
        let mut chosen = Vec::new();
        for id in &wanted {
            let Some(found) = configs.iter().find(|(v, _)| v == id) else {
                return Err(bad_input(anyhow::anyhow!(
                    "--measure-variant {id}: not a variant of this plan"
                )));
            };
            chosen.push(found.clone());
        }
        eprintln!(
            "timing {} steps each of {} (taking turns; {} frames per step, {} threads)…",
            args.measure,
            wanted.join(", "),
            args.measure_frames,
            args.measure_threads
        );
        let measured = budget::measure(
            &chosen,
            args.measure_frames,
            args.measure,
            args.measure_threads,
        )?;
        print!("{}", budget::measurement_table(&measured, load_average()));
    }
    let machine = format!(
        "a machine sustaining {} TFLOP/s{}",
        args.gpu_tflops,
        if args.gpu_tflops == GPU_TFLOPS {
            " (assumed: one A100 80 GB, TF32; set --gpu-tflops for yours)"
        } else {
            " (--gpu-tflops)"
        }
    );
    println!(
        "{}",
        budget::plan_table(&costs, args.seeds, args.gpu_tflops * 1e12, &machine)
    );
    Ok(())
}

/// The 1-minute load average (`/proc/loadavg`), to judge how shared the CPU was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The synthetic training set (with each simulated annotator's labels) and validation set,
/// rendered in memory once per distinct preprocessing of the plan's variants (each split with
/// landmarks; variants without them ignore that input), so every variant trains on crops
/// preprocessed as its configuration says.
fn render(
    args: &Args,
    base: &[(String, toml::Value)],
    plan: &[ablate::Variant],
) -> anyhow::Result<ablate::InMemoryByPreprocess> {
    let mut sets = ablate::InMemoryByPreprocess::default();
    for variant in plan {
        let config = ablate::variant_config(base, variant).map_err(bad_input)?;
        let preprocess = ablate::synthetic_preprocess(&config);
        if sets.sets.iter().any(|(p, _, _)| *p == preprocess) {
            continue;
        }
        let (train_set, validation) = render_one(args, &preprocess)?;
        sets.sets.push((preprocess, train_set, validation));
    }
    let (_, train_set, validation) = &sets.sets[0];
    eprintln!(
        "{} variants; {} training and {} validation videos at {} px, rendered for {} \
         preprocessing(s)",
        plan.len(),
        train_set.data.videos.len(),
        validation.videos.len(),
        train_set.data.size,
        sets.sets.len()
    );
    Ok(sets)
}

/// The synthetic training and validation sets, preprocessed with `preprocess`.
fn render_one(
    args: &Args,
    preprocess: &affect_shared::preprocess::Preprocess,
) -> anyhow::Result<(ablate::TrainingSet, MemoryDataset)> {
    let (videos, frames) = args.synthetic_shape();
    let synth = SynthConfig {
        size: affect_shared::synth::render_size(preprocess.size),
        frames,
        annotators: args.annotators,
        ..SynthConfig::default()
    };
    let validation_videos = (videos / 4).max(1);
    let started = std::time::Instant::now();
    let (train_data, annotators) =
        render_synthetic_annotated(&synth, args.seed, 0..videos, preprocess)?;
    let train_set = ablate::TrainingSet {
        data: Arc::new(train_data),
        annotators: annotators.into_iter().map(Arc::new).collect(),
    };
    let validation = render_synthetic(
        &synth,
        args.seed,
        videos..videos + validation_videos,
        preprocess,
    )?;
    eprintln!(
        "rendered {} + {} synthetic videos of {} frames in {:.1} s",
        videos,
        validation_videos,
        frames,
        started.elapsed().as_secs_f64()
    );
    Ok((train_set, validation))
}
