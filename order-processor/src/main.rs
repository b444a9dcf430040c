//! order-processor binary: `order-processor --help` lists every setting.

use order_processor::Processor;
use order_processor::config::{Cli, Command};
use pipeline::amqp::replay::{Parked, run_command};
use pipeline::service::ServiceCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    let _log = pipeline::telemetry::init("order-processor", &cli.log)?;
    match cli.command {
        None => {
            let shutdown = pipeline::shutdown::on_signal();
            Processor::build(cli.config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Some(Command::ReplayDlq(args)) => {
            let broker = cli
                .config
                .service
                .broker
                .named("order-processor-replay-dlq");
            run_command(broker, Parked::Orders, &args).await
        }
    }
}
