//! Reports over MQTT (rumqttc, MQTT 3.1.1).
//!
//! * **Topics.** Every report is one QoS 1 JSON message on `<topic>` itself (the schema of
//!   [`to_json_line`]; the `track` field says which face). One topic rather than
//!   `<topic>/<track>`: a subscriber needs one subscription, and brokers keep the order of a
//!   client's messages per topic, so reports of all faces arrive in capture order. The device
//!   state is the retained JSON message on `<topic>/status` ([`DeviceStatus`]):
//!   `{"state":"online","model":{…},"fps":…,"uptime_s":…,"version":…}` after every connect and
//!   whenever the runtime refreshes it, `{"state":"offline"}` on a clean shutdown and, as the
//!   last will, when the device vanishes without one.
//! * **Delivery.** Reports wait in a bounded queue until the broker acknowledges them (PUBACK).
//!   While the broker is unreachable the reporter reconnects with exponential backoff; once it is
//!   back, everything queued is published again in order. Delivery is at least once: a report
//!   whose PUBACK was lost in the break is sent twice (same `frame`/`track`).
//! * **Durability.** With a state directory ([`MqttReporter::open`]) the queue is on disk, in
//!   `<state_dir>/queue/<broker and topic>/` (see [`super::journal`] for the format and the
//!   fsync policy): it survives a crash or a power cut and is delivered, in order, by the next
//!   run; it holds up to `queue_bytes` and drops its oldest segment beyond. Without one it is in
//!   memory and holds `queue` reports. Either way the oldest reports are dropped and counted
//!   ([`MqttStats::dropped`]) when it is full.
//! * **Security.** Username/password, and TLS (rustls) with a CA file and optional client
//!   certificate.
//!
//! The network runs on a background thread; [`Reporter::report`] never blocks on the network.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use rumqttc::ConnectReturnCode;
use rumqttc::{
    Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};

use affect_shared::status::{DeviceState, DeviceStatus};

use super::journal::{self, Journal};
use super::outbox::{MemoryStore, Outbox, Publication, Store};
use super::{Report, ReportError, Reporter, ReporterHealth, check_finite, to_json_line};
use crate::backoff::{Backoff, BackoffConfig};
use crate::deploy::CommandSink;

/// TLS settings of the broker connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that require one (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// MQTT reporter settings; maps onto a `[report.mqtt]`-style TOML table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 usually for TLS).
    pub port: u16,
    /// Reports go to this topic, the status to `<topic>/status`.
    pub topic: String,
    /// Client id; default `affect-edge-<pid>`.
    pub client_id: Option<String>,
    /// User name for brokers that require a login.
    pub username: Option<String>,
    /// Password (with `username`).
    pub password: Option<String>,
    /// TLS; plain TCP when absent.
    pub tls: Option<MqttTlsConfig>,
    /// Keep-alive interval, seconds (≥ 1).
    pub keep_alive_s: u64,
    /// Time allowed for TCP + TLS + CONNECT/CONNACK, seconds (≥ 1).
    pub connect_timeout_s: u64,
    /// Unacknowledged reports kept in memory (no state directory); the oldest is dropped beyond.
    pub queue: usize,
    /// Bytes of the on-disk queue (with a state directory); the oldest reports are dropped
    /// beyond, a sixteenth of the bound at a time.
    pub queue_bytes: u64,
    /// Longest time between two fsyncs of the on-disk queue, ms: what a power cut can lose.
    pub fsync_interval_ms: u64,
    /// Reports published but not yet acknowledged at any time (QoS 1 window).
    pub inflight: u16,
    /// Reconnect schedule.
    pub backoff: BackoffConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 1883,
            topic: "affect".into(),
            client_id: None,
            username: None,
            password: None,
            tls: None,
            keep_alive_s: 30,
            connect_timeout_s: 5,
            queue: 1_000,
            queue_bytes: 64 * 1024 * 1024,
            fsync_interval_ms: 1_000,
            inflight: 32,
            backoff: BackoffConfig::default(),
        }
    }
}

