//! dashboard binary: serve the live page and metrics until SIGINT/SIGTERM.

use dashboard::{Dashboard, DashboardConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log = pipeline::telemetry::init("dashboard")?;
    let config = DashboardConfig::from_env()?;
    let shutdown = pipeline::shutdown::on_signal();
    Dashboard::build(config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
