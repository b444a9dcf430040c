//! Logs and metrics, set up in one place for every service.
//!
//! `RUST_LOG` filters (default `info`), `LOG_FORMAT` picks `pretty` (default) or
//! `json`. Log lines are formatted where they happen but written by a
//! background thread through a buffer, so a busy service (the notifier's `log`
//! sink writes a line per notification) never waits on its output, and lines
//! logged in a burst go out in a few writes. Nothing is dropped: a full buffer
//! (128k lines) makes the logging task wait. Keep the [`LogGuard`] alive for
//! the life of the process; dropping it flushes what is left. Colours only
//! when stdout is a terminal. Metrics go through the `metrics` facade into one process-wide
//! Prometheus recorder; each service exposes it at `GET /metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{ConfigError, var_or};

/// Flushes the log writer when dropped; hold it until `main` returns.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the global tracing subscriber. Call once, first thing in `main`,
/// and keep the guard: `let _log = telemetry::init("name")?;`.
pub fn init(service: &str) -> Result<LogGuard, ConfigError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new("info"))
        .map_err(|e| ConfigError::new("RUST_LOG", &var_or("RUST_LOG", ""), e))?;
    let format = var_or("LOG_FORMAT", "pretty");
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let registry = tracing_subscriber::registry().with(filter);
    match format.as_str() {
        "json" => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(writer),
            )
            .init(),
        "pretty" => registry
            .with(fmt::layer().compact().with_ansi(ansi).with_writer(writer))
            .init(),
        other => {
            return Err(ConfigError::new(
                "LOG_FORMAT",
                other,
                "expected \"pretty\" or \"json\"",
            ));
        }
    }
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    Ok(LogGuard(guard))
}

/// Latency buckets in seconds, from a fast Redis hit to a slow broker confirm.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use. Several services
/// started in one process (as the tests do) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then our
        // handle still renders, just without the other recorder's series.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}
