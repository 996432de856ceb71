//! What `affect-edge` does with a validated configuration: build the source, face finder,
//! backend and reporters, run, and print a summary (stderr, so stdout stays JSON lines).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use affect_edge::backend::{self, BackendError, BackendKind, EngineConfig, ModelContract};
use affect_edge::config::{EdgeConfig, FacesSpec, SourceSpec};
use affect_edge::deploy::{
    self, CommandSink, DeployClientError, DeployRequest, Deployments, ModelStore, Verifier,
};
use affect_edge::faces::{BundledFaces, FacesConfig};
use affect_edge::http::HttpServer;
use affect_edge::models::ModelFile;
use affect_edge::pipeline::{FaceMode, Pipeline, PipelineConfig, PipelineError};
use affect_edge::report::{self, JsonLinesReporter, MqttReporter, Reporter, SerialReporter};
use affect_edge::runner::{self, RunLimits, RunSummary};
use affect_edge::service::ServiceManager;
use affect_edge::source::{
    FrameSource, ImageDir, InMemoryLoop, LatestFrame, ReadAhead, Replay, SyntheticCamera,
    V4l2Camera, WithOutages,
};
use affect_edge::telemetry::{HealthPolicy, Telemetry};

/// How a command failed: bad configuration or model (exit 2) or anything else (exit 1).
pub enum Failure {
    /// The user can fix it: configuration, model, paths.
    BadInput(anyhow::Error),
    /// Everything else.
    Other(anyhow::Error),
}

fn bad(e: impl Into<anyhow::Error>) -> Failure {
    Failure::BadInput(e.into())
}

fn other(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Other(e.into())
}

fn backend_failure(e: BackendError) -> Failure {
    match e {
        BackendError::Run(_) => other(e),
        _ => bad(e),
    }
}

/// Opens the configured source, with rehearsed outages when `[source_outages]` is set. The
/// synthetic camera without a detector frames one face like the training crops: rendered at
/// [`affect_shared::synth::render_size`] of the model's input, then resized.
pub fn open_source(
    config: &EdgeConfig,
    faces: FacesSpec,
    face_size: u32,
) -> Result<Box<dyn FrameSource>, Failure> {
    let source = open_plain_source(config, faces, face_size)?;
    Ok(match &config.source_outages {
        Some(outages) => Box::new(WithOutages::new(source, outages).map_err(bad)?),
        None => source,
    })
}

fn open_plain_source(
    config: &EdgeConfig,
    faces: FacesSpec,
    face_size: u32,
) -> Result<Box<dyn FrameSource>, Failure> {
    let fps = (config.fps > 0.0).then_some(f64::from(config.fps));
    Ok(match &config.source {
        // A live camera is captured on its own thread; the pipeline takes the newest frame.
        SourceSpec::Camera(device) => Box::new(
            LatestFrame::spawn(Box::new(
                V4l2Camera::open(&config.camera_settings(device)).map_err(bad)?,
            ))
            .map_err(other)?,
        ),
        SourceSpec::Images(dir) => {
            let mut images = config.images.clone();
            images.path = dir.clone();
            images.fps = fps;
            // Decoded on their own thread, the next file while this one is processed.
            Box::new(
                ReadAhead::spawn(Box::new(ImageDir::open(&images).map_err(bad)?)).map_err(other)?,
            )
        }
        SourceSpec::Synthetic(seed) => {
            let mut synthetic = config.synthetic.clone();
            synthetic.seed = *seed;
            synthetic.fps = fps;
            if faces == FacesSpec::None {
                synthetic.people = Some(1);
                synthetic.face_size = affect_shared::synth::render_size(face_size);
                synthetic.width = synthetic.face_size;
                synthetic.height = synthetic.face_size;
            }
            Box::new(SyntheticCamera::new(&synthetic).map_err(bad)?)
        }
    })
}

