//! notifier binary: `notifier --help` lists every setting.

use notifier::Notifier;
use notifier::config::{Cli, Command};
use pipeline::amqp::replay::{Parked, run_command};
use pipeline::service::ServiceCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::read();
    let _log = pipeline::telemetry::init("notifier", &cli.log)?;
    match cli.command {
        None => {
            let shutdown = pipeline::shutdown::on_signal();
            Notifier::build(cli.config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Some(Command::ReplayDlq(args)) => {
            let broker = cli.config.service.broker.named("notifier-replay-dlq");
            run_command(broker, Parked::Notifications, &args).await
        }
        Some(Command::NewWebhookSecret) => {
            println!("{}", notifier::signature::WebhookSecrets::generate());
            Ok(())
        }
    }
}