impl MqttConfig {
    /// Settings from the CLI form `mqtt://[USER[:PASS]@]HOST[:PORT]/TOPIC`, or
    /// `mqtts://…/TOPIC?ca=CA.pem[&cert=C.pem&key=K.pem]` for TLS (port 8883 by default).
    pub fn from_url(url: &str) -> Result<Self, ReportError> {
        let bad = |message: &str| ReportError::Config {
            what: url.to_owned(),
            message: message.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(bad("expected mqtt://HOST[:PORT]/TOPIC or mqtts://…"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, topic) = rest
            .split_once('/')
            .ok_or_else(|| bad("no topic: expected …HOST[:PORT]/TOPIC"))?;
        let (login, address) = match authority.rsplit_once('@') {
            Some((login, address)) => (Some(login), address),
            None => (None, authority),
        };
        let (username, password) = match login {
            Some(login) => match login.split_once(':') {
                Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
                None => (Some(login.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad(&format!("port {port:?} is not a number 0–65535")))?,
            ),
            None => (address, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut tls_config = tls.then(|| MqttTlsConfig {
            ca_file: PathBuf::new(),
            client_cert: None,
            client_key: None,
        });
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(&format!("query item {pair:?} is not key=value")))?;
            let Some(t) = tls_config.as_mut() else {
                return Err(bad("query parameters (ca, cert, key) need mqtts://"));
            };
            match key {
                "ca" => t.ca_file = PathBuf::from(value),
                "cert" => t.client_cert = Some(PathBuf::from(value)),
                "key" => t.client_key = Some(PathBuf::from(value)),
                other => return Err(bad(&format!("unknown query parameter {other:?}"))),
            }
        }
        if tls_config
            .as_ref()
            .is_some_and(|t| t.ca_file.as_os_str().is_empty())
        {
            return Err(bad(
                "mqtts:// needs ?ca=CA.pem (the CA that signed the broker)",
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            topic: topic.to_owned(),
            username,
            password,
            tls: tls_config,
            ..Self::default()
        })
    }

    /// The status topic, `<topic>/status`.
    pub fn status_topic(&self) -> String {
        affect_shared::deploy::status_topic(&self.topic)
    }

    /// The topic deploy commands arrive on: `<topic>/cmd`.
    pub fn command_topic(&self) -> String {
        affect_shared::deploy::command_topic(&self.topic)
    }

    /// The broker as a URL without credentials, for messages.
    pub fn address(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.topic)
    }

    /// Checks the settings and builds the reporter's client options (with the retained
    /// `offline` status as last will); errors name the field or file.
    fn options(&self) -> Result<MqttOptions, ReportError> {
        self.check_topic()?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("affect-edge-{}", std::process::id()));
        let mut options = self.connect_options(client_id)?;
        options.set_last_will(LastWill::new(
            self.status_topic(),
            DeviceStatus::offline().to_json(),
            QoS::AtLeastOnce,
            true,
        ));
        Ok(options)
    }

    /// Refuses an empty topic or one with wildcards (a reporter publishes to it).
    fn check_topic(&self) -> Result<(), ReportError> {
        if self.topic.is_empty() || self.topic.contains(['+', '#', '\0']) {
            return Err(ReportError::Config {
                what: self.address(),
                message: format!(
                    "topic {:?} must be non-empty without wildcards (+, #)",
                    self.topic
                ),
            });
        }
        Ok(())
    }

    /// Checks the settings but the topic (which a subscriber may give with wildcards) and
    /// builds client options for `client_id` without a last will.
    pub(crate) fn connect_options(&self, client_id: String) -> Result<MqttOptions, ReportError> {
        let what = self.address();
        let bad = |message: String| ReportError::Config {
            what: what.clone(),
            message,
        };
        if self.keep_alive_s == 0 || self.connect_timeout_s == 0 {
            return Err(bad(
                "keep_alive_s and connect_timeout_s must be at least 1".into()
            ));
        }
        if self.queue == 0 || self.inflight == 0 || self.fsync_interval_ms == 0 {
            return Err(bad(
                "queue, inflight and fsync_interval_ms must be at least 1".into(),
            ));
        }
        if self.queue_bytes < journal::MIN_BYTES {
            return Err(bad(format!(
                "queue_bytes must be at least {} (64 KiB)",
                journal::MIN_BYTES
            )));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(bad("password given without username".into()));
        }
        self.backoff.validate().map_err(bad)?;
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options
            .set_keep_alive(Duration::from_secs(self.keep_alive_s))
            .set_clean_session(true)
            // The outbox, not rumqttc, decides what is resent; status messages take two slots.
            .set_inflight(self.inflight.saturating_add(2));
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            let read = |path: &PathBuf, role: &str| {
                std::fs::read(path).map_err(|e| ReportError::Config {
                    what: path.display().to_string(),
                    message: format!("cannot read TLS {role}: {e}"),
                })
            };
            let ca = read(&tls.ca_file, "CA file")?;
            if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
                return Err(ReportError::Config {
                    what: tls.ca_file.display().to_string(),
                    message: "TLS CA file holds no PEM certificate".into(),
                });
            }
            let client_auth = match (&tls.client_cert, &tls.client_key) {
                (Some(cert), Some(key)) => {
                    Some((read(cert, "client certificate")?, read(key, "client key")?))
                }
                (None, None) => None,
                _ => {
                    return Err(bad("tls.client_cert and tls.client_key go together".into()));
                }
            };
            // rumqttc builds its rustls config with the process-wide provider: make it ring
            // (the only one compiled in) explicitly; a second install is a harmless no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            }));
        }
        Ok(options)
    }