/// The face finder for a mode, its networks on the engine `kind` (the affect model's). The
/// landmark net runs when the model needs landmarks, and also for landmark tracking
/// (`face_models.redetect_every` > 1, unless `face_models.landmarks = false`): on the frames and
/// regions the detector does not search, it is what finds the faces.
pub fn face_mode(
    config: &EdgeConfig,
    faces: FacesSpec,
    needs_landmarks: bool,
    kind: BackendKind,
) -> Result<FaceMode, Failure> {
    Ok(match faces {
        FacesSpec::None => FaceMode::WholeFrame,
        FacesSpec::Bundled => {
            let tracking = config.face_models.landmarks && config.face_models.redetect_every > 1;
            let faces_config = FacesConfig {
                landmarks: needs_landmarks || tracking,
                ..config.face_models
            };
            let engine = EngineConfig {
                kind,
                threads: config.threads,
                onnxruntime: config.onnxruntime_options().map_err(bad)?,
            };
            FaceMode::Detect(Box::new(
                BundledFaces::load(config.models_dir.as_deref(), &faces_config, &engine)
                    .map_err(bad)?,
            ))
        }
    })
}

/// Every configured reporter, each wrapped in smoothing and rate limiting when configured;
/// MQTT reporters pass deploy commands to `commands` when given.
pub fn open_reporters(
    config: &EdgeConfig,
    commands: Option<&CommandSink>,
) -> Result<Vec<Box<dyn Reporter>>, Failure> {
    let mut out: Vec<Box<dyn Reporter>> = Vec::new();
    for target in &config.report {
        let reporter: Box<dyn Reporter> = if target == "stdout" {
            Box::new(JsonLinesReporter::stdout())
        } else if target.starts_with("serial:") {
            let serial = config.serial_target(target).map_err(bad)?;
            Box::new(SerialReporter::open(&serial, config.state_dir.as_deref()).map_err(bad)?)
        } else if target.starts_with("mqtt://") || target.starts_with("mqtts://") {
            let mqtt = config.mqtt_target(target).map_err(bad)?;
            Box::new(
                MqttReporter::open(&mqtt, config.state_dir.as_deref(), commands.cloned())
                    .map_err(bad)?,
            )
        } else {
            return Err(bad(anyhow::anyhow!(
                "report target {target:?}: expected stdout, serial:PATH[@BAUD] or mqtt://HOST:PORT/TOPIC"
            )));
        };
        out.push(
            report::post_processed(reporter, config.smoothing, config.rate_limit).map_err(bad)?,
        );
    }
    Ok(out)
}

/// The model store when deploys are on (`[deploy] enabled` and a state directory).
fn model_store(config: &EdgeConfig) -> Result<Option<ModelStore>, Failure> {
    match (&config.state_dir, config.deploy.enabled) {
        (Some(dir), true) => Ok(Some(ModelStore::open(dir).map_err(bad)?)),
        (None, true) => {
            tracing::info!("deploy: off, there is no state directory to keep models in");
            Ok(None)
        }
        (_, false) => Ok(None),
    }
}

