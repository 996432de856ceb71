//! Redeploying a model to running devices: the fleet topic scheme, the deploy message a
//! workstation publishes on a device's command topic, and the outcome a device reports back in
//! its retained status ([`crate::status::DeviceStatus::deploy`]). One definition for the
//! publisher (`affect-edge deploy`) and the device.
//!
//! **Topics.** A device configured with `[fleet] site = "S"`, `device = "D"` uses the base
//! topic `affect/S/D` ([`fleet_topic`]): reports on the base topic itself, the retained status
//! on `<base>/status` ([`status_topic`]), deploy commands on `<base>/cmd` ([`command_topic`]).
//! A fleet is addressed with MQTT wildcards on the base: `affect/S/+` is every device of site
//! S, `affect/+/+` every device.
//!
//! **Deploy message.** One QoS 1 message: the line `affect-deploy/1`, one line of JSON
//! ([`DeployHeader`]: deploy id, SHA-256 and size of the model), then the model's bytes as they
//! are. Binary rather than base64 in JSON, so a 64 MiB model is a 64 MiB message.

use serde::{Deserialize, Serialize};

/// First line of every deploy message (the format's name and version).
pub const DEPLOY_MAGIC: &str = "affect-deploy/1";

/// Suffix of the retained status topic.
pub const STATUS_SUFFIX: &str = "status";

/// Suffix of the command topic.
pub const COMMAND_SUFFIX: &str = "cmd";

/// The base topic of device `device` at site `site`: `affect/<site>/<device>`.
pub fn fleet_topic(site: &str, device: &str) -> String {
    format!("affect/{site}/{device}")
}

/// `<base>/status`.
pub fn status_topic(base: &str) -> String {
    format!("{base}/{STATUS_SUFFIX}")
}

/// `<base>/cmd`.
pub fn command_topic(base: &str) -> String {
    format!("{base}/{COMMAND_SUFFIX}")
}

/// Whether `name` is usable as a site or device id: 1–64 characters of `[A-Za-z0-9_.-]`
/// (no MQTT wildcards or separators).
pub fn valid_fleet_id(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The JSON line of a deploy message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployHeader {
    /// Chosen by the publisher; the device echoes it in its status so the publisher can tell
    /// its deploy's outcome from an earlier one.
    pub id: String,
    /// SHA-256 of the model bytes, lowercase hex.
    pub sha256: String,
    /// Number of model bytes after the header.
    pub size: u64,
}

/// Why a deploy message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployMessageError {
    /// The first line is not [`DEPLOY_MAGIC`].
    #[error("not a deploy message (expected the first line {DEPLOY_MAGIC:?})")]
    NotADeploy,
    /// The header line is missing or not the expected JSON.
    #[error("deploy header: {0}")]
    Header(String),
    /// The model is larger than the device accepts.
    #[error("model of {size} bytes exceeds the device's limit of {limit} bytes")]
    TooLarge {
        /// Size the header announces.
        size: u64,
        /// The device's `[deploy] max_bytes`.
        limit: u64,
    },
    /// The bytes after the header are not as many as the header says.
    #[error("the header announces {announced} model bytes, the message carries {carried}")]
    SizeMismatch {
        /// `size` of the header.
        announced: u64,
        /// Bytes after the header.
        carried: u64,
    },
}

