//! Counters of one test alone. The services record into the process-wide
//! recorder, which every test in a `cargo test` binary shares; a test that
//! asserts exact counts installs its own recorder for its thread instead
//! (`#[tokio::test]` runs the test and every task it spawns on that one
//! thread), so its figures are the same under `cargo test` and nextest.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// This test's recorder, current on its thread until dropped.
pub struct LocalMetrics {
    handle: PrometheusHandle,
    _current: metrics::LocalRecorderGuard<'static>,
}

impl LocalMetrics {
    /// Install before starting the services whose counters the test reads.
    pub fn install() -> Self {
        // Leaked: a few kilobytes per test, for a recorder that must outlive
        // every task of the test.
        let recorder = Box::leak(Box::new(PrometheusBuilder::new().build_recorder()));
        let handle = recorder.handle();
        Self {
            handle,
            _current: metrics::set_default_local_recorder(recorder),
        }
    }

    /// Everything recorded since `install`, in Prometheus text.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
