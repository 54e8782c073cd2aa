//! The admin HTTP server (`/metrics`, `/healthz`, `/readyz`) and the process's health
//! as the pipeline reports it.
//!
//! The pipeline is synchronous; the server runs on its own thread with a one-thread
//! tokio runtime, so a slow scrape never touches the hot path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Most pipeline workers in one process (`processing.threads`).
pub const MAX_WORKERS: usize = 64;

/// What `/healthz` and `/readyz` answer from; set by the pipeline workers, each in its
/// own slot (`worker` below is the worker's index, `processing.worker`).
#[derive(Debug)]
pub struct Health {
    /// How many workers report (slots `0..workers`).
    workers: AtomicUsize,
    /// Bit `i`: worker `i` has partitions (a restore finished).
    assigned: AtomicU64,
    /// Bit `i`: worker `i`'s producer reached the broker: its outputs can be written.
    connected: AtomicU64,
    /// A stop signal was received: the process is draining.
    draining: AtomicBool,
    /// When each worker last showed progress (a loop turn, or a wait on the broker),
    /// in ms since [`uptime`]'s start; the systemd watchdog is fed only while every
    /// worker's is recent.
    beats: [AtomicU64; MAX_WORKERS],
    /// Each sink's problem (`None`: delivering).
    sinks: Mutex<BTreeMap<String, Option<String>>>,
    /// A fatal error ends the process: not ready from then on.
    failed: Mutex<Option<String>>,
    /// A problem reading the input (see [`Health::set_input_problem`]).
    input_problem: Mutex<Option<String>>,
    /// Topics the configuration needs and the broker lacks, in one line.
    missing_topics: Mutex<Option<String>>,
    /// Why the Kafka clients cannot connect, in the configuration's terms (wrong
    /// credentials, an untrusted certificate): cleared once outputs connect.
    kafka_problem: Mutex<Option<String>>,
    /// Why the Schema Registry cannot be used at start, if it cannot.
    registry_problem: Mutex<Option<String>>,
    /// What was passed over and should be looked at, though the process is ready
    /// (unreadable batches skipped): the latest [`MAX_NOTES`], shown by `/readyz`.
    notes: Mutex<std::collections::VecDeque<String>>,
}

/// How many notes `/readyz` keeps (the metrics count them all).
pub const MAX_NOTES: usize = 8;