/// `affect-edge run`.
pub fn run(config: &EdgeConfig, stop: &AtomicBool) -> Result<(), Failure> {
    let store = model_store(config)?;
    let start = store.as_ref().map(ModelStore::start_model);
    let onnxruntime = config.onnxruntime_options().map_err(bad)?;
    // `auto` is settled once, so the face models and the affect model share the engine.
    let kind = backend::resolve(config.backend);
    let load = |model: &ModelFile| backend::load(kind, model, config.threads, &onnxruntime);
    let deployed = start.as_ref().and_then(|start| {
        let model = ModelFile::Path(start.deployed.clone()?);
        match load(&model) {
            Ok(backend) => Some((model, backend, start.since_unix_s)),
            Err(e) => {
                tracing::error!(
                    "deploy: the active model fails to load ({e}); starting with the configured model"
                );
                None
            }
        }
    });
    let (model, backend, since) = match deployed {
        Some(deployed) => deployed,
        None => {
            let model = config.model_file();
            let backend = load(&model).map_err(backend_failure)?;
            (model, backend, None)
        }
    };
    let serving_stored = since.is_some();
    let contract = backend.contract().clone();
    let mut identity = contract.identity();
    identity.since_unix_s = Some(since.unwrap_or_else(deploy::now_unix_s));
    let faces = config.faces_mode();
    let mut source = open_source(config, faces, contract.face_size as u32)?;
    let face_mode = face_mode(config, faces, contract.landmarks, kind)?;
    let mut pipeline = Pipeline::new(
        face_mode,
        backend,
        PipelineConfig {
            tracker: config.tracker,
            threads: config.threads,
            ..PipelineConfig::default()
        },
    )
    .map_err(bad)?;
    let deploys = match store {
        Some(store) => {
            let verifier = Verifier {
                backend: kind,
                threads: config.threads,
                onnxruntime: onnxruntime.clone(),
                landmarks_available: faces == FacesSpec::Bundled && contract.landmarks,
            };
            Some(
                Deployments::start(
                    &config.deploy,
                    store,
                    verifier,
                    identity.clone(),
                    serving_stored,
                )
                .map_err(bad)?,
            )
        }
        None => None,
    };
    let (mut deploys, commands) = deploys.unzip();
    let mut reporters = open_reporters(config, commands.as_ref())?;
    let telemetry = Arc::new(Telemetry::new(
        identity,
        pipeline.backend_name(),
        HealthPolicy {
            stale_after: Duration::from_secs_f64(config.http.stale_after_s),
        },
    ));
    let _http = match config.http.listen {
        Some(addr) => {
            let server = HttpServer::start(addr, Arc::clone(&telemetry)).map_err(bad)?;
            tracing::info!(
                "http: /healthz, /metrics and /status on http://{}",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    let service = ServiceManager::from_env();
    service.ready(&format!(
        "{} → {} → {}",
        source.describe(),
        model.describe(),
        config.report.join(", ")
    ));
    let _watchdog = service.start_watchdog(Arc::clone(&telemetry));
    if let Some(last) = start.and_then(|s| s.last_outcome) {
        telemetry.deploy_outcome(last, true);
    }
    let chosen = match config.backend {
        BackendKind::Auto => format!("backend auto: {}", pipeline.backend_name()),
        _ => pipeline.backend_name(),
    };
    tracing::info!(
        "{} → {} ({chosen} for every network, faces shared by {} threads, {}) → {}",
        source.describe(),
        model.describe(),
        affect_edge::batch::worker_count(config.threads),
        contract.summary(),
        config.report.join(", ")
    );
    let limits = RunLimits {
        max_frames: config.max_frames,
        status_every: Duration::from_secs_f64(config.status_interval_s),
        ..RunLimits::default()
    };
    let summary = runner::run(
        source.as_mut(),
        &mut pipeline,
        &mut reporters,
        &telemetry,
        stop,
        limits,
        deploys.as_mut(),
    );
    service.stopping();
    let summary = summary.map_err(|e| match e {
        runner::RunError::Source(_) => bad(e),
        runner::RunError::Pipeline(PipelineError::Config(_)) => bad(e),
        _ => other(e),
    })?;
    print_summary(&summary, &pipeline);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_summary(s: &RunSummary, p: &Pipeline) {
    let fps = s.frames as f64 / s.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "\n{} frames, {} reports in {:.1} s ({fps:.1} frames/s); skipped {} undecodable, {} unusable, {} stale (dropped for a newer frame); {} report errors",
        s.frames,
        s.reports,
        s.elapsed.as_secs_f64(),
        s.bad_frames,
        s.skipped_frames,
        s.dropped_frames,
        s.report_errors
    );
    if s.capture_to_report.count() > 0 {
        eprintln!(
            "capture to report: p50 {:.1} ms, p99 {:.1} ms",
            ms(s.capture_to_report.quantile(0.5)),
            ms(s.capture_to_report.quantile(0.99))
        );
    }
    eprintln!(
        "mean per frame: source {:.2} ms, faces {:.2} ms, preprocess {:.2} ms, model {:.2} ms, report {:.2} ms",
        ms(s.source_times.mean()),
        ms(p.times.faces.mean()),
        ms(p.times.preprocess.mean()),
        ms(p.times.model.mean()),
        ms(s.report_times.mean())
    );
    let m = &p.truth.moments;
    if m.count() > 0 {
        let fmt = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        eprintln!(
            "against the synthetic ground truth ({} faces): valence CCC {} MSE {}, arousal CCC {} MSE {}, mean CCC {}",
            m.count(),
            fmt(m.valence.ccc()),
            fmt(m.valence.mse()),
            fmt(m.arousal.ccc()),
            fmt(m.arousal.mse()),
            fmt(m.mean_ccc())
        );
    }
}

/// What `affect-edge deploy` was asked.
pub struct DeployArgs {
    /// The exported model.
    pub model: std::path::PathBuf,
    /// Broker URL with the target topic.
    pub to: String,
    /// Deploy id.
    pub id: Option<String>,
    /// Seconds to wait for outcomes.
    pub timeout: f64,
    /// Seconds to discover a fleet.
    pub discover: f64,
    /// MQTT password.
    pub password: Option<String>,
}

/// `affect-edge deploy`: prints the table on stdout; fails (exit 1) when a device did not
/// make the model active.
pub fn deploy(args: DeployArgs) -> Result<(), Failure> {
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                bad(anyhow::anyhow!(
                    "--{what} must be a positive number of seconds"
                ))
            })
    };
    let mut broker = report::MqttConfig::from_url(&args.to).map_err(bad)?;
    if args.password.is_some() {
        broker.password = args.password;
    }
    let id = args.id.unwrap_or_else(|| {
        let name = args
            .model
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        format!("{name}@{}", deploy::now_unix_s())
    });
    let request = DeployRequest {
        model: args.model,
        broker,
        id,
        timeout: seconds(args.timeout, "timeout")?,
        discover: seconds(args.discover, "discover")?,
    };
    let answers =
        deploy::deploy(&request, &mut |line| tracing::info!("{line}")).map_err(|e| match e {
            DeployClientError::Connection { .. } => other(e),
            _ => bad(e),
        })?;
    print!("{}", deploy::render_table(&answers));
    let failed = answers.values().filter(|a| !a.is_active()).count();
    if failed > 0 {
        return Err(other(anyhow::anyhow!(
            "{failed} of {} device(s) did not make the model active",
            answers.len()
        )));
    }
    Ok(())
}

