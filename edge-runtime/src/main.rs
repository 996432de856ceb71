//! `affect-edge`: camera → faces → streaming valence/arousal → stdout, serial, MQTT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

mod app;

use affect_edge::backend::BackendKind;
use affect_edge::config::{ConfigError, EdgeConfig, FacesSpec, SourceSpec};
use affect_edge::doctor::{self, SystemProbes};
use app::{BenchArgs, Failure};
use clap::{Args, Parser, Subcommand};

/// Valence/arousal from faces on camera, reported over stdout, serial or MQTT.
#[derive(Parser)]
#[command(name = "affect-edge", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until the source ends or SIGINT/SIGTERM (then drain queues, exit 0).
    Run(RunArgs),
    /// Per-stage timings, end-to-end frames/s and latency; tract vs ONNX Runtime model time.
    Bench(BenchCli),
    /// Check every part `run` would use: one line each, `ok`, `FAIL` with the fix, or
    /// `skipped` with the reason; exit 0 only when nothing failed.
    Doctor(DoctorArgs),
    /// From the workstation: send an exported model to running devices over MQTT and print
    /// each device's outcome (exit 0 only when every device made it its active model).
    Deploy(DeployCli),
    /// Print a model's metadata and whether this runtime can serve it.
    Info {
        /// ONNX model file.
        model: PathBuf,
    },
}

/// Flags that override the same fields of `--config` (shared by `run` and `doctor`).
#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file (same fields as these flags).
    #[arg(long)]
    config: Option<PathBuf>,
    /// camera:/dev/videoN | images:DIR | synthetic[:SEED].
    #[arg(long)]
    source: Option<SourceSpec>,
    /// Model file (default: the bundled model for the source).
    #[arg(long)]
    model: Option<PathBuf>,
    /// auto (ONNX Runtime when its library loads, else tract) | tract | onnxruntime.
    #[arg(long)]
    backend: Option<BackendKind>,
    /// bundled (BlazeFace + 68 landmarks) | none (frames are face crops).
    #[arg(long)]
    faces: Option<FacesSpec>,
    /// stdout | serial:PATH[@BAUD] | mqtt://HOST:PORT/TOPIC | mqtts://…; repeatable.
    #[arg(long)]
    report: Vec<String>,
    /// CPU threads sharing a frame's faces: crops and networks split across them, each on a
    /// single-threaded engine (0 = one per core; one face uses one thread).
    #[arg(long)]
    threads: Option<usize>,
    /// MQTT password (better: the environment variable).
    #[arg(long, env = "AFFECT_MQTT_PASSWORD", hide_env_values = true)]
    mqtt_password: Option<String>,
    /// Directory for state kept across restarts: the MQTT report queue goes to
    /// DIR/queue/ (default: $STATE_DIRECTORY; without one the queue is in memory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The configuration file (or the defaults) with these flags applied, not yet validated.
    fn load(self) -> Result<EdgeConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => EdgeConfig::from_toml_file(path)?,
            None => EdgeConfig::default(),
        };
        if let Some(s) = self.source {
            config.source = s;
        }
        if self.model.is_some() {
            config.model = self.model;
        }
        if let Some(b) = self.backend {
            config.backend = b;
        }
        if self.faces.is_some() {
            config.faces = self.faces;
        }
        if !self.report.is_empty() {
            config.report = self.report;
        }
        if let Some(t) = self.threads {
            config.threads = t;
        }
        if self.mqtt_password.is_some() {
            config.mqtt.password = self.mqtt_password;
        }
        if self.state_dir.is_some() {
            config.state_dir = self.state_dir;
        }
        Ok(config)
    }
}

/// Flags of `run`; each overrides the same field of `--config`.
#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// Pace image and synthetic sources (0 = as fast as possible).
    #[arg(long)]
    fps: Option<f32>,
    /// Serve /healthz, /metrics and /status on this address (e.g. 127.0.0.1:9464; port 0 picks
    /// a free port, logged at start).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

/// Flags of `doctor`: the same configuration flags as `run`, so it checks what `run` would use.
#[derive(Args)]
struct DoctorArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Print one JSON object (`{"ok": …, "checks": […]}`) instead of lines.
    #[arg(long)]
    json: bool,
}

