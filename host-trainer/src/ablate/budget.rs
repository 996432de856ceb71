//! What an ablation costs before it runs (`affect-train ablate --plan`): per variant the
//! parameters and forward multiply-adds counted from the network configuration
//! ([`crate::model::flops`]), the training FLOPs per step and per run, and the estimated peak
//! memory ([`crate::train::estimate`]); the time on a machine of a given sustained throughput;
//! and a measured training step on this CPU ([`measure`]) to check that the count predicts time.
//!
//! FLOPs here are GPU data-sheet FLOPs: 2 per multiply-add. A training step costs about 3 forward
//! passes (the forward pass, and a backward pass of about twice its work for the gradients of
//! activations and weights): `6 · MAC/frame · frames`. Validation adds one forward pass per
//! validation frame at every validation.

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::flops;
use crate::train::bench::StepTimer;
use crate::train::config::TrainConfig;
use crate::train::estimate;
use crate::train::{TrainError, config::DeviceChoice};

/// FLOPs per multiply-add.
const FLOPS_PER_MAC: f64 = 2.0;

/// Forward-pass equivalents of one training step (forward + backward).
const PASSES_PER_STEP: f64 = 3.0;

/// The cost of one run of one variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantCost {
    /// Variant id.
    pub id: String,
    /// Trainable parameters.
    pub parameters: u64,
    /// Forward multiply-adds per frame.
    pub forward_macs: u64,
    /// Frames per training step.
    pub frames_per_step: u64,
    /// Training steps.
    pub steps: u64,
    /// Frames scored at each validation.
    pub validation_frames: u64,
    /// Validations per run (every `schedule.validate_every` steps and at the end).
    pub validations: u64,
    /// Estimated peak memory of training, bytes ([`estimate::estimate`]).
    pub memory_bytes: u64,
}

impl VariantCost {
    /// The cost of training `config` (variant `id`) with `validation_frames` frames per
    /// validation.
    pub fn of(id: &str, config: &TrainConfig, validation_frames: u64) -> Self {
        let (b, t) = config.batch_shape();
        let s = &config.schedule;
        let validations = match s.validate_every {
            0 => 1,
            every => s.steps / every + u64::from(!s.steps.is_multiple_of(every)),
        };
        let network = flops::network(&config.network).total();
        Self {
            id: id.to_owned(),
            parameters: network.parameters,
            forward_macs: network.macs,
            frames_per_step: (b * t) as u64,
            steps: s.steps,
            validation_frames,
            validations: if config.data.validation_split.is_empty() || validation_frames == 0 {
                0
            } else {
                validations
            },
            memory_bytes: estimate::estimate(config).total(),
        }
    }

    /// Training FLOPs of one step: `3 passes · 2 FLOPs/MAC · MAC/frame · frames`.
    pub fn step_flops(&self) -> f64 {
        PASSES_PER_STEP * FLOPS_PER_MAC * self.forward_macs as f64 * self.frames_per_step as f64
    }

    /// FLOPs of the whole run: every step and every validation.
    pub fn run_flops(&self) -> f64 {
        self.steps as f64 * self.step_flops()
            + (self.validations * self.validation_frames) as f64
                * FLOPS_PER_MAC
                * self.forward_macs as f64
    }
}

/// Training steps of one variant timed on this CPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMeasurement {
    /// Variant id.
    pub id: String,
    /// Frames per timed step.
    pub frames: u64,
    /// Intra-op threads.
    pub threads: u32,
    /// Wall-clock seconds of each timed step.
    pub seconds: Vec<f64>,
    /// The counted training FLOPs of one such step ([`VariantCost::step_flops`]).
    pub step_flops: f64,
}

