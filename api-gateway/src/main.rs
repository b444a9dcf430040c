//! api-gateway binary: config, telemetry, build, run.

use api_gateway::{Application, GatewayConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log = pipeline::telemetry::init("api-gateway")?;
    let config = GatewayConfig::from_env()?;
    let shutdown = pipeline::shutdown::on_signal();
    Application::build(config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
