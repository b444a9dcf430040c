//! api-gateway binary: `api-gateway --help` lists every setting.

use api_gateway::Application;
use api_gateway::config::{Cli, Command};
use pipeline::service::ServiceCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    // An operator's command prints its answer alone on stdout (a new key:
    // `KEY=$(api-gateway keys create ...)`), so no log is started for it.
    if let Some(Command::Keys { command }) = cli.command {
        return command.run(&cli.config.keys, &mut std::io::stdout()).await;
    }
    let _log = pipeline::telemetry::init("api-gateway", &cli.log)?;
    let shutdown = pipeline::shutdown::on_signal();
    Application::build(cli.config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