/// Flags of `deploy`.
#[derive(Args)]
struct DeployCli {
    /// The exported model (`model.onnx` or `model.int8.onnx`; refused when the
    /// `model.export.json` proof beside it lists failures).
    model: PathBuf,
    /// Broker and target: mqtt://[USER[:PASS]@]HOST[:PORT]/TARGET, or mqtts://…?ca=CA.pem;
    /// TARGET is a device's base topic (affect/SITE/DEVICE) or a fleet (affect/SITE/+).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Deploy id the devices echo in their status (default: model name and time).
    #[arg(long)]
    id: Option<String>,
    /// Seconds to wait for every device's outcome.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Seconds at most to collect the fleet's retained statuses (wildcard targets).
    #[arg(long, default_value_t = 3.0)]
    discover: f64,
    /// MQTT password (better: the environment variable).
    #[arg(long, env = "AFFECT_MQTT_PASSWORD", hide_env_values = true)]
    mqtt_password: Option<String>,
}

#[derive(Args)]
struct BenchCli {
    /// Model file (default: the bundled synthetic model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Source of the frames (default synthetic:1, one face); repeat to compare sources (e.g.
    /// 1, 8 and ~29 faces), the first being the baseline of the printed ratios.
    #[arg(long = "source", default_value = "synthetic:1")]
    sources: Vec<SourceSpec>,
    /// bundled | none.
    #[arg(long)]
    faces: Option<FacesSpec>,
    /// Frames to time.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// CPU threads sharing a frame's faces, as `run --threads` (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Every detector region searched once every N frames, a share per frame, landmark tracking
    /// in between (1 = the whole detection on every frame; default:
    /// `face_models.redetect_every`'s default).
    #[arg(long)]
    redetect_every: Option<u32>,
    /// At most N detector regions searched per frame, a large frame's sweep taking longer (0 =
    /// no limit; default: `face_models.regions_per_frame`'s default).
    #[arg(long, value_name = "N")]
    regions_per_frame: Option<u32>,
    /// New landmarks for at most N faces per frame, detections first, then in turn (0 = every
    /// face; default: `face_models.landmarks_per_frame`'s default).
    #[arg(long, value_name = "N")]
    landmarks_per_frame: Option<u32>,
    /// Decode image files once before timing and serve them from memory in a loop, as a camera
    /// hands over raw frames: times the perception without the file decoding (holds up to
    /// `--frames` decoded frames).
    #[arg(long)]
    in_memory: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // journald and log files get plain text; colours only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match Cli::parse().command {
        Command::Doctor(args) => return doctor(args),
        Command::Run(args) => run(args),
        Command::Bench(args) => app::bench(BenchArgs {
            model: args.model,
            sources: args.sources,
            faces: args.faces,
            frames: args.frames,
            threads: args.threads,
            redetect_every: args.redetect_every,
            regions_per_frame: args.regions_per_frame,
            landmarks_per_frame: args.landmarks_per_frame,
            in_memory: args.in_memory,
        }),
        Command::Deploy(args) => app::deploy(app::DeployArgs {
            model: args.model,
            to: args.to,
            id: args.id,
            timeout: args.timeout,
            discover: args.discover,
            password: args.mqtt_password,
        }),
        Command::Info { model } => app::info(&model),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!(
                "error: {}",
                affect_shared::report_error::error_chain(e.as_ref())
            );
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!(
                "error: {}",
                affect_shared::report_error::error_chain(e.as_ref())
            );
            ExitCode::from(1)
        }
    }
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let mut config = args
        .common
        .load()
        .map_err(|e| Failure::BadInput(e.into()))?;
    if let Some(n) = args.max_frames {
        config.max_frames = n;
    }
    if let Some(f) = args.fps {
        config.fps = f;
    }
    if args.http.is_some() {
        config.http.listen = args.http;
    }
    config.validate().map_err(|e| Failure::BadInput(e.into()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Failure::Other(e.into()))?;
    }
    app::run(&config, &stop)
}

/// `affect-edge doctor`: exit 0 when nothing failed, 1 otherwise.
fn doctor(args: DoctorArgs) -> ExitCode {
    let origin = args.common.config.as_ref().map_or_else(
        || "defaults (no --config)".to_owned(),
        |p| p.display().to_string(),
    );
    let config = args.common.load().and_then(|c| c.validate().map(|()| c));
    let results = doctor::check(&config, &origin, &mut SystemProbes);
    if args.json {
        println!("{}", doctor::render_json(&results));
    } else {
        print!("{}", doctor::render_text(&results));
    }
    ExitCode::from(doctor::exit_code(&results))
}
