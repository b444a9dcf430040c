//! order-processor binary.
//!
//! ```text
//! order-processor                      consume orders.queue until SIGINT/SIGTERM
//! order-processor replay-dlq [--limit N]   move parked messages from orders.dlq back
//! ```

use order_processor::{Processor, ProcessorConfig};

const USAGE: &str = "usage: order-processor [replay-dlq [--limit N]]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log = pipeline::telemetry::init("order-processor")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => {
            let config = ProcessorConfig::from_env()?;
            let shutdown = pipeline::shutdown::on_signal();
            Processor::build(config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        ["replay-dlq", rest @ ..] => {
            let broker = pipeline::config::BrokerConfig::from_env("order-processor-replay-dlq")?;
            pipeline::amqp::replay::run_command(
                broker,
                pipeline::amqp::replay::Parked::Orders,
                rest,
                USAGE,
            )
            .await
        }
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}