    /// Connects once as `affect-edge-doctor-<pid>` (so a running device with the same
    /// `client_id` is not thrown off, and without a last will, so its retained status stays),
    /// waits at most `timeout` for the broker's CONNACK and disconnects cleanly. Success means
    /// the broker is reachable, the TLS handshake (when configured) passed and the login was
    /// accepted.
    pub fn probe(&self, timeout: Duration) -> Result<(), ProbeError> {
        let address = self.address();
        self.check_topic().map_err(ProbeError::Config)?;
        let options = self
            .connect_options(format!("affect-edge-doctor-{}", std::process::id()))
            .map_err(ProbeError::Config)?;
        let (client, mut connection) = Client::new(options, 4);
        let mut network = connection.eventloop.network_options();
        network.set_connection_timeout(timeout.as_secs().max(1));
        connection.eventloop.set_network_options(network);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connection.recv_timeout(left) {
                Err(_) => {
                    return Err(ProbeError::Timeout {
                        address,
                        waited_ms: timeout.as_millis() as u64,
                    });
                }
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Err(ProbeError::Refused {
                            address,
                            code: ack.code,
                        });
                    }
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(ProbeError::from_connection(address, error)),
            }
        }
        // A clean DISCONNECT: the broker forgets the session; bounded, the verdict is in.
        if client.disconnect().is_ok() {
            let until = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(event)) =
                connection.recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// How far a [`MqttConfig::probe`] got.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The settings or the TLS files are unusable; nothing was sent.
    #[error(transparent)]
    Config(ReportError),
    /// No TCP connection: the name does not resolve, nothing listens, or the network is down.
    #[error("{address}: cannot connect: {source}")]
    Unreachable {
        /// Broker URL (without credentials).
        address: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// TCP connected but the TLS handshake failed (certificate, host name, not a TLS port).
    #[error("{address}: TLS handshake failed: {message}")]
    Tls {
        /// Broker URL.
        address: String,
        /// rustls' reason.
        message: String,
    },
    /// The broker answered the CONNECT with a refusal.
    #[error("{address}: the broker refused the connection: {code:?}")]
    Refused {
        /// Broker URL.
        address: String,
        /// The CONNACK return code.
        code: ConnectReturnCode,
    },
    /// The connection broke during the MQTT handshake (e.g. a TLS listener spoken to in
    /// plain TCP closes it).
    #[error("{address}: the connection closed during the MQTT handshake: {message}")]
    Closed {
        /// Broker URL.
        address: String,
        /// What rumqttc saw.
        message: String,
    },
    /// No CONNACK within the timeout.
    #[error("{address}: no answer within {waited_ms} ms")]
    Timeout {
        /// Broker URL.
        address: String,
        /// How long the probe waited.
        waited_ms: u64,
    },
}

impl ProbeError {
    fn from_connection(address: String, error: ConnectionError) -> Self {
        match error {
            ConnectionError::Io(source) => {
                use std::io::ErrorKind::{
                    BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof,
                };
                if matches!(
                    source.kind(),
                    ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
                ) {
                    ProbeError::Closed {
                        address,
                        message: source.to_string(),
                    }
                } else {
                    ProbeError::Unreachable { address, source }
                }
            }
            ConnectionError::Tls(e) => ProbeError::Tls {
                address,
                message: e.to_string(),
            },
            ConnectionError::ConnectionRefused(code) => ProbeError::Refused { address, code },
            ConnectionError::NetworkTimeout => ProbeError::Timeout {
                address,
                waited_ms: 0,
            },
            other => ProbeError::Closed {
                address,
                message: other.to_string(),
            },
        }
    }
}

