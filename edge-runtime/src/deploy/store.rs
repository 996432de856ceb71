//! The device's model store under the state directory:
//!
//! ```text
//! <state_dir>/models/<sha256>.onnx   deployed models, by content (the active one and the previous)
//! <state_dir>/models/active.json     which one is active, since when, and the one before it
//! <state_dir>/models/last-deploy.json the last deploy's outcome (shown in the status after a restart)
//! <state_dir>/models/incoming/       the watched drop directory
//! ```
//!
//! Every file is written to a temporary name, fsynced, renamed over the old one and the
//! directory fsynced: a power cut leaves the old file or the new one, never a mix, so a reboot
//! always finds the last model that passed its trial.

use std::path::{Path, PathBuf};

use affect_shared::deploy::DeployOutcome;
use affect_shared::files::write_atomic;
use serde::{Deserialize, Serialize};

use super::DeployError;

/// The `active.json` pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivePointer {
    /// SHA-256 of the active model (`<sha256>.onnx` in the store).
    pub sha256: String,
    /// When it became active, seconds since the Unix epoch.
    pub since_unix_s: u64,
    /// The model it replaced, kept in the store while this one is active (`None` when that was
    /// not a stored model, e.g. the packaged default).
    pub previous: Option<String>,
}

/// Deployed models and the active pointer in `<state_dir>/models`.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// The store in `state_dir`, without touching the disk (for reading, e.g. by `doctor`).
    pub fn at(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("models"),
        }
    }

    /// Opens (creating) `<state_dir>/models` and its `incoming/` directory.
    pub fn open(state_dir: &Path) -> Result<Self, DeployError> {
        let store = Self::at(state_dir);
        for dir in [store.dir.clone(), store.incoming()] {
            std::fs::create_dir_all(&dir).map_err(|source| DeployError::Store {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(store)
    }

    /// The watched drop directory, `<state_dir>/models/incoming`.
    pub fn incoming(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    /// Where the model with `sha256` is (or would be) stored.
    pub fn model_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.onnx"))
    }

    /// Stores `bytes` as `<sha256>.onnx` (atomically; an existing copy is kept as it is).
    pub fn put(&self, sha256: &str, bytes: &[u8]) -> Result<PathBuf, DeployError> {
        let path = self.model_path(sha256);
        if !path.is_file() {
            write_atomic(&path, bytes).map_err(|source| DeployError::Store {
                path: path.clone(),
                source,
            })?;
        }
        Ok(path)
    }

    /// Removes a stored model that is neither active nor the previous one (a candidate that
    /// failed); a missing file is fine.
    pub fn discard(&self, sha256: &str) -> Result<(), DeployError> {
        if let Ok(Some(active)) = self.active()
            && (active.sha256 == sha256 || active.previous.as_deref() == Some(sha256))
        {
            return Ok(());
        }
        let path = self.model_path(sha256);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DeployError::Store { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The active pointer, `None` before the first successful deploy.
    pub fn active(&self) -> Result<Option<ActivePointer>, DeployError> {
        read_json(&self.dir.join("active.json"))
    }

    /// Makes `pointer` the active model (atomically), then removes stored models other than
    /// it and its previous one.
    pub fn set_active(&self, pointer: &ActivePointer) -> Result<(), DeployError> {
        write_json(&self.dir.join("active.json"), pointer)?;
        let keep = [Some(pointer.sha256.as_str()), pointer.previous.as_deref()];
        let entries = std::fs::read_dir(&self.dir).map_err(|source| DeployError::Store {
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(sha) = name.to_str().and_then(|n| n.strip_suffix(".onnx")) else {
                continue;
            };
            if !keep.contains(&Some(sha)) {
                let path = entry.path();
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(
                        "deploy: cannot remove the old model {}: {e}",
                        path.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// The last deploy's outcome, if any was recorded.
    pub fn last_outcome(&self) -> Result<Option<DeployOutcome>, DeployError> {
        read_json(&self.dir.join("last-deploy.json"))
    }

    /// Records the last deploy's outcome (atomically).
    pub fn record_outcome(&self, outcome: &DeployOutcome) -> Result<(), DeployError> {
        write_json(&self.dir.join("last-deploy.json"), outcome)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, DeployError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DeployError::Store {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DeployError::Damaged {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DeployError> {
    let json = serde_json::to_vec_pretty(value).expect("strings and numbers serialise");
    write_atomic(path, &json).map_err(|source| DeployError::Store {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use affect_shared::deploy::DeployResult;

    #[test]
    fn the_active_pointer_survives_reopening_and_old_models_are_pruned() {
        let state = tempfile::tempdir().unwrap();
        let store = ModelStore::open(state.path()).unwrap();
        assert!(store.incoming().is_dir());
        assert_eq!(store.active().unwrap(), None);
        for sha in ["a1", "b2", "c3"] {
            store.put(sha, sha.as_bytes()).unwrap();
        }
        let pointer = ActivePointer {
            sha256: "c3".into(),
            since_unix_s: 7,
            previous: Some("b2".into()),
        };
        store.set_active(&pointer).unwrap();
        let reopened = ModelStore::open(state.path()).unwrap();
        assert_eq!(reopened.active().unwrap(), Some(pointer));
        assert!(!store.model_path("a1").exists(), "pruned");
        assert!(store.model_path("b2").exists() && store.model_path("c3").exists());
        // The active and the previous model are never discarded; a failed candidate is.
        store.put("d4", b"d4").unwrap();
        for sha in ["b2", "c3", "d4"] {
            store.discard(sha).unwrap();
        }
        assert!(store.model_path("b2").exists() && store.model_path("c3").exists());
        assert!(!store.model_path("d4").exists());
        let no_temporaries = std::fs::read_dir(state.path().join("models"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"));
        assert!(no_temporaries);
    }

    #[test]
    fn a_damaged_pointer_is_an_error_naming_the_file() {
        let state = tempfile::tempdir().unwrap();
        let store = ModelStore::open(state.path()).unwrap();
        std::fs::write(state.path().join("models/active.json"), "{\"sha256\":").unwrap();
        let error = store.active().unwrap_err().to_string();
        assert!(error.contains("active.json"), "{error}");
        let outcome = DeployOutcome {
            id: "d".into(),
            sha256: "e5".into(),
            result: DeployResult::Rejected,
            reason: Some("why".into()),
            at_unix_s: 3,
        };
        store.record_outcome(&outcome).unwrap();
        assert_eq!(store.last_outcome().unwrap(), Some(outcome));
    }
}