/// `affect-edge info MODEL`.
pub fn info(model: &Path) -> Result<(), Failure> {
    let contract = ModelContract::load(&model.into()).map_err(backend_failure)?;
    println!("{}", contract.summary());
    println!(
        "{}",
        serde_json::to_string_pretty(&contract.metadata).map_err(other)?
    );
    Ok(())
}

/// Arguments of `affect-edge bench`.
pub struct BenchArgs {
    /// Model file (default: bundled model for the first source).
    pub model: Option<std::path::PathBuf>,
    /// Frame sources, each timed on every backend; the first is the baseline of the ratios
    /// (e.g. one face, then 8, then a group). Image directories repeat until `frames`.
    pub sources: Vec<SourceSpec>,
    /// Faces mode (default for the source).
    pub faces: Option<FacesSpec>,
    /// Frames to time per source and backend.
    pub frames: u64,
    /// Threads sharing a frame's faces (0 = one per core).
    pub threads: usize,
    /// `face_models.redetect_every` (default: the configuration's default).
    pub redetect_every: Option<u32>,
    /// `face_models.regions_per_frame` (default: the configuration's default).
    pub regions_per_frame: Option<u32>,
    /// `face_models.landmarks_per_frame` (default: the configuration's default).
    pub landmarks_per_frame: Option<u32>,
    /// Image files decoded once and served from memory in a loop ([`InMemoryLoop`]).
    pub in_memory: bool,
}

