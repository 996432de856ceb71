//! The device status a running edge runtime publishes: the retained JSON message on MQTT
//! `<topic>/status` (its last will is [`DeviceStatus::offline`]) and the `device` part of the
//! HTTP status. One definition, so subscribers, the page and the tests read the same fields.

use serde::{Deserialize, Serialize};

use crate::deploy::DeployOutcome;

/// Whether the device is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Running and connected.
    Online,
    /// Stopped cleanly, or (as the broker's last will) vanished without a goodbye.
    Offline,
}

/// Which model the device runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// SHA-256 of the ONNX file, lowercase hex: the identity a fleet compares against.
    pub sha256: String,
    /// When the model was exported (its metadata's `created`), as the exporter wrote it.
    pub version: String,
    /// Backbone the model was trained with.
    pub backbone: String,
    /// Since when it is the device's active model, seconds since the Unix epoch (absent outside
    /// a running device, e.g. in `affect-edge info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix_s: Option<u64>,
}

/// The retained status message; everything but `state` is absent in the last will.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Online or offline.
    pub state: DeviceState,
    /// The active model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelIdentity>,
    /// Frames processed per second over the last interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Seconds since the runtime started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// Version of the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The last deploy the device handled (also across restarts), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployOutcome>,
}

impl DeviceStatus {
    /// The bare offline message (the MQTT last will): `{"state":"offline"}`.
    pub fn offline() -> Self {
        Self {
            state: DeviceState::Offline,
            model: None,
            fps: None,
            uptime_s: None,
            version: None,
            deploy: None,
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the status holds only strings and numbers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_is_the_bare_state_and_online_round_trips() {
        assert_eq!(DeviceStatus::offline().to_json(), r#"{"state":"offline"}"#);
        let online = DeviceStatus {
            state: DeviceState::Online,
            model: Some(ModelIdentity {
                sha256: "ab".repeat(32),
                version: "2026-12-01T10:00:00Z".into(),
                backbone: "vgg16".into(),
                since_unix_s: Some(1_764_000_000),
            }),
            fps: Some(29.5),
            uptime_s: Some(12),
            version: Some("0.1.0".into()),
            deploy: Some(DeployOutcome {
                id: "d-1".into(),
                sha256: "cd".repeat(32),
                result: crate::deploy::DeployResult::Rejected,
                reason: Some("SHA-256 mismatch".into()),
                at_unix_s: 1_764_000_100,
            }),
        };
        let json = online.to_json();
        assert!(
            json.starts_with(r#"{"state":"online","model":{"sha256":"abab"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DeviceStatus>(&json).unwrap(), online);
    }
}