impl StepMeasurement {
    /// The fastest step: the one least slowed by other work on a shared CPU.
    pub fn best_seconds(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// The median step.
    pub fn median_seconds(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    /// Achieved FLOP/s of the fastest step: counted FLOPs over measured time.
    pub fn flops_per_second(&self) -> f64 {
        self.step_flops / self.best_seconds()
    }
}

/// Times `steps` training steps (forward, loss, backward, Adam) of each `(id, config)` network
/// on a random batch of `frames` frames on the CPU with `threads` threads — one clip of `frames`
/// frames for a CNN-RNN, `frames` single frames for a CNN — after 2 untimed steps each. The
/// networks take turns step by step, so a load that comes and goes on a shared CPU slows them
/// alike. Networks are randomly initialised (no pretrained file needed), dropout is off.
pub fn measure(
    variants: &[(String, TrainConfig)],
    frames: u32,
    steps: usize,
    threads: u32,
) -> Result<Vec<StepMeasurement>, TrainError> {
    let mut timers = Vec::new();
    let mut out = Vec::new();
    for (id, config) in variants {
        let mut small = config.clone();
        small.device = DeviceChoice::Cpu;
        small.network.pretrained = None;
        small.network.freeze_conv = false;
        if small.network.is_recurrent() {
            small.batch.sequences = 1;
            small.batch.sequence_length = frames;
        } else {
            small.batch.frames = frames;
        }
        let mut timer = StepTimer::new(&small, threads)?;
        for _ in 0..2 {
            timer.step()?;
        }
        timers.push(timer);
        out.push(StepMeasurement {
            id: id.clone(),
            frames: u64::from(frames),
            threads,
            seconds: Vec::new(),
            step_flops: VariantCost::of(id, &small, 0).step_flops(),
        });
    }
    for _ in 0..steps {
        for (timer, m) in timers.iter_mut().zip(&mut out) {
            let (_, seconds) = timer.step()?;
            m.seconds.push(seconds);
        }
    }
    Ok(out)
}

/// The measurements as a Markdown table: each step's counted FLOPs, measured time and achieved
/// FLOP/s, and — the check that the count predicts time — its time predicted from the mean
/// FLOP/s of the *other* measurements, with the error. `load` is the 1-minute load average
/// while measuring (a shared CPU lowers the rate).
pub fn measurement_table(measured: &[StepMeasurement], load: Option<f64>) -> String {
    let mut md = String::from(
        "### Training steps timed on this CPU\n\n| variant | frames/step | threads | s/step \
         fastest (median) | GFLOP/step (counted) | GFLOP/s achieved | s/step predicted from the \
         others' GFLOP/s | error |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (k, m) in measured.iter().enumerate() {
        let others: Vec<f64> = measured
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, o)| o.flops_per_second())
            .collect();
        let (predicted, error) = if others.is_empty() {
            ("–".to_owned(), "–".to_owned())
        } else {
            let rate = others.iter().sum::<f64>() / others.len() as f64;
            let p = m.step_flops / rate;
            (
                format!("{p:.2}"),
                format!("{:+.0} %", (p / m.best_seconds() - 1.0) * 100.0),
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} ({:.2}) | {:.1} | {:.1} | {predicted} | {error} |",
            m.id,
            m.frames,
            m.threads,
            m.best_seconds(),
            m.median_seconds(),
            m.step_flops / 1e9,
            m.flops_per_second() / 1e9,
        );
    }
    if let Some(load) = load {
        let _ = writeln!(md, "\n1-minute load average after measuring: {load:.2}.");
    }
    md.push('\n');
    md
}

