//! The admin HTTP server (`/metrics`, `/healthz`, `/readyz`) and the process's health
//! as the pipeline reports it.
//!
//! The pipeline is synchronous; the server runs on its own thread with a one-thread
//! tokio runtime, so a slow scrape never touches the hot path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What `/healthz` and `/readyz` answer from; set by the pipeline.
#[derive(Debug, Default)]
pub struct Health {
    /// Partitions are assigned (a restore finished).
    assigned: AtomicBool,
    /// The producer reached the broker: outputs can be written.
    outputs_connected: AtomicBool,
    /// A stop signal was received: the process is draining.
    draining: AtomicBool,
    /// When the pipeline last showed progress (a loop turn, or a wait on the broker),
    /// in ms since [`uptime`]'s start; the systemd watchdog is fed only while recent.
    last_beat_ms: AtomicU64,
    /// Each sink's problem (`None`: delivering).
    sinks: Mutex<BTreeMap<String, Option<String>>>,
}

/// Time since the first call (process start, in practice).
pub fn uptime() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

impl Health {
    /// The pipeline is alive.
    pub fn beat(&self) {
        let now = u64::try_from(uptime().as_millis()).unwrap_or(u64::MAX);
        self.last_beat_ms.store(now, Ordering::Relaxed);
    }

    /// Time since the last [`Health::beat`].
    pub fn since_beat(&self) -> Duration {
        uptime().saturating_sub(Duration::from_millis(
            self.last_beat_ms.load(Ordering::Relaxed),
        ))
    }

    pub fn set_assigned(&self, yes: bool) {
        self.assigned.store(yes, Ordering::Relaxed);
    }

    pub fn outputs_connected(&self) -> bool {
        self.outputs_connected.load(Ordering::Relaxed)
    }

    pub fn set_outputs_connected(&self, yes: bool) {
        self.outputs_connected.store(yes, Ordering::Relaxed);
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

    /// The first sink problem, if any.
    fn sink_problem(&self) -> Option<String> {
        let sinks = self.sinks.lock().ok()?;
        sinks
            .iter()
            .find_map(|(name, p)| p.as_ref().map(|p| format!("sink {name}: {p}")))
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready: partitions assigned, outputs connected, every sink delivering, not
    /// draining.
    pub fn is_ready(&self) -> bool {
        self.readiness() == "ready"
    }

    /// Why the process is not ready, for `/readyz`'s body.
    pub fn readiness(&self) -> String {
        if self.is_draining() {
            "draining".to_owned()
        } else if !self.outputs_connected.load(Ordering::Relaxed) {
            "outputs not connected".to_owned()
        } else if !self.assigned.load(Ordering::Relaxed) {
            "no partitions assigned".to_owned()
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
    (status, format!("{}\n", admin.health.readiness()))
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
