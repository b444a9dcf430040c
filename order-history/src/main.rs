//! order-history binary: `order-history --help` lists every setting.

use order_history::History;
use order_history::config::{Cli, Command};
use pipeline::service::ServiceCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    let _log = pipeline::telemetry::init("order-history", &cli.log)?;
    let shutdown = pipeline::shutdown::on_signal();
    let config = cli.config;
    match cli.command {
        None => {
            History::build(config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Some(Command::Rebuild) => {
            let started = std::time::Instant::now();
            let rebuilt = order_history::rebuild(config, shutdown).await?;
            println!(
                "history rebuilt from orders.events: {} events applied, checkpoint {}, in {:.1} s",
                rebuilt.events,
                rebuilt
                    .checkpoint
                    .map_or_else(|| "none (empty stream)".to_owned(), |c| c.to_string()),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
