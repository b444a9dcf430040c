//! Logs and metrics, set up in one place for every service.
//!
//! `RUST_LOG` filters (default `info`), `LOG_FORMAT` picks `pretty` (default) or
//! `json` ([`LogConfig`]). Log lines are formatted where they happen but written by a
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

use crate::config::ConfigError;

/// How a service logs.
#[derive(Debug, Clone, clap::Args)]
pub struct LogConfig {
    /// Which log lines are written: an `EnvFilter` directive such as `info`
    /// or `info,order_processor=debug`.
    #[arg(
        id = "RUST_LOG",
        long = "rust-log",
        env = "RUST_LOG",
        default_value = "info"
    )]
    pub filter: String,
    /// How log lines look: `pretty` (one compact line, coloured on a
    /// terminal) or `json` (one object per line, for collectors).
    #[arg(
        id = "LOG_FORMAT",
        long = "log-format",
        env = "LOG_FORMAT",
        default_value = "pretty",
        value_enum
    )]
    pub format: LogFormat,
}

/// The shape of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Flushes the log writer when dropped; hold it until `main` returns.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Installs the global tracing subscriber. Call once, first thing in `main`
/// after reading the configuration, and keep the guard:
/// `let _log = telemetry::init("name", &cli.log)?;`.
pub fn init(service: &str, config: &LogConfig) -> Result<LogGuard, ConfigError> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|e| ConfigError::new("RUST_LOG", &config.filter, e))?;
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let registry = tracing_subscriber::registry().with(filter);
    match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(writer),
            )
            .init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_ansi(ansi).with_writer(writer))
            .init(),
    }
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    Ok(LogGuard(guard))
}

/// An error and every cause under it, `: `-separated, for a log field:
/// `tracing::warn!(error = %telemetry::chain(&e), "...")` (an
/// `anyhow::Error`: `chain(e.as_ref())`). The one way errors are logged, so
/// no line shows the outermost context and hides the cause.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'a)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn std::error::Error + 'a));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Logs for tests, when `TEST_LOG` is set (`TEST_LOG=1 cargo nextest run`):
/// `RUST_LOG` filters them (default `info`), written through the test
/// harness's capture so each test's lines show with its result. Without
/// `TEST_LOG` tests log nothing. Safe to call from every test.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_none() {
            return;
        }
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt::layer().compact().with_test_writer())
            .try_init();
    });
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
        // Described on this recorder itself, so its help texts are there even
        // when a test's local recorder is current on this thread.
        metrics::with_local_recorder(&recorder, describe_metrics);
        // Another recorder may already be installed (a test harness); then our
        // handle still renders, just without the other recorder's series.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}

/// The help texts (`# HELP`) of the metrics the platform records: HTTP,
/// broker, consumer and retry. Each service describes its own the same way.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    // HTTP (`http.rs`).
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status code."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route template."
    );
    describe_gauge!("http_open_connections", "HTTP connections open now.");
    describe_counter!(
        "http_connections_refused_total",
        "HTTP connections refused because the listener had its maximum open."
    );
    describe_counter!(
        "http_idle_connections_closed_total",
        "HTTP connections closed after being idle for the idle timeout."
    );

    // Broker link and publishing (`amqp/broker.rs`).
    describe_gauge!(
        "broker_connected",
        "1 while the broker link is up, 0 after it was lost and until a node answers."
    );
    describe_counter!(
        "broker_reconnects_total",
        "Broker links lost, each followed by a failover to the next node."
    );
    describe_histogram!(
        "broker_publish_duration_seconds",
        Unit::Seconds,
        "Time to publish a message and get the broker's confirm, by outcome \
         (confirmed, unavailable, timeout, unroutable, nacked, link_error)."
    );

    // Consuming (`amqp/consumer.rs`).
    describe_counter!(
        "consumer_restarts_total",
        "Consumers that ended without a shutdown and re-subscribed, by queue."
    );
    describe_counter!(
        "worker_batches_total",
        "Batches of deliveries handed to the handler, by queue."
    );
    describe_gauge!(
        "deliveries_in_flight",
        "Deliveries handed to the handler and not settled yet, by queue."
    );
    describe_counter!(
        "deliveries_settled_total",
        "Deliveries the handler finished, by disposition (ack, requeue, dead_letter)."
    );
    describe_counter!(
        "settle_frames_total",
        "Settlement frames sent to the broker, by kind (ack, requeue, dead_letter); \
         one ack may settle several deliveries."
    );

    // Retries inside a message's handling (`retry.rs`).
    describe_counter!(
        "transient_failures_total",
        "Failed attempts of an operation retried with backoff (a Redis call, a publish, \
         a history lookup), the last one before giving up included."
    );
}
