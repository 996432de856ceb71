//! The workstation side of a deploy (`affect-edge deploy`): checks an exported model (its
//! export proof, its metadata), finds the target devices by their retained status, publishes
//! the deploy message to each one's `<base>/cmd`, and collects each device's outcome from its
//! status until all answered or the timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use affect_shared::deploy::{
    COMMAND_SUFFIX, DeployOutcome, DeployResult, STATUS_SUFFIX, command_topic, encode_deploy,
    status_topic,
};
use affect_shared::status::{DeviceState, DeviceStatus};
use rumqttc::{Client, Event, Packet, QoS};

use crate::backend::{ModelContract, sha256_hex};
use crate::report::{MqttConfig, ReportError};

/// Why a deploy could not be carried out at all (as opposed to a device refusing it).
#[derive(Debug, thiserror::Error)]
pub enum DeployClientError {
    /// The model file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model's export proof failed, or cannot be read.
    #[error("{}: {message}", path.display())]
    Unproven {
        /// The proof file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The model is not one a device would accept (metadata, contract).
    #[error(transparent)]
    Model(#[from] crate::backend::BackendError),
    /// The target is not a base topic or a `+` wildcard over base topics.
    #[error("target {target:?}: {message}")]
    Target {
        /// The target.
        target: String,
        /// What is wrong.
        message: String,
    },
    /// The broker settings are unusable.
    #[error(transparent)]
    Broker(#[from] ReportError),
    /// The broker could not be reached or refused us.
    #[error("{address}: {message}")]
    Connection {
        /// Broker URL.
        address: String,
        /// What happened.
        message: String,
    },
}

/// What the publisher learnt about one device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAnswer {
    /// The device reported this deploy's outcome.
    Outcome(DeployOutcome),
    /// Its retained status says it is offline: nothing was sent to it.
    Offline,
    /// No outcome within the timeout.
    NoAnswer,
}

impl DeviceAnswer {
    /// Whether the device now runs the deployed model.
    pub fn is_active(&self) -> bool {
        matches!(self, DeviceAnswer::Outcome(o) if o.result == DeployResult::Active)
    }
}

/// A deploy to run.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The exported model.
    pub model: PathBuf,
    /// Broker settings; `topic` is the target: one device's base topic (`affect/site/dev`)
    /// or a wildcard over base topics (`affect/site/+`, `affect/+/+`).
    pub broker: MqttConfig,
    /// The deploy id the devices echo.
    pub id: String,
    /// How long to wait for the devices' outcomes.
    pub timeout: Duration,
    /// How long to collect retained statuses when the target has wildcards.
    pub discover: Duration,
}

/// The export proof beside `model` (`<stem>.export.json` for `<stem>.onnx` and
/// `<stem>.int8.onnx`), if there is one.
pub fn proof_path(model: &Path) -> Option<PathBuf> {
    let name = model.file_name()?.to_str()?;
    let stem = name.strip_suffix(".onnx")?;
    let stem = stem.strip_suffix(".int8").unwrap_or(stem);
    let proof = model.with_file_name(format!("{stem}.export.json"));
    proof.is_file().then_some(proof)
}

/// Refuses a model whose export proof lists failures; `Ok(false)` when there is no proof.
pub fn check_proof(model: &Path) -> Result<bool, DeployClientError> {
    let Some(path) = proof_path(model) else {
        return Ok(false);
    };
    let unproven = |message: String| DeployClientError::Unproven {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| unproven(e.to_string()))?;
    let proof: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unproven(format!("not JSON: {e}")))?;
    let failures = proof
        .get("failures")
        .and_then(|f| f.as_array())
        .ok_or_else(|| unproven("no `failures` list".into()))?;
    if !failures.is_empty() {
        let listed: Vec<String> = failures
            .iter()
            .map(|f| f.as_str().map_or_else(|| f.to_string(), str::to_owned))
            .collect();
        return Err(unproven(format!(
            "the export proof failed, refusing to deploy: {}",
            listed.join("; ")
        )));
    }
    Ok(true)
}

