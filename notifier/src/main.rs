//! notifier binary.
//!
//! ```text
//! notifier                             consume notifier.queue until SIGINT/SIGTERM
//! notifier replay-dlq [--limit N]      move parked notifications from notifier.dlq back
//! ```

use notifier::{Notifier, NotifierConfig};
use pipeline::amqp::replay::{Parked, run_command};
use pipeline::config::BrokerConfig;

const USAGE: &str = "usage: notifier [replay-dlq [--limit N]]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log = pipeline::telemetry::init("notifier")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => {
            let config = NotifierConfig::from_env()?;
            let shutdown = pipeline::shutdown::on_signal();
            Notifier::build(config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        ["replay-dlq", rest @ ..] => {
            let broker = BrokerConfig::from_env("notifier-replay-dlq")?;
            run_command(broker, Parked::Notifications, rest, USAGE).await
        }
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}
