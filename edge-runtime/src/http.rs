//! The device's HTTP endpoints, for the people and machines that watch it: `/healthz` (200 or
//! 503 with a JSON body saying why), `/metrics` (Prometheus / OpenMetrics text), `/status`
//! (the device status and health as JSON), and `/` — a live status page (plot of recent
//! valence and arousal per track, faces, frame rate, reporters, the model) fed by server-sent
//! events from `/events`. The page is embedded in the binary and loads nothing else. Off
//! unless `[http] listen` is set; numbers only, never images.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::telemetry::Telemetry;

/// Settings of the HTTP endpoints (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to serve on, e.g. `127.0.0.1:9464`; absent = no HTTP. Anything but loopback
    /// exposes the endpoints (unauthenticated) to the network: bind there only on purpose.
    pub listen: Option<SocketAddr>,
    /// `/healthz` fails when no frame was processed for this many seconds.
    pub stale_after_s: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            stale_after_s: 10.0,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("http: cannot listen on {addr}: {message}")]
pub struct HttpError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The socket error.
    pub message: String,
}

/// The status page (HTML, CSS and script in one file, no external assets).
const STATUS_PAGE: &str = include_str!("status_page.html");
/// Interval between server-sent events.
const EVENT_EVERY: Duration = Duration::from_secs(1);
/// Event streams served at once; more get 503 (each holds a thread).
const MAX_STREAMS: usize = 8;

/// What the request handlers share.
struct Context {
    telemetry: Arc<Telemetry>,
    stopping: AtomicBool,
    streams: AtomicUsize,
}

/// A running HTTP server; stops when dropped.
pub struct HttpServer {
    server: Arc<Server>,
    context: Arc<Context>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free one, see [`Self::local_addr`]) and serves `telemetry`
    /// on a background thread.
    pub fn start(addr: SocketAddr, telemetry: Arc<Telemetry>) -> Result<Self, HttpError> {
        let server = Server::http(addr).map_err(|e| HttpError {
            addr,
            message: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().ok_or_else(|| HttpError {
            addr,
            message: "bound to something that is not an IP socket".into(),
        })?;
        if !bound.ip().is_loopback() {
            tracing::warn!(
                "http: serving on {bound}, reachable from the network without authentication"
            );
        }
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let context = Arc::new(Context {
            telemetry,
            stopping: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
        });
        let handling = Arc::clone(&context);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    respond(request, &handling);
                }
            })
            .map_err(|e| HttpError {
                addr,
                message: e.to_string(),
            })?;
        Ok(Self {
            server,
            context,
            addr: bound,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.context.stopping.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("http: server thread panicked");
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    // Both are compile-time ASCII constants below.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

const JSON: &str = "application/json";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(request: Request, context: &Arc<Context>) {
    let now = Instant::now();
    let telemetry = &context.telemetry;
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    if request.method() == &Method::Get && path == "/events" {
        return start_stream(request, context);
    }
    let (status, content_type, body) = match (request.method(), path.as_str()) {
        (Method::Get, "/") => (200, "text/html; charset=utf-8", STATUS_PAGE.to_owned()),
        (Method::Get, "/healthz") => {
            let health = telemetry.health(now);
            let code = if health.healthy { 200 } else { 503 };
            (code, JSON, to_json(&health))
        }
        (Method::Get, "/metrics") => (200, OPENMETRICS, telemetry.encode_metrics()),
        (Method::Get, "/status") => (
            200,
            JSON,
            to_json(&serde_json::json!({
                "device": telemetry.device_status(now),
                "health": telemetry.health(now),
            })),
        ),
        (Method::Get, _) => (
            404,
            JSON,
            r#"{"error":"not found; try /, /healthz, /metrics, /status or /events"}"#.to_owned(),
        ),
        _ => (405, JSON, r#"{"error":"only GET"}"#.to_owned()),
    };
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"));
    if let Err(e) = request.respond(response) {
        tracing::debug!("http: {path}: client went away: {e}");
    }
}

/// Hands `/events` to a thread of its own (the stream lasts as long as the page is open).
fn start_stream(request: Request, context: &Arc<Context>) {
    if context.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        context.streams.fetch_sub(1, Ordering::Relaxed);
        let busy = Response::from_string(r#"{"error":"too many open status pages"}"#)
            .with_status_code(503)
            .with_header(header("Content-Type", JSON));
        if let Err(e) = request.respond(busy) {
            tracing::debug!("http: /events: client went away: {e}");
        }
        return;
    }
    let context = Arc::clone(context);
    let spawned = std::thread::Builder::new()
        .name("http-events".into())
        .spawn(move || {
            if let Err(e) = stream_events(request.into_writer(), &context) {
                tracing::debug!("http: /events: stream ended: {e}");
            }
            context.streams.fetch_sub(1, Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        tracing::warn!("http: /events: cannot start a stream: {e}");
    }
}

/// Server-sent events: one JSON snapshot per [`EVENT_EVERY`] until the client leaves or the
/// server stops. The first event carries the whole plot history, later ones what is new.
fn stream_events(mut out: Box<dyn Write + Send>, context: &Context) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
          Connection: close\r\n\r\nretry: 2000\n\n",
    )?;
    let telemetry = &context.telemetry;
    let mut cursor = None;
    while !context.stopping.load(Ordering::Relaxed) {
        let now = Instant::now();
        let points = telemetry.points_since(cursor);
        if let Some(last) = points.last() {
            cursor = Some(last.0);
        }
        let (faces, tracks) = telemetry.faces_and_tracks();
        let event = serde_json::json!({
            "uptime_ms": telemetry.millis_at(now),
            "device": telemetry.device_status(now),
            "health": telemetry.health(now),
            "faces": faces,
            "tracks": tracks,
            "points": points,
        });
        write!(out, "data: {}\n\n", to_json(&event))?;
        out.flush()?;
        std::thread::sleep(EVENT_EVERY);
    }
    Ok(())
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
}