/// The device base topics the target names, or `None` when it needs discovery.
fn fixed_target(target: &str) -> Result<Option<String>, DeployClientError> {
    let bad = |message: &str| DeployClientError::Target {
        target: target.to_owned(),
        message: message.to_owned(),
    };
    if target.is_empty() || target.contains('#') {
        return Err(bad(
            "expected a device's base topic (affect/SITE/DEVICE) or one with + wildcards \
             (affect/SITE/+); # is not allowed",
        ));
    }
    let levels: Vec<&str> = target.split('/').collect();
    if levels.iter().any(|l| l.contains('+') && *l != "+") {
        return Err(bad("+ must stand for a whole topic level"));
    }
    if levels.last() == Some(&STATUS_SUFFIX) || levels.last() == Some(&COMMAND_SUFFIX) {
        return Err(bad("give the base topic, without /status or /cmd"));
    }
    Ok((!levels.contains(&"+")).then(|| target.to_owned()))
}

/// Runs the deploy; `progress` hears what happens (for the log). Returns each device's
/// answer, by base topic.
pub fn deploy(
    request: &DeployRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<BTreeMap<String, DeviceAnswer>, DeployClientError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| DeployClientError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let bytes = read(&request.model)?;
    if !check_proof(&request.model)? {
        progress(&format!(
            "{}: no export proof beside it (model.export.json); deploying it unproven",
            request.model.display()
        ));
    }
    let contract = ModelContract::from_bytes(&bytes, &request.model.display().to_string())?;
    let sha256 = sha256_hex(&bytes);
    let target = request.broker.topic.clone();
    let fixed = fixed_target(&target)?;
    let message = encode_deploy(&request.id, &sha256, &bytes);
    progress(&format!(
        "deploy {:?}: {} ({}, {} bytes, SHA-256 {sha256}) to {}",
        request.id,
        request.model.display(),
        contract.summary(),
        bytes.len(),
        request.broker.address()
    ));

    let address = request.broker.address();
    let mut options = request
        .broker
        .connect_options(format!("affect-deploy-{}", std::process::id()))?;
    options.set_max_packet_size(1024 * 1024, message.len() + 64 * 1024);
    let (client, mut connection) = Client::new(options, 16);
    let connection_error = |message: String| DeployClientError::Connection {
        address: address.clone(),
        message,
    };
    client
        .subscribe(status_topic(&target), QoS::AtLeastOnce)
        .map_err(|e| connection_error(e.to_string()))?;

    let started = Instant::now();
    let connect_deadline = started + Duration::from_secs(request.broker.connect_timeout_s);
    let mut statuses: BTreeMap<String, DeviceStatus> = BTreeMap::new();
    let mut answers: BTreeMap<String, DeviceAnswer> = BTreeMap::new();
    // Phases: waiting for SUBACK, discovering (retained statuses), then waiting for outcomes.
    let mut subscribed_at: Option<Instant> = None;
    let mut last_discovered = started;
    let mut sent = false;
    let mut outcome_deadline = None;
    loop {
        let now = Instant::now();
        if !sent {
            let ready = match subscribed_at {
                None if now >= connect_deadline => {
                    return Err(connection_error(format!(
                        "no subscription acknowledged within {} s",
                        request.broker.connect_timeout_s
                    )));
                }
                None => false,
                Some(at) => {
                    fixed.is_some()
                        // Retained statuses arrive right after the SUBACK: a quiet half
                        // second, or the discovery time, ends the discovery.
                        || now >= at + request.discover
                        || now >= last_discovered.max(at) + Duration::from_millis(500)
                }
            };
            if ready {
                let devices: Vec<String> = match &fixed {
                    Some(device) => vec![device.clone()],
                    None => statuses.keys().cloned().collect(),
                };
                if devices.is_empty() {
                    return Err(DeployClientError::Target {
                        target,
                        message: "no device has a retained status under it".into(),
                    });
                }
                for device in devices {
                    let offline = statuses
                        .get(&device)
                        .is_some_and(|s| s.state == DeviceState::Offline);
                    if offline {
                        progress(&format!("{device}: offline, not deployed"));
                        answers.insert(device, DeviceAnswer::Offline);
                        continue;
                    }
                    client
                        .publish(
                            command_topic(&device),
                            QoS::AtLeastOnce,
                            false,
                            message.clone(),
                        )
                        .map_err(|e| connection_error(e.to_string()))?;
                    progress(&format!("{device}: deploy published"));
                    answers.insert(device, DeviceAnswer::NoAnswer);
                }
                sent = true;
                outcome_deadline = Some(Instant::now() + request.timeout);
            }
        }
        if sent && !answers.values().any(|a| *a == DeviceAnswer::NoAnswer) {
            break;
        }
        let until = match outcome_deadline {
            Some(deadline) if now >= deadline => break,
            Some(deadline) => deadline,
            None => connect_deadline.max(now + Duration::from_millis(100)),
        };
        let wait = until
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        let event = match connection.recv_timeout(wait) {
            Err(_) => continue, // nothing within the slice: re-check the phase
            Ok(Err(e)) => return Err(connection_error(e.to_string())),
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(Packet::SubAck(_)) => subscribed_at = Some(Instant::now()),
            Event::Incoming(Packet::Publish(publish)) => {
                let Some(device) = publish
                    .topic
                    .strip_suffix(STATUS_SUFFIX)
                    .and_then(|t| t.strip_suffix('/'))
                else {
                    continue;
                };
                let Ok(status) = serde_json::from_slice::<DeviceStatus>(&publish.payload) else {
                    progress(&format!("{device}: unreadable status ignored"));
                    continue;
                };
                if !sent {
                    last_discovered = Instant::now();
                    statuses.insert(device.to_owned(), status);
                    continue;
                }
                if let (Some(answer), Some(outcome)) = (answers.get_mut(device), status.deploy)
                    && outcome.id == request.id
                    && *answer == DeviceAnswer::NoAnswer
                {
                    progress(&format!("{device}: {}", outcome.result.label()));
                    *answer = DeviceAnswer::Outcome(outcome);
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect();
    Ok(answers)
}

/// The answers as a table: device, result, SHA-256 (shortened), reason.
pub fn render_table(answers: &BTreeMap<String, DeviceAnswer>) -> String {
    let width = answers.keys().map(String::len).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:width$}  {:11}  {:12}  REASON\n",
        "DEVICE", "RESULT", "SHA-256"
    );
    for (device, answer) in answers {
        let (result, sha, reason) = match answer {
            DeviceAnswer::Outcome(o) => (
                o.result.label(),
                o.sha256.get(..12).unwrap_or(&o.sha256).to_owned(),
                o.reason.clone().unwrap_or_default(),
            ),
            DeviceAnswer::Offline => ("offline", String::new(), "its status says offline".into()),
            DeviceAnswer::NoAnswer => (
                "no answer",
                String::new(),
                "no outcome within the timeout".into(),
            ),
        };
        out.push_str(&format!(
            "{device:width$}  {result:11}  {sha:12}  {reason}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_base_topic_or_plus_wildcards_over_base_topics() {
        assert_eq!(
            fixed_target("affect/a/k1").unwrap().as_deref(),
            Some("affect/a/k1")
        );
        assert_eq!(fixed_target("affect/a/+").unwrap(), None);
        assert_eq!(fixed_target("affect/+/+").unwrap(), None);
        for bad in [
            "",
            "affect/#",
            "affect/a+/k",
            "affect/a/k/status",
            "affect/a/k/cmd",
        ] {
            assert!(fixed_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failed_export_proof_is_refused_and_a_missing_one_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.int8.onnx");
        std::fs::write(&model, b"x").unwrap();
        assert!(!check_proof(&model).unwrap(), "no proof");
        let proof = dir.path().join("m.export.json");
        std::fs::write(&proof, r#"{"failures":[]}"#).unwrap();
        assert!(check_proof(&model).unwrap());
        std::fs::write(&proof, r#"{"failures":["tract vs torch 0.3 > 1e-4"]}"#).unwrap();
        let refused = check_proof(&model).unwrap_err().to_string();
        assert!(
            refused.contains("m.export.json") && refused.contains("tract vs torch"),
            "{refused}"
        );
    }

    #[test]
    fn the_table_has_one_row_per_device_with_the_reason() {
        let answers = BTreeMap::from([
            (
                "affect/a/k1".to_owned(),
                DeviceAnswer::Outcome(DeployOutcome {
                    id: "d".into(),
                    sha256: "ab".repeat(32),
                    result: DeployResult::Rejected,
                    reason: Some("SHA-256 mismatch".into()),
                    at_unix_s: 0,
                }),
            ),
            ("affect/a/k2".to_owned(), DeviceAnswer::NoAnswer),
        ]);
        let table = render_table(&answers);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("affect/a/k1  rejected") && lines[1].ends_with("SHA-256 mismatch")
        );
        assert!(lines[2].contains("no answer"));
    }
}
