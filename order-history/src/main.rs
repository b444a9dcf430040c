//! order-history binary.
//!
//! ```text
//! order-history            stand by / apply orders.events, serve the API until SIGINT/SIGTERM
//! order-history rebuild    empty the history and re-apply orders.events from its first event
//! ```

use order_history::{History, HistoryConfig};

const USAGE: &str = "usage: order-history [rebuild]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _log = pipeline::telemetry::init("order-history")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shutdown = pipeline::shutdown::on_signal();
    match args.as_slice() {
        [] => {
            let config = HistoryConfig::from_env()?;
            History::build(config, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        ["rebuild"] => {
            let config = HistoryConfig::from_env()?;
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
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}