/// Builds a deploy message for `model`.
pub fn encode_deploy(id: &str, sha256: &str, model: &[u8]) -> Vec<u8> {
    let header = DeployHeader {
        id: id.to_owned(),
        sha256: sha256.to_owned(),
        size: model.len() as u64,
    };
    let json = serde_json::to_string(&header).expect("the header holds strings and a number");
    let mut out = Vec::with_capacity(DEPLOY_MAGIC.len() + json.len() + 2 + model.len());
    out.extend_from_slice(DEPLOY_MAGIC.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(json.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(model);
    out
}

/// Splits a deploy message into its header and model bytes, refusing models above
/// `max_bytes`. The SHA-256 is the receiver's to check.
pub fn decode_deploy(
    message: &[u8],
    max_bytes: u64,
) -> Result<(DeployHeader, &[u8]), DeployMessageError> {
    let rest = message
        .strip_prefix(DEPLOY_MAGIC.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\n"))
        .ok_or(DeployMessageError::NotADeploy)?;
    let end = rest
        .iter()
        .take(4096)
        .position(|&b| b == b'\n')
        .ok_or_else(|| DeployMessageError::Header("no header line within 4 KiB".into()))?;
    let header: DeployHeader = serde_json::from_slice(&rest[..end])
        .map_err(|e| DeployMessageError::Header(e.to_string()))?;
    if header.size > max_bytes {
        return Err(DeployMessageError::TooLarge {
            size: header.size,
            limit: max_bytes,
        });
    }
    let model = &rest[end + 1..];
    if model.len() as u64 != header.size {
        return Err(DeployMessageError::SizeMismatch {
            announced: header.size,
            carried: model.len() as u64,
        });
    }
    Ok((header, model))
}

/// How a deploy ended on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    /// Verified, swapped in, passed its first frames, and made the persistent active model.
    Active,
    /// Refused before use (checksum, metadata, contract, probe inference, size…); the previous
    /// model kept serving.
    Rejected,
    /// Swapped in, then failed on live frames; the previous model was restored.
    RolledBack,
}

impl DeployResult {
    /// The lowercase name (`active`, `rejected`, `rolled_back`), as in JSON and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Rejected => "rejected",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// The last deploy a device handled, as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployOutcome {
    /// The deploy id (a watched file's name for deploys dropped into the incoming directory).
    pub id: String,
    /// SHA-256 of the candidate (of the bytes received, when they did not match the claim).
    pub sha256: String,
    /// What happened.
    pub result: DeployResult,
    /// Why it was rejected or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the outcome was decided, seconds since the Unix epoch.
    pub at_unix_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_message_round_trips_and_its_size_is_checked() {
        let model = b"\x08\x07onnx bytes\n with newlines";
        let message = encode_deploy("d-1", &"ab".repeat(32), model);
        let (header, bytes) = decode_deploy(&message, 1 << 20).unwrap();
        assert_eq!(header.id, "d-1");
        assert_eq!(header.size, model.len() as u64);
        assert_eq!(bytes, model);
        assert_eq!(
            decode_deploy(&message, 4),
            Err(DeployMessageError::TooLarge {
                size: model.len() as u64,
                limit: 4
            })
        );
        assert!(matches!(
            decode_deploy(&message[..message.len() - 1], 1 << 20),
            Err(DeployMessageError::SizeMismatch { .. })
        ));
        assert_eq!(
            decode_deploy(b"hello", 10),
            Err(DeployMessageError::NotADeploy)
        );
        assert!(matches!(
            decode_deploy(b"affect-deploy/1\n{\"id\":1}\n", 10),
            Err(DeployMessageError::Header(_))
        ));
    }

    #[test]
    fn fleet_topics_and_ids() {
        let base = fleet_topic("site-a", "kiosk-3");
        assert_eq!(base, "affect/site-a/kiosk-3");
        assert_eq!(status_topic(&base), "affect/site-a/kiosk-3/status");
        assert_eq!(command_topic(&base), "affect/site-a/kiosk-3/cmd");
        assert!(valid_fleet_id("kiosk_3.lobby"));
        for bad in ["", "a/b", "+", "#", "a b", &"x".repeat(65)] {
            assert!(!valid_fleet_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn outcomes_serialise_with_snake_case_results() {
        let outcome = DeployOutcome {
            id: "d-2".into(),
            sha256: "cd".repeat(32),
            result: DeployResult::RolledBack,
            reason: Some("non-finite output".into()),
            at_unix_s: 1,
        };
        let json = serde_json::to_string(&outcome).unwrap();
        assert!(json.contains(r#""result":"rolled_back""#), "{json}");
        assert_eq!(
            serde_json::from_str::<DeployOutcome>(&json).unwrap(),
            outcome
        );
    }
}