/// Delivery counters of an [`MqttReporter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// Reports acknowledged by the broker.
    pub delivered: u64,
    /// Reports dropped because the queue was full.
    pub dropped: u64,
    /// Reports waiting (including those in flight).
    pub queued: usize,
    /// Bytes of the on-disk queue (0 in memory).
    pub queued_bytes: u64,
    /// Damaged records of the on-disk queue found and skipped.
    pub damaged: u64,
    /// Whether the client is connected now.
    pub connected: bool,
    /// Successful connects so far.
    pub connects: u64,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// State shared by the caller and the network thread.
struct State {
    outbox: Outbox,
    connected: bool,
    stopping: bool,
    connects: u64,
    last_error: Option<String>,
    /// The retained `online` status JSON, published after every connect.
    status: String,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a report is acknowledged, the connection changes, or stopping starts.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the network thread must not take reporting down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Publishes reports to an MQTT broker; see the module documentation for the contract.
pub struct MqttReporter {
    shared: Arc<Shared>,
    /// Fsyncs the on-disk queue every `fsync_interval_ms`.
    syncer: Option<JoinHandle<()>>,
    client: Client,
    topic: String,
    status_topic: String,
    window: usize,
    capacity: usize,
    what: String,
    network: Option<JoinHandle<()>>,
}

/// The queue directory of a reporter in `state_dir`: `queue/mqtt-<host>-<port>-<topic>-<hash>`,
/// readable and unique per broker and topic.
pub fn queue_dir(state_dir: &Path, config: &MqttConfig) -> PathBuf {
    let readable = format!("{}-{}-{}", config.host, config.port, config.topic);
    journal::queue_directory(state_dir, "mqtt", &readable, &config.address())
}

impl MqttReporter {
    /// [`MqttReporter::open`] with the queue in memory and no deploy commands.
    pub fn new(config: &MqttConfig) -> Result<Self, ReportError> {
        Self::open(config, None, None)
    }

