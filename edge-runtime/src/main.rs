//! `affect-edge`: camera → faces → streaming valence/arousal → stdout, serial, MQTT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

mod app;

use affect_edge::backend::BackendKind;
use affect_edge::config::{EdgeConfig, FacesSpec, SourceSpec};
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
    /// Print a model's metadata and whether this runtime can serve it.
    Info {
        /// ONNX model file.
        model: PathBuf,
    },
}

/// Flags of `run`; each overrides the same field of `--config`.
#[derive(Args)]
struct RunArgs {
    /// TOML configuration file (same fields as these flags).
    #[arg(long)]
    config: Option<PathBuf>,
    /// camera:/dev/videoN | images:DIR | synthetic[:SEED].
    #[arg(long)]
    source: Option<SourceSpec>,
    /// Model file (default: the bundled model for the source).
    #[arg(long)]
    model: Option<PathBuf>,
    /// tract | onnxruntime.
    #[arg(long)]
    backend: Option<BackendKind>,
    /// bundled (BlazeFace + 68 landmarks) | none (frames are face crops).
    #[arg(long)]
    faces: Option<FacesSpec>,
    /// stdout | serial:PATH[@BAUD] | mqtt://HOST:PORT/TOPIC | mqtts://…; repeatable.
    #[arg(long)]
    report: Vec<String>,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// Pace image and synthetic sources (0 = as fast as possible).
    #[arg(long)]
    fps: Option<f32>,
    /// Intra-op threads of the inference engine (0 = its default).
    #[arg(long)]
    threads: Option<usize>,
    /// Serve /healthz, /metrics and /status on this address (e.g. 127.0.0.1:9464; port 0 picks
    /// a free port, logged at start).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Directory for state kept across restarts: the MQTT report queue goes to
    /// DIR/queue/ (default: $STATE_DIRECTORY; without one the queue is in memory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// MQTT password (better: the environment variable).
    #[arg(long, env = "AFFECT_MQTT_PASSWORD", hide_env_values = true)]
    mqtt_password: Option<String>,
}

#[derive(Args)]
struct BenchCli {
    /// Model file (default: the bundled synthetic model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Source of the frames (default synthetic:1, one face).
    #[arg(long, default_value = "synthetic:1")]
    source: SourceSpec,
    /// bundled | none.
    #[arg(long)]
    faces: Option<FacesSpec>,
    /// Frames to time.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Threads for each engine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
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
        Command::Run(args) => run(args),
        Command::Bench(args) => app::bench(BenchArgs {
            model: args.model,
            source: args.source,
            faces: args.faces,
            frames: args.frames,
            threads: args.threads,
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
    let mut config = match &args.config {
        Some(path) => EdgeConfig::from_toml_file(path).map_err(|e| Failure::BadInput(e.into()))?,
        None => EdgeConfig::default(),
    };
    if let Some(s) = args.source {
        config.source = s;
    }
    if args.model.is_some() {
        config.model = args.model;
    }
    if let Some(b) = args.backend {
        config.backend = b;
    }
    if args.faces.is_some() {
        config.faces = args.faces;
    }
    if !args.report.is_empty() {
        config.report = args.report;
    }
    if let Some(n) = args.max_frames {
        config.max_frames = n;
    }
    if let Some(f) = args.fps {
        config.fps = f;
    }
    if let Some(t) = args.threads {
        config.threads = t;
    }
    if args.http.is_some() {
        config.http.listen = args.http;
    }
    if args.state_dir.is_some() {
        config.state_dir = args.state_dir;
    }
    if args.mqtt_password.is_some() {
        config.mqtt.password = args.mqtt_password;
    }
    config.validate().map_err(|e| Failure::BadInput(e.into()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Failure::Other(e.into()))?;
    }
    app::run(&config, &stop)
}