/// One timed (backend, source) run of `affect-edge bench`.
struct BenchRun {
    backend: String,
    /// Mean frame time without the wait for the source (the decode or render not overlapped
    /// with the pipeline; image files are decoded ahead on their own thread), ms.
    frame_ms: f64,
    /// Mean affect-model time, ms.
    model_ms: f64,
}

/// `affect-edge bench`: the whole pipeline with a sink reporter, for every source on every
/// available backend (every network on that backend): per-stage times, frames/s, latency, and
/// how the frame time grows from the first source to the others.
pub fn bench(args: BenchArgs) -> Result<(), Failure> {
    let mut runs: Vec<Vec<BenchRun>> = Vec::new();
    for spec in &args.sources {
        let config = EdgeConfig {
            source: spec.clone(),
            model: args.model.clone(),
            faces: args.faces,
            threads: args.threads,
            max_frames: args.frames,
            images: affect_edge::source::ImageDirConfig {
                // In memory: one pass is recorded, then looped.
                repeat: !args.in_memory,
                ..EdgeConfig::default().images
            },
            face_models: FacesConfig {
                redetect_every: args
                    .redetect_every
                    .unwrap_or(FacesConfig::default().redetect_every),
                regions_per_frame: args
                    .regions_per_frame
                    .unwrap_or(FacesConfig::default().regions_per_frame),
                landmarks_per_frame: args
                    .landmarks_per_frame
                    .unwrap_or(FacesConfig::default().landmarks_per_frame),
                ..FacesConfig::default()
            },
            ..EdgeConfig::default()
        };
        let in_memory = if args.in_memory && matches!(spec, SourceSpec::Images(_)) {
            format!(" ({})", InMemoryLoop::NOTE)
        } else {
            String::new()
        };
        println!("source {}{in_memory}", String::from(spec.clone()));
        runs.push(bench_source(&config, &args)?);
    }
    let Some((first, rest)) = runs.split_first() else {
        return Ok(());
    };
    for backend in first {
        for (spec, others) in args.sources.iter().skip(1).zip(rest) {
            if let Some(other) = others.iter().find(|r| r.backend == backend.backend) {
                println!(
                    "{}: frame time {} / {}: {:.2}×",
                    backend.backend,
                    String::from(spec.clone()),
                    String::from(args.sources[0].clone()),
                    other.frame_ms / backend.frame_ms.max(1e-9)
                );
            }
        }
    }
    Ok(())
}

