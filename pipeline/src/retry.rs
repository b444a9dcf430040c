//! Retrying a transient failure inside one message's handling.
//!
//! A worker that nacks on the first Redis hiccup burns the message's delivery
//! limit in milliseconds and parks it in the DLQ. Instead it retries with
//! jittered backoff for a bounded window, and only then gives the message back.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Runs `op` until it succeeds; between failures waits with backoff. Gives up
/// (returning the last error) once the next wait would pass `window` or
/// shutdown is requested.
pub async fn transient<T, F, Fut>(
    window: Duration,
    shutdown: &CancellationToken,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + window;
    let mut backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .build();
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        metrics::counter!("transient_failures_total").increment(1);
        let delay = backoff.next().unwrap_or(Duration::from_secs(1));
        if shutdown.is_cancelled() || Instant::now() + delay > deadline {
            return Err(e);
        }
        tracing::warn!(
            error = format!("{e:#}"),
            ?delay,
            "transient failure, retrying"
        );
        tokio::select! {
            () = shutdown.cancelled() => return Err(e),
            () = tokio::time::sleep(delay) => {}
        }
    }
}
