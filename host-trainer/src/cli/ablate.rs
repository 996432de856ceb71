//! `affect-train ablate`: the paper's comparisons as Markdown tables (Tables 4–9), on a synthetic
//! dataset rendered in memory (the faces `affect-train synth` writes), labelled like Aff-Wild with
//! the per-frame mean of several simulated annotators.

use std::path::PathBuf;
use std::sync::Arc;

use affect_shared::synth::SynthConfig;
use affect_trainer::ablate;
use affect_trainer::train::config::parse_set;
use affect_trainer::train::memory::{render_synthetic, render_synthetic_annotated};

use super::bad_input;

/// Flags of `affect-train ablate`.
#[derive(clap::Args)]
pub struct Args {
    /// Synthetic videos rendered in memory for training (validation gets a quarter as many).
    #[arg(long, default_value_t = 24)]
    videos: u64,
    /// Frames per synthetic video.
    #[arg(long, default_value_t = 200)]
    frames: usize,
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
    /// Small networks at 48 px for a few hundred steps on the CPU (minutes per seed), and check
    /// that no run collapsed and the CNN-GRU with landmarks reaches validation CCC ≥ 0.6 and
    /// beats the CNN.
    #[arg(long)]
    quick: bool,
    /// Override a base config key for every variant (repeatable), e.g. `--set schedule.steps=2000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Only these variants (repeatable), e.g. `--only gru-128x2-lm`; ids are listed in
    /// `ablation.json` and in the module documentation.
    #[arg(long)]
    only: Vec<String>,
    /// VGG-Face weights: adds the VGG-Face rows (same architecture as VGG-16, other weights).
    #[arg(long)]
    vgg_face_weights: Option<PathBuf>,
}

/// Trains every variant with every seed and writes `OUT/ablation.md` (tables, findings) and
/// `OUT/ablation.json` (every run, the per-variant statistics and the findings).
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut base = if args.quick {
        ablate::quick_base()
    } else {
        Vec::new()
    };
    for s in &args.sets {
        base.push(parse_set(s).map_err(bad_input)?);
    }
    let mut plan = ablate::plan(args.vgg_face_weights.is_some());
    if let Some(weights) = &args.vgg_face_weights {
        for v in plan.iter_mut().filter(|v| v.id.contains("vgg_face")) {
            v.overrides.push((
                "network.pretrained".into(),
                toml::Value::String(weights.display().to_string()),
            ));
        }
    }
    if !args.only.is_empty() {
        plan.retain(|v| args.only.contains(&v.id));
    }
    if args.annotators == 0 && plan.iter().any(|v| v.id == ablate::ONE_ANNOTATOR) {
        eprintln!(
            "--annotators 0: leaving out {} (Table 6 needs annotators)",
            ablate::ONE_ANNOTATOR
        );
        plan.retain(|v| v.id != ablate::ONE_ANNOTATOR);
    }
    if plan.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "no variant to train (check --only against the ids in the module documentation)"
        )));
    }
    // Preprocessing depends only on size and landmark use; render each split once, with
    // landmarks (variants without them ignore that input).
    let reference = ablate::variant_config(&base, &plan[0]).map_err(bad_input)?;
    let mut with_landmarks = reference.clone();
    with_landmarks.network.landmarks = true;
    with_landmarks.data.preprocess = None;
    let preprocess = with_landmarks.preprocess();
    let synth = SynthConfig {
        size: affect_shared::synth::render_size(preprocess.size),
        frames: args.frames,
        annotators: args.annotators,
        ..SynthConfig::default()
    };
    let validation_videos = (args.videos / 4).max(1);
    let started = std::time::Instant::now();
    let (train_data, annotators) =
        render_synthetic_annotated(&synth, args.seed, 0..args.videos, &preprocess)?;
    let train_set = ablate::TrainingSet {
        data: Arc::new(train_data),
        annotators: annotators.into_iter().map(Arc::new).collect(),
    };
    let validation = render_synthetic(
        &synth,
        args.seed,
        args.videos..args.videos + validation_videos,
        &preprocess,
    )?;
    eprintln!(
        "rendered {} + {} synthetic videos of {} frames in {:.1} s",
        args.videos,
        validation_videos,
        args.frames,
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "{} variants; {} training and {} validation videos at {} px",
        plan.len(),
        train_set.data.videos.len(),
        validation.videos.len(),
        train_set.data.size
    );
    std::fs::create_dir_all(&args.out)?;
    let seeds: Vec<u64> = (0..args.seeds).map(|k| args.seed + k).collect();
    let results = ablate::run(
        &base,
        &plan,
        &seeds,
        &train_set,
        &validation,
        &args.out,
        |r| match &r.best {
            Some(v) => eprintln!(
                "{:<22} seed {:<3} CCC V {:.3} A {:.3}  MSE V {:.4} A {:.4}  ({:.0} s){}",
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
                "{:<22} seed {:<3} no validation score ({:.0} s)",
                r.id, r.seed, r.seconds
            ),
        },
    )?;
    let findings = ablate::findings(&results);
    let labels = match args.annotators {
        0 => "one noisy annotation per frame".to_owned(),
        n => format!("the per-frame mean of {n} simulated annotators"),
    };
    let mut md = format!(
        "## Ablation: {} variant(s) × seeds {seeds:?}\n\nLabels: {labels} (validation \
         always; training too unless a variant trains on one annotator).\n\n",
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
    std::fs::write(args.out.join("ablation.md"), &md)?;
    let combined = ablate::with_separate(&results);
    std::fs::write(
        args.out.join("ablation.json"),
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
        }))?,
    )?;
    println!("{md}");
    match check {
        Some(Err(text)) => anyhow::bail!("quick check failed: {text}"),
        _ => Ok(()),
    }
}