/// `seconds` as hours (or days when longer than two days).
pub fn duration(seconds: f64) -> String {
    let hours = seconds / 3600.0;
    if hours >= 48.0 {
        format!("{:.1} days", hours / 24.0)
    } else if hours >= 1.0 {
        format!("{hours:.1} h")
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}

/// The plan as a Markdown table: one row per variant (one run), then the total over `seeds`
/// runs of each and its time at `flops_per_second` sustained (`machine` describes it).
pub fn plan_table(
    costs: &[VariantCost],
    seeds: u64,
    flops_per_second: f64,
    machine: &str,
) -> String {
    let mut md = format!(
        "| variant | parameters | forward GMAC/frame | frames/step | training TFLOP/step | steps \
         | PFLOP/run | est. peak memory | time/run at {:.0} TFLOP/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        flops_per_second / 1e12
    );
    for c in costs {
        let _ = writeln!(
            md,
            "| {} | {:.1} M | {:.2} | {} | {:.2} | {} | {:.1} | {} | {} |",
            c.id,
            c.parameters as f64 / 1e6,
            c.forward_macs as f64 / 1e9,
            c.frames_per_step,
            c.step_flops() / 1e12,
            c.steps,
            c.run_flops() / 1e15,
            estimate::gib(c.memory_bytes),
            duration(c.run_flops() / flops_per_second),
        );
    }
    let total: f64 = costs.iter().map(VariantCost::run_flops).sum::<f64>() * seeds as f64;
    let peak = costs.iter().map(|c| c.memory_bytes).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "\n**Total**: {} variants × {seeds} seeds = {} runs, {:.2} EFLOP ({:.0} PFLOP); largest \
         estimated peak memory {}. **Estimated time** on {machine}: **{}** ({:.0} h) — an \
         estimate from the FLOP count and an assumed sustained throughput, not a measurement.",
        costs.len(),
        costs.len() as u64 * seeds,
        total / 1e18,
        total / 1e15,
        estimate::gib(peak),
        duration(total / flops_per_second),
        total / flops_per_second / 3600.0,
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_costs_its_steps_and_validations() {
        let config = TrainConfig::from_overrides(&[
            ("network.width".into(), toml::Value::Float(0.0625)),
            ("network.input_size".into(), toml::Value::Integer(32)),
            (
                "network.backbone".into(),
                toml::Value::String("vgg16".into()),
            ),
            ("network.hidden".into(), toml::Value::Integer(8)),
            ("network.layers".into(), toml::Value::Integer(1)),
            ("batch.sequences".into(), toml::Value::Integer(2)),
            ("batch.sequence_length".into(), toml::Value::Integer(5)),
            ("schedule.steps".into(), toml::Value::Integer(10)),
            ("schedule.validate_every".into(), toml::Value::Integer(4)),
        ])
        .unwrap();
        let c = VariantCost::of("x", &config, 100);
        // The network of `flops`' hand-counted test.
        assert_eq!(c.forward_macs, 1_344_912);
        assert_eq!(c.frames_per_step, 10);
        assert_eq!(c.validations, 3, "at steps 4, 8 and the end (10)");
        assert_eq!(c.step_flops(), 6.0 * 1_344_912.0 * 10.0);
        let expected = 10.0 * c.step_flops() + 3.0 * 100.0 * 2.0 * 1_344_912.0;
        assert_eq!(c.run_flops(), expected);
        let md = plan_table(&[c], 3, 1e12, "a test machine");
        assert!(md.contains("| x | "), "{md}");
        assert!(md.contains("1 variants × 3 seeds = 3 runs"), "{md}");
    }

    #[test]
    fn each_measurement_is_predicted_from_the_others_rate() {
        let m = |id: &str, seconds: &[f64], gflop: f64| StepMeasurement {
            id: id.into(),
            frames: 4,
            threads: 2,
            seconds: seconds.to_vec(),
            step_flops: gflop * 1e9,
        };
        // Fastest steps at 100 and 50 GFLOP/s: each predicted from the other's rate.
        let a = m("a", &[3.0, 2.0, 2.5], 200.0);
        assert_eq!((a.best_seconds(), a.median_seconds()), (2.0, 2.5));
        let md = measurement_table(&[a, m("b", &[1.0, 1.5], 50.0)], Some(1.5));
        assert!(
            md.contains("| a | 4 | 2 | 2.00 (2.50) | 200.0 | 100.0 | 4.00 | +100 % |"),
            "{md}"
        );
        assert!(
            md.contains("| b | 4 | 2 | 1.00 (1.25) | 50.0 | 50.0 | 0.50 | -50 % |"),
            "{md}"
        );
        assert!(md.contains("load average after measuring: 1.50"), "{md}");
    }

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(duration(90.0), "2 min");
        assert_eq!(duration(5400.0), "1.5 h");
        assert_eq!(duration(3.0 * 86400.0), "3.0 days");
    }
}