impl Default for Health {
    fn default() -> Self {
        Self {
            workers: AtomicUsize::new(1),
            assigned: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            beats: std::array::from_fn(|_| AtomicU64::new(0)),
            sinks: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(None),
            input_problem: Mutex::new(None),
            missing_topics: Mutex::new(None),
            kafka_problem: Mutex::new(None),
            registry_problem: Mutex::new(None),
            notes: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

/// Time since the first call (process start, in practice).
pub fn uptime() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn bit(worker: usize) -> u64 {
    1 << worker.min(MAX_WORKERS - 1)
}

impl Health {
    /// How many pipeline workers report (1 unless set).
    pub fn set_workers(&self, n: usize) {
        self.workers
            .store(n.clamp(1, MAX_WORKERS), Ordering::Relaxed);
    }

    fn all_workers(&self) -> u64 {
        let n = self.workers.load(Ordering::Relaxed);
        if n >= 64 { u64::MAX } else { (1 << n) - 1 }
    }

    /// Every worker is alive (at startup, before they run).
    pub fn beat_all(&self) {
        for w in 0..self.workers.load(Ordering::Relaxed) {
            self.beat(w);
        }
    }

    /// The worker is alive.
    pub fn beat(&self, worker: usize) {
        let now = u64::try_from(uptime().as_millis()).unwrap_or(u64::MAX);
        self.beats[worker.min(MAX_WORKERS - 1)].store(now, Ordering::Relaxed);
    }

    /// Time since the least recent worker's last [`Health::beat`].
    pub fn since_beat(&self) -> Duration {
        let oldest = self.beats[..self.workers.load(Ordering::Relaxed)]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        uptime().saturating_sub(Duration::from_millis(oldest))
    }

    pub fn set_assigned(&self, worker: usize, yes: bool) {
        if yes {
            self.assigned.fetch_or(bit(worker), Ordering::Relaxed);
        } else {
            self.assigned.fetch_and(!bit(worker), Ordering::Relaxed);
        }
    }

    /// Every worker's producer reaches the broker.
    pub fn outputs_connected(&self) -> bool {
        let all = self.all_workers();
        self.connected.load(Ordering::Relaxed) & all == all
    }

    /// This worker's producer reaches the broker.
    pub fn worker_connected(&self, worker: usize) -> bool {
        self.connected.load(Ordering::Relaxed) & bit(worker) != 0
    }

    pub fn set_outputs_connected(&self, worker: usize, yes: bool) {
        if yes {
            self.set_kafka_problem(None);
            self.connected.fetch_or(bit(worker), Ordering::Relaxed);
        } else {
            self.connected.fetch_and(!bit(worker), Ordering::Relaxed);
        }
    }

    /// A sink's state: `None` when it delivers, else what is wrong.
    pub fn set_sink(&self, name: &str, problem: Option<String>) {
        if let Ok(mut sinks) = self.sinks.lock() {
            sinks.insert(name.to_owned(), problem);
        }
    }

    /// Forgets every sink (before the sinks restart on a reload).
    pub fn clear_sinks(&self) {
        if let Ok(mut sinks) = self.sinks.lock() {
            sinks.clear();
        }
    }

    /// Every failing sink's problem, by name, on one line.
    fn sink_problem(&self) -> Option<String> {
        let sinks = self.sinks.lock().ok()?;
        let failing: Vec<String> = sinks
            .iter()
            .filter_map(|(name, p)| p.as_ref().map(|p| format!("sink {name}: {p}")))
            .collect();
        (!failing.is_empty()).then(|| failing.join("; "))
    }

    /// Keeps `note` for `/readyz` (the oldest of more than [`MAX_NOTES`] goes).
    pub fn add_note(&self, note: String) {
        if let Ok(mut notes) = self.notes.lock() {
            if notes.len() == MAX_NOTES {
                notes.pop_front();
            }
            notes.push_back(note);
        }
    }

    /// The kept notes, oldest first.
    pub fn notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A problem reading the input (an unreadable record batch being skipped), or
    /// `None` once it is over.
    pub fn set_input_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.input_problem.lock() {
            *p = problem;
        }
    }

    /// Why the Kafka clients cannot connect (`None`: they can). Returns whether this
    /// changed it (so a problem reported on every retry is logged once).
    pub fn set_kafka_problem(&self, problem: Option<String>) -> bool {
        match self.kafka_problem.lock() {
            Ok(mut p) if *p != problem => {
                *p = problem;
                true
            }
            _ => false,
        }
    }

    /// Why the Kafka clients cannot connect, if known.
    pub fn kafka_problem(&self) -> Option<String> {
        self.kafka_problem.lock().ok().and_then(|p| p.clone())
    }

    /// Why the output schemas cannot be registered (`None`: they are). Returns whether
    /// this changed it.
    pub fn set_registry_problem(&self, problem: Option<String>) -> bool {
        match self.registry_problem.lock() {
            Ok(mut p) if *p != problem => {
                *p = problem;
                true
            }
            _ => false,
        }
    }

    /// Topics the configuration needs and the broker lacks (`None`: all there).
    pub fn set_missing_topics(&self, line: Option<String>) {
        if let Ok(mut m) = self.missing_topics.lock() {
            *m = line;
        }
    }

    /// A fatal error: the process is about to exit (first reason kept).
    pub fn set_failed(&self, reason: &str) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert_with(|| reason.to_owned());
        }
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready: some worker has partitions (more workers than partitions leave some
    /// idle), every worker's outputs connected, every sink delivering, not draining.
    pub fn is_ready(&self) -> bool {
        self.readiness() == "ready"
    }

    /// Why the process is not ready, for `/readyz`'s body.
    pub fn readiness(&self) -> String {
        if let Some(reason) = self.failed.lock().ok().and_then(|f| f.clone()) {
            format!("failed: {reason}")
        } else if self.is_draining() {
            "draining".to_owned()
        } else if let Some(p) = self.kafka_problem() {
            format!("kafka: {p}")
        } else if let Some(p) = self.registry_problem.lock().ok().and_then(|p| p.clone()) {
            format!("schema registry: {p}")
        } else if let Some(line) = self.missing_topics.lock().ok().and_then(|m| m.clone()) {
            line
        } else if !self.outputs_connected() {
            "outputs not connected".to_owned()
        } else if self.assigned.load(Ordering::Relaxed) & self.all_workers() == 0 {
            "no partitions assigned".to_owned()
        } else if let Some(p) = self.input_problem.lock().ok().and_then(|p| p.clone()) {
            format!("input: {p}")
        } else if let Some(p) = self.sink_problem() {
            p
        } else {
            "ready".to_owned()
        }
    }
}

/// Everything the admin endpoints read.
#[derive(Debug, Default)]
pub struct Admin {
    pub metrics: Metrics,
    pub health: Health,
}

/// The admin routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(admin)
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    admin.metrics.ready.set(i64::from(admin.health.is_ready()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.render(),
    )
}

async fn healthz(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    if admin.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let status = if admin.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = format!("{}\n", admin.health.readiness());
    for note in admin.health.notes() {
        body.push_str("note: ");
        body.push_str(&note);
        body.push('\n');
    }
    (status, body)
}

/// Binds `addr` (an error here is a startup error) and serves the admin routes on a
/// thread of their own until the process exits. Returns the bound address (port 0
/// picks a free one).
pub fn serve(addr: SocketAddr, admin: Arc<Admin>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("admin-http".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let result = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => axum::serve(listener, router(admin)).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    tracing::error!("admin server stopped: {e}");
                }
            });
        })?;
    Ok(bound)
}

/// systemd's notify protocol (`Type=notify`); every call is a no-op without
/// `NOTIFY_SOCKET`.
pub mod notify {
    use sd_notify::NotifyState;

    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("systemd notify: {e}");
        }
    }

    pub fn ready(status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading() {
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping() {
        send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    pub fn status(status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog() {
        send(&[NotifyState::Watchdog]);
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, or never.
    pub fn watchdog_interval() -> Option<std::time::Duration> {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fatal_error_makes_the_process_not_ready_for_good() {
        let h = Health::default();
        h.set_outputs_connected(0, true);
        h.set_assigned(0, true);
        assert_eq!(h.readiness(), "ready");
        h.set_failed("fatal Kafka consumer error (FencedInstanceId): fenced");
        h.set_failed("a second one");
        assert_eq!(
            h.readiness(),
            "failed: fatal Kafka consumer error (FencedInstanceId): fenced"
        );
        assert!(!h.is_ready());
    }
}
