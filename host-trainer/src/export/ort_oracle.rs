//! ONNX Runtime and `onnx.checker`, reached through the checked-in script
//! `tests/oracles/onnx_ort.py` run by a Python that has `onnxruntime` and `onnx` (the project's
//! venv, `$AFFECT_PYTHON`). Used by the export proof when available.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the Python interpreter with `onnxruntime` and `onnx`.
pub const PYTHON_ENV: &str = "AFFECT_PYTHON";

/// Environment variable overriding the directory of the oracle scripts.
pub const ORACLES_ENV: &str = "AFFECT_ORACLES";

/// Why the oracle failed.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// Writing inputs or starting Python failed.
    #[error("onnx oracle: {0}")]
    Io(#[from] std::io::Error),
    /// The script exited with an error.
    #[error("onnx oracle `{command}` failed: {stderr}")]
    Failed {
        /// Sub-command.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// The script printed something unexpected.
    #[error("onnx oracle printed unreadable output: {0}")]
    Output(#[from] serde_json::Error),
}

/// What ONNX Runtime produced for a clip.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct OrtRun {
    /// `[steps][batch·2]` valence, arousal.
    pub va: Vec<Vec<f32>>,
    /// Operator counts of the graph ONNX Runtime actually executes (when requested).
    pub ops: Option<BTreeMap<String, u64>>,
}

/// The oracle script and its interpreter.
#[derive(Debug, Clone)]
pub struct OrtOracle {
    python: PathBuf,
    script: PathBuf,
}

impl OrtOracle {
    /// The oracle from the environment: `$AFFECT_PYTHON` and the script in `$AFFECT_ORACLES` or
    /// the source tree's `tests/oracles/`. `Err` says why it is unavailable.
    pub fn from_env() -> Result<Self, String> {
        let python = std::env::var_os(PYTHON_ENV)
            .map(PathBuf::from)
            .ok_or_else(|| format!("${PYTHON_ENV} is not set (source tests/setup.sh)"))?;
        let dir = std::env::var_os(ORACLES_ENV).map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracles"),
            PathBuf::from,
        );
        let script = dir.join("onnx_ort.py");
        if !script.is_file() {
            return Err(format!("oracle script {} not found", script.display()));
        }
        Ok(Self { python, script })
    }

    fn call(&self, args: &[&std::ffi::OsStr]) -> Result<serde_json::Value, OracleError> {
        let out = Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .output()?;
        let command = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !out.status.success() && out.stdout.is_empty() {
            return Err(OracleError::Failed {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `onnx.checker.check_model(full_check=True)`: `Ok(None)` when the model passes, else the
    /// checker's message.
    pub fn check(&self, model: &Path) -> Result<Option<String>, OracleError> {
        let report = self.call(&["check".as_ref(), model.as_os_str()])?;
        let verdict = report
            .get(model.to_string_lossy().as_ref())
            .and_then(|v| v.as_str())
            .unwrap_or("no verdict")
            .to_owned();
        Ok((verdict != "ok").then_some(verdict))
    }

    /// Runs `model` on `steps` frames of `batch` faces (`faces` `[steps, batch, 3, S, S]`,
    /// `landmarks` `[steps, batch, 136]` when the model takes them), state carried.
    pub fn run(
        &self,
        model: &Path,
        faces: &[f32],
        landmarks: Option<&[f32]>,
        steps: usize,
        batch: usize,
        with_ops: bool,
    ) -> Result<OrtRun, OracleError> {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, values: &[f32]| -> std::io::Result<PathBuf> {
            let path = dir.path().join(name);
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&path, bytes)?;
            Ok(path)
        };
        let faces_path = write("faces.f32", faces)?;
        let landmarks_path = match landmarks {
            Some(l) => write("landmarks.f32", l)?,
            None => PathBuf::from("-"),
        };
        let (steps, batch) = (steps.to_string(), batch.to_string());
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "run".as_ref(),
            model.as_os_str(),
            faces_path.as_os_str(),
            landmarks_path.as_os_str(),
            steps.as_ref(),
            batch.as_ref(),
        ];
        if with_ops {
            args.push("--int8-ops".as_ref());
        }
        Ok(serde_json::from_value(self.call(&args)?)?)
    }
}