    /// Starts the client and its network thread, with the queue on disk under `state_dir`
    /// ([`queue_dir`]; reports left there by an earlier run are sent first) or, without one, in
    /// memory. An unreachable broker is not an error (reports queue until it is reachable); an
    /// unusable configuration (bad topic, unreadable CA file) or queue directory is.
    ///
    /// With `commands`, the client subscribes to `<topic>/cmd` (QoS 1) after every connect and
    /// hands every message there to the sink (deploys; incoming packets may be as large as
    /// the sink's model limit).
    pub fn open(
        config: &MqttConfig,
        state_dir: Option<&Path>,
        commands: Option<CommandSink>,
    ) -> Result<Self, ReportError> {
        let mut options = config.options()?;
        if let Some(sink) = &commands {
            // Room for the deploy header and the topic; outgoing stays small (reports, status).
            let incoming = usize::try_from(sink.max_bytes())
                .unwrap_or(usize::MAX)
                .saturating_add(64 * 1024);
            options.set_max_packet_size(incoming, 64 * 1024);
        }
        let store: Box<dyn Store> = match state_dir {
            Some(state_dir) => {
                let dir = queue_dir(state_dir, config);
                let journal = Journal::open(&dir, config.queue_bytes).map_err(|source| {
                    ReportError::Queue {
                        what: config.address(),
                        source,
                    }
                })?;
                tracing::info!(
                    "{}: report queue on disk in {} (at most {} bytes, fsync every {} ms): {} \
                     report(s) from before, {} damaged record(s) skipped",
                    config.address(),
                    dir.display(),
                    journal.max_bytes(),
                    config.fsync_interval_ms,
                    journal.len(),
                    journal.damaged()
                );
                Box::new(journal)
            }
            None => {
                tracing::info!(
                    "{}: report queue in memory (no state directory), at most {} report(s)",
                    config.address(),
                    config.queue
                );
                Box::new(MemoryStore::new(config.queue))
            }
        };
        let durable = state_dir.is_some();
        let window = usize::from(config.inflight).min(config.queue);
        // Room for the whole window plus status messages, so `try_publish` never finds it full.
        let (client, mut connection) = Client::new(options, window + 8);
        let mut network = connection.eventloop.network_options();
        network.set_connection_timeout(config.connect_timeout_s);
        connection.eventloop.set_network_options(network);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                outbox: Outbox::new(store),
                connected: false,
                stopping: false,
                connects: 0,
                last_error: None,
                status: DeviceStatus {
                    state: DeviceState::Online,
                    model: None,
                    fps: None,
                    uptime_s: None,
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                    deploy: None,
                }
                .to_json(),
            }),
            changed: Condvar::new(),
        });
        let io = NetworkLoop {
            shared: shared.clone(),
            client: client.clone(),
            topic: config.topic.clone(),
            status_topic: config.status_topic(),
            window,
            what: config.address(),
            backoff: Backoff::new(config.backoff),
            commands: commands.map(|sink| (config.command_topic(), sink)),
        };
        let network = std::thread::Builder::new()
            .name("mqtt-reporter".into())
            .spawn(move || io.run(connection))
            .map_err(|source| ReportError::Io {
                what: config.address(),
                source,
            })?;
        let syncer = if durable {
            let shared = shared.clone();
            let interval = Duration::from_millis(config.fsync_interval_ms);
            let what = config.address();
            Some(
                std::thread::Builder::new()
                    .name("mqtt-queue-sync".into())
                    .spawn(move || sync_periodically(&shared, interval, &what))
                    .map_err(|source| ReportError::Io {
                        what: config.address(),
                        source,
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            shared,
            syncer,
            client,
            topic: config.topic.clone(),
            status_topic: config.status_topic(),
            window,
            capacity: config.queue,
            what: config.address(),
            network: Some(network),
        })
    }

    /// Delivery counters now.
    pub fn stats(&self) -> MqttStats {
        let state = self.shared.lock();
        MqttStats {
            delivered: state.outbox.delivered(),
            dropped: state.outbox.dropped(),
            queued: state.outbox.len(),
            queued_bytes: state.outbox.bytes().0,
            damaged: state.outbox.damaged(),
            connected: state.connected,
            connects: state.connects,
            last_error: state.last_error.clone(),
        }
    }

    /// Waits until the client is connected, at most `timeout`; returns whether it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.connected {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Drains for at most `timeout`, publishes the retained `offline` status, disconnects
    /// cleanly and stops the network thread. Returns the drain result.
    pub fn close(mut self, timeout: Duration) -> Result<(), ReportError> {
        let drained = self.drain(timeout);
        self.stop();
        drained
    }

    fn stop(&mut self) {
        {
            let mut state = self.shared.lock();
            if state.stopping {
                return;
            }
            state.stopping = true;
            if state.connected {
                let offline = self.client.try_publish(
                    self.status_topic.as_str(),
                    QoS::AtLeastOnce,
                    true,
                    DeviceStatus::offline().to_json(),
                );
                if offline.is_ok() {
                    state.outbox.mark_status_sent();
                }
                if let Err(e) = self.client.try_disconnect() {
                    tracing::debug!("{}: disconnect: {e}", self.what);
                }
            }
            self.shared.changed.notify_all();
        }
        if let Some(network) = self.network.take() {
            // Bounded wait: a connect attempt in progress ends within connect_timeout_s; past a
            // second the thread is left to finish on its own.
            let deadline = Instant::now() + Duration::from_secs(1);
            while !network.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if network.is_finished() && network.join().is_err() {
                tracing::error!("{}: network thread panicked", self.what);
            }
        }
        if let Some(syncer) = self.syncer.take()
            && syncer.join().is_err()
        {
            tracing::error!("{}: queue sync thread panicked", self.what);
        }
        // Clean shutdown: everything queued and acknowledged is made durable.
        let job = self.shared.lock().outbox.sync_job();
        if let Some(Err(e)) = job.map(journal::SyncJob::run) {
            tracing::warn!("{}: syncing the report queue: {e}", self.what);
        }
    }
}

