//! notifier binary: consume `notifier.queue` until SIGINT/SIGTERM.

use notifier::{Notifier, NotifierConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pipeline::telemetry::init("notifier")?;
    let config = NotifierConfig::from_env()?;
    let shutdown = pipeline::shutdown::on_signal();
    Notifier::build(config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
