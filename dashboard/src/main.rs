//! dashboard binary: `dashboard --help` lists every setting.

use dashboard::Dashboard;
use dashboard::config::Cli;
use pipeline::service::ServiceCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    let _log = pipeline::telemetry::init("dashboard", &cli.log)?;
    let shutdown = pipeline::shutdown::on_signal();
    Dashboard::build(cli.config, shutdown)
        .await?
        .run_until_stopped()
        .await
}