impl Drop for MqttReporter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Reporter for MqttReporter {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        check_finite(report, &self.what)?;
        let payload = to_json_line(report).into_bytes();
        let mut state = self.shared.lock();
        state
            .outbox
            .push(&payload)
            .map_err(|source| ReportError::Queue {
                what: self.what.clone(),
                source,
            })?;
        if state.connected {
            publish_waiting(&mut state, &self.client, &self.topic, self.window);
        }
        Ok(())
    }

    fn drain(&mut self, timeout: Duration) -> Result<(), ReportError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.outbox.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReportError::Undelivered {
                    what: self.what.clone(),
                    pending: state.outbox.len(),
                    waited_ms: timeout.as_millis() as u64,
                    detail: match (&state.last_error, state.connected) {
                        (_, true) => "link up".into(),
                        (Some(e), false) => e.clone(),
                        (None, false) => "not connected yet".into(),
                    },
                });
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    fn health(&self) -> ReporterHealth {
        let state = self.shared.lock();
        let (queued_bytes, capacity_bytes) = state.outbox.bytes();
        ReporterHealth {
            name: self.what.clone(),
            connected: state.connected,
            delivered: state.outbox.delivered(),
            queued: state.outbox.len(),
            // A queue on disk is bounded in bytes only.
            capacity: if capacity_bytes > 0 { 0 } else { self.capacity },
            queued_bytes,
            capacity_bytes,
            damaged: state.outbox.damaged(),
            dropped: state.outbox.dropped(),
            reconnects: state.connects.saturating_sub(1),
            last_error: state.last_error.clone(),
        }
    }

    /// Keeps `status` as the retained `online` message: published now when connected (a full
    /// client channel skips this refresh; the next one or the next connect carries it), and
    /// again after every reconnect.
    fn publish_status(&mut self, status: &DeviceStatus) {
        let json = status.to_json();
        let mut state = self.shared.lock();
        if state.stopping {
            return;
        }
        if state.connected
            && self
                .client
                .try_publish(
                    self.status_topic.as_str(),
                    QoS::AtLeastOnce,
                    true,
                    json.clone(),
                )
                .is_ok()
        {
            state.outbox.mark_status_sent();
        }
        state.status = json;
    }
}

/// Runs the on-disk queue's sync jobs every `interval` until the reporter stops; the fsync
/// itself runs without the lock, so reporting never waits for the disk.
fn sync_periodically(shared: &Shared, interval: Duration, what: &str) {
    let mut next = Instant::now() + interval;
    loop {
        let job = {
            let mut state = shared.lock();
            while !state.stopping && Instant::now() < next {
                let left = next.saturating_duration_since(Instant::now());
                state = shared
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if state.stopping {
                return;
            }
            state.outbox.sync_job()
        };
        next = Instant::now() + interval;
        if let Some(Err(e)) = job.map(journal::SyncJob::run) {
            tracing::warn!("{what}: syncing the report queue: {e}");
        }
    }
}

/// Hands waiting reports to the client while the in-flight window has room.
fn publish_waiting(state: &mut State, client: &Client, topic: &str, window: usize) {
    while let Some((seq, payload)) = state.outbox.next_to_send(window) {
        match client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec()) {
            Ok(()) => state.outbox.mark_sent(seq),
            // Channel full: the rest goes out as acknowledgements free the window.
            Err(_) => break,
        }
    }
}

/// The network thread: drives rumqttc's event loop, keeps the outbox in step with it and waits
/// out the backoff between reconnects.
struct NetworkLoop {
    shared: Arc<Shared>,
    client: Client,
    topic: String,
    status_topic: String,
    window: usize,
    what: String,
    backoff: Backoff,
    /// The command topic and where its messages go.
    commands: Option<(String, CommandSink)>,
}