/// Times one source on every available backend.
fn bench_source(config: &EdgeConfig, args: &BenchArgs) -> Result<Vec<BenchRun>, Failure> {
    let model = config.model_file();
    let faces = config.faces_mode();
    // tract refuses int8 models (it would emulate them in float): time them on ONNX Runtime.
    let int8 = ModelContract::load(&model)
        .map_err(backend_failure)?
        .metadata
        .precision
        == affect_shared::metadata::Precision::Int8;
    let mut results = Vec::new();
    for kind in [BackendKind::Tract, BackendKind::Onnxruntime] {
        if int8 && kind == BackendKind::Tract {
            eprintln!("{kind:?}: skipped (int8 model: ONNX Runtime only)");
            continue;
        }
        let backend = match backend::load(kind, &model, args.threads, &config.onnxruntime) {
            Ok(b) => b,
            Err(e @ BackendError::Unavailable(_)) => {
                eprintln!("{kind:?}: skipped ({e})");
                continue;
            }
            Err(e) => return Err(backend_failure(e)),
        };
        let contract = backend.contract().clone();
        let mut source = open_source(config, faces, contract.face_size as u32)?;
        // The synthetic camera is a renderer, not capture work a device does: render the clip
        // first and time the pipeline on its replay. Cameras and image files are timed live,
        // image files without their decoding when asked (`--in-memory`).
        match config.source {
            SourceSpec::Synthetic(_) => {
                source =
                    Box::new(Replay::record(source.as_mut(), Some(args.frames)).map_err(other)?);
            }
            SourceSpec::Images(_) if args.in_memory => {
                source = Box::new(InMemoryLoop::record(source.as_mut(), args.frames).map_err(bad)?);
            }
            _ => {}
        }
        let mut pipeline = Pipeline::new(
            face_mode(config, faces, contract.landmarks, kind)?,
            backend,
            PipelineConfig {
                threads: args.threads,
                ..PipelineConfig::default()
            },
        )
        .map_err(bad)?;
        let mut reporters: Vec<Box<dyn Reporter>> =
            vec![Box::new(JsonLinesReporter::new(std::io::sink(), "sink"))];
        let stop = AtomicBool::new(false);
        let limits = RunLimits {
            max_frames: args.frames,
            ..RunLimits::default()
        };
        let telemetry = Telemetry::new(
            contract.identity(),
            pipeline.backend_name(),
            HealthPolicy::default(),
        );
        let s = runner::run(
            source.as_mut(),
            &mut pipeline,
            &mut reporters,
            &telemetry,
            &stop,
            limits,
            None,
        )
        .map_err(other)?;
        let source_ms = ms(s.source_times.mean());
        let faces_ms = ms(pipeline.times.faces.mean());
        let model_ms = ms(pipeline.times.model.mean());
        let frame_ms = ms(s.frame_times.mean());
        let pipeline_ms = frame_ms - source_ms;
        println!(
            "  backend {} (every network): {}",
            pipeline.backend_name(),
            contract.summary()
        );
        println!(
            "    faces per frame {:.1}; stages (mean ms): source wait {source_ms:.2}  faces \
             (detector + landmarks) {faces_ms:.2}  preprocess {:.2}  model {model_ms:.2}  report {:.3}",
            s.reports as f64 / s.frames.max(1) as f64,
            ms(pipeline.times.preprocess.mean()),
            ms(s.report_times.mean())
        );
        if let Some(f) = pipeline.finder_stats() {
            println!(
                "    detector on {:.3} of the frames, {:.1} regions per frame ({} regions in {} \
                 frames, {} faces looked lost; redetect_every {}, regions_per_frame {}, \
                 landmarks_per_frame {})",
                f.detections as f64 / f.frames.max(1) as f64,
                f.regions as f64 / f.frames.max(1) as f64,
                f.regions,
                f.frames,
                f.lost,
                config.face_models.redetect_every,
                config.face_models.regions_per_frame,
                config.face_models.landmarks_per_frame
            );
        }
        // A replayed clip carries the renderer's timestamps, not capture times.
        let capture = match config.source {
            SourceSpec::Synthetic(_) => "n/a (replayed clip)".to_owned(),
            _ => format!(
                "p50 {:.1} ms p99 {:.1} ms",
                ms(s.capture_to_report.quantile(0.5)),
                ms(s.capture_to_report.quantile(0.99))
            ),
        };
        println!(
            "    end to end: {} frames at {:.1} frames/s ({:.1} without the source), frame p50 \
             {:.2} ms p99 {:.2} ms, capture to report {capture}",
            s.frames,
            s.frames as f64 / s.elapsed.as_secs_f64().max(1e-9),
            1e3 / pipeline_ms.max(1e-9),
            ms(s.frame_times.quantile(0.5)),
            ms(s.frame_times.quantile(0.99)),
        );
        println!(
            "    outside the source and the networks: {:.0} % of the frame time; outside the \
             affect model: {:.0} %",
            100.0 * (pipeline_ms - faces_ms - model_ms) / frame_ms.max(1e-9),
            100.0 * (frame_ms - model_ms) / frame_ms.max(1e-9)
        );
        results.push(BenchRun {
            backend: pipeline.backend_name(),
            frame_ms: pipeline_ms,
            model_ms,
        });
    }
    if let [a, b] = results.as_slice() {
        println!(
            "  model time {} / {}: {:.2}× (>1: {} faster)",
            a.backend,
            b.backend,
            a.model_ms / b.model_ms.max(1e-9),
            b.backend
        );
    }
    Ok(results)
}
