//! api-gateway binary: `api-gateway --help` lists every setting.

use api_gateway::Application;
use api_gateway::config::Cli;
use pipeline::service::ServiceCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    let _log = pipeline::telemetry::init("api-gateway", &cli.log)?;
    let shutdown = pipeline::shutdown::on_signal();
    Application::build(cli.config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