impl NetworkLoop {
    fn run(mut self, mut connection: Connection) {
        loop {
            let Ok(event) = connection.recv() else {
                return; // every client handle is gone
            };
            let mut state = self.shared.lock();
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    state.connected = true;
                    state.connects += 1;
                    self.backoff.succeeded();
                    if state.connects > 1 {
                        tracing::info!(
                            "{}: reconnected, {} report(s) to resend",
                            self.what,
                            state.outbox.len()
                        );
                    }
                    if self
                        .client
                        .try_publish(
                            self.status_topic.as_str(),
                            QoS::AtLeastOnce,
                            true,
                            state.status.clone(),
                        )
                        .is_ok()
                    {
                        state.outbox.mark_status_sent();
                    }
                    publish_waiting(&mut state, &self.client, &self.topic, self.window);
                    // A clean session forgets subscriptions: subscribe again on every connect.
                    if let Some((topic, _)) = &self.commands
                        && let Err(e) = self.client.try_subscribe(topic.as_str(), QoS::AtLeastOnce)
                    {
                        tracing::warn!("{}: cannot subscribe to {topic}: {e}", self.what);
                    }
                    self.shared.changed.notify_all();
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some((topic, sink)) = &self.commands
                        && publish.topic == *topic
                    {
                        sink.offer(publish.payload.to_vec(), topic);
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    state.outbox.on_outgoing_publish(pkid);
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(Publication::Report(_)) = state.outbox.on_puback(ack.pkid) {
                        publish_waiting(&mut state, &self.client, &self.topic, self.window);
                        self.shared.changed.notify_all();
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if state.stopping => return,
                Ok(_) => {}
                Err(error) => {
                    self.connection_lost(&mut state, &error);
                    if state.stopping {
                        return;
                    }
                    let wait = self.backoff.failed(Instant::now());
                    let until = Instant::now() + wait;
                    while !state.stopping && Instant::now() < until {
                        let left = until.saturating_duration_since(Instant::now());
                        state = self
                            .shared
                            .changed
                            .wait_timeout(state, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    if state.stopping {
                        return;
                    }
                }
            }
        }
    }

    fn connection_lost(&self, state: &mut State, error: &ConnectionError) {
        let message = error.to_string();
        if state.connected {
            tracing::warn!(
                "{}: connection lost ({message}); {} report(s) queued",
                self.what,
                state.outbox.len()
            );
        } else if state.last_error.as_deref() != Some(message.as_str()) {
            tracing::warn!("{}: cannot connect ({message})", self.what);
        }
        state.connected = false;
        state.last_error = Some(message);
        state.outbox.on_disconnect();
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_host_port_topic_login_and_tls_files() {
        let plain = MqttConfig::from_url("mqtt://broker.local:1884/lab/affect").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.topic.as_str()),
            ("broker.local", 1884, "lab/affect")
        );
        assert_eq!(plain.status_topic(), "lab/affect/status");
        assert!(plain.tls.is_none() && plain.username.is_none());
        let secure =
            MqttConfig::from_url("mqtts://dev:s3cret@10.0.0.2/affect?ca=/etc/ca.pem").unwrap();
        assert_eq!(secure.port, 8883);
        assert_eq!(
            (secure.username.as_deref(), secure.password.as_deref()),
            (Some("dev"), Some("s3cret"))
        );
        assert_eq!(secure.tls.unwrap().ca_file, PathBuf::from("/etc/ca.pem"));
    }

    #[test]
    fn each_broker_and_topic_has_its_own_readable_queue_directory() {
        let state = Path::new("/var/lib/affect");
        let a = MqttConfig::from_url("mqtt://broker.local:1884/lab/affect").unwrap();
        let dir = queue_dir(state, &a);
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(dir.starts_with("/var/lib/affect/queue"), "{dir:?}");
        assert!(
            name.starts_with("mqtt-broker.local-1884-lab_affect-"),
            "{name}"
        );
        // `lab/affect` and `lab_affect` read alike but are different queues.
        let b = MqttConfig::from_url("mqtt://broker.local:1884/lab_affect").unwrap();
        assert_ne!(queue_dir(state, &b), dir);
        let small = MqttConfig {
            queue_bytes: 1024,
            ..MqttConfig::default()
        };
        let err = small.options().unwrap_err().to_string();
        assert!(err.contains("queue_bytes must be at least 65536"), "{err}");
    }

    #[test]
    fn bad_urls_and_settings_say_what_is_wrong() {
        let cases = [
            ("http://x/t", "expected mqtt://"),
            ("mqtt://x", "no topic"),
            ("mqtt://x:99999/t", "port \"99999\""),
            ("mqtts://x/t", "needs ?ca="),
            ("mqtt://x/t?ca=/a", "need mqtts://"),
        ];
        for (url, expected) in cases {
            let err = MqttConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
        let wildcard = MqttConfig {
            topic: "a/#".into(),
            ..MqttConfig::default()
        };
        assert!(
            wildcard
                .options()
                .unwrap_err()
                .to_string()
                .contains("wildcards")
        );
        let missing_ca = MqttConfig {
            tls: Some(MqttTlsConfig {
                ca_file: PathBuf::from("/nonexistent/ca.pem"),
                client_cert: None,
                client_key: None,
            }),
            ..MqttConfig::default()
        };
        let err = missing_ca.options().unwrap_err().to_string();
        assert!(
            err.starts_with("/nonexistent/ca.pem: cannot read TLS CA file"),
            "{err}"
        );
    }
}
