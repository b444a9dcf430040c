//! `loadtest`: drive orders through a running stack (`make up`) and print the
//! ledger. Exits 1 when an invariant fails, 2 on bad arguments.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadtest::{HistoryTarget, LoadConfig, plot, run};
use pipeline::config::{at_least, between};

/// Places orders through a running stack (`make up`), waits for the pipeline
/// to drain and prints the ledger: lost 0, duplicated 0, stock exact.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The broker's raw confirmed publish rate alone (to a fresh 3-replica
    /// quorum queue): the ceiling the pipeline is measured against.
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// The broker to probe.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Confirmed publishes to make.
    #[arg(long, default_value = "50000", value_parser = at_least::<u64>(1))]
    messages: u64,
    /// Publishes in flight at once.
    #[arg(long, default_value = "512", value_parser = at_least::<usize>(1))]
    window: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Orders to place.
    #[arg(long, default_value = "10000", value_parser = at_least::<u64>(1))]
    orders: u64,
    /// Requests in flight.
    #[arg(long, default_value = "64", value_parser = at_least::<usize>(1))]
    concurrency: usize,
    /// Open loop: start this many orders per second (default: closed loop).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Share of accepted orders re-sent with the same key.
    #[arg(long, default_value = "0.05", value_parser = between::<f64>(0.0, 1.0))]
    retry_share: f64,
    /// SKUs to spread orders over.
    #[arg(long, default_value = "10", value_parser = at_least::<u64>(1))]
    skus: u64,
    /// Initial stock as a share of orders; below 1 some are out of stock.
    #[arg(long, default_value = "0.9", value_parser = at_least::<f64>(0.0))]
    stock_ratio: f64,
    /// Share of orders for an unknown SKU.
    #[arg(long, default_value = "0.01", value_parser = between::<f64>(0.0, 1.0))]
    unknown_share: f64,
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The client key to send (`op_...`); its client is read from the key
    /// store. Default: a key minted for this run (client `loadtest`, no
    /// limit it reaches) in the stack's key store, revoked at the end.
    #[arg(long, env = "LOADTEST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The stack's Redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The broker, for DLQ depths.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// The stack's REDIS_KEY_PREFIX.
    #[arg(long, default_value = "")]
    key_prefix: String,
    /// The stack's TOPOLOGY_PREFIX.
    #[arg(long, default_value = "")]
    topology_prefix: String,
    /// The processors' /metrics, comma-separated.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9101/metrics",
        value_delimiter = ','
    )]
    processor_metrics: Vec<String>,
    /// No notifier runs: reserved orders need not be notified.
    #[arg(long)]
    no_notifier: bool,
    /// The order history's PostgreSQL (default: the `make up` one).
    #[arg(long = "database", env = "DATABASE_URL", hide_env_values = true,
          default_value = order_history::config::DEFAULT_DATABASE_URL, hide_default_value = true)]
    database_url: String,
    /// The history's HISTORY_SCHEMA.
    #[arg(long, default_value = "order_history")]
    history_schema: String,
    /// No order history runs: skip the history checks.
    #[arg(long)]
    no_history: bool,
    /// Seconds to wait for the pipeline to drain.
    #[arg(long = "drain-timeout", value_name = "SECS", default_value = "300", value_parser = at_least::<u64>(1))]
    drain_timeout_secs: u64,
    /// Also write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Also write a throughput/latency plot (SVG).
    #[arg(long, value_name = "FILE")]
    plot: Option<String>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn positive_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "{raw:?} is not a positive number of orders per second"
        )),
    }
}

impl RunArgs {
    fn config(&self) -> LoadConfig {
        LoadConfig {
            gateway: self.gateway.clone(),
            redis_url: self.redis.clone(),
            key_prefix: self.key_prefix.clone(),
            amqp_url: Some(self.amqp.clone()),
            topology_prefix: self.topology_prefix.clone(),
            processor_metrics: self.processor_metrics.clone(),
            concurrency: self.concurrency,
            rate: self.rate,
            retry_share: self.retry_share,
            skus: self.skus,
            stock_ratio: self.stock_ratio,
            unknown_share: self.unknown_share,
            expect_notified: !self.no_notifier,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            progress: !self.quiet,
            history: (!self.no_history).then(|| HistoryTarget {
                database_url: self.database_url.clone(),
                schema: self.history_schema.clone(),
                catch_up_timeout: Duration::from_secs(300),
                check: true,
            }),
            ..LoadConfig::local(self.orders)
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Some(Command::Probe(args)) = cli.command {
        std::process::exit(probe(args).await);
    }
    let args = cli.run;
    let key =
        match loadtest::RunKey::given_or_minted(args.api_key.clone(), &args.database_url).await {
            Ok(key) => key,
            Err(e) => {
                eprintln!("loadtest: {e:#}");
                std::process::exit(1);
            }
        };
    let mut config = args.config();
    key.apply(&mut config);
    let report = run(config).await;
    key.finish().await;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("loadtest failed: {e:#}");
            std::process::exit(1);
        }
    };
    println!("{report}");
    if let Some(path) = args.json {
        let body = serde_json::to_string_pretty(&report).expect("a report serializes");
        if let Err(e) = std::fs::write(&path, body) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    if let Some(path) = args.plot {
        let title = format!(
            "order-pipeline run {} ({} orders)",
            report.run_id, report.ledger.sent
        );
        if let Err(e) = std::fs::write(&path, plot::svg(&title, &report.samples)) {
            eprintln!("cannot write {path}: {e}");
        }
    }
    std::process::exit(if report.ok() { 0 } else { 1 });
}

/// `loadtest probe`: prints the raw confirmed publish rate (or JSON).
async fn probe(args: ProbeArgs) -> i32 {
    let ProbeArgs {
        amqp,
        messages,
        window,
        json,
    } = args;
    match loadtest::probe::confirmed_publish_rate(&amqp, messages, window).await {
        Ok(rate) if json => {
            println!(
                "{}",
                serde_json::json!({"msg_per_sec": rate, "messages": messages, "window": window})
            );
            0
        }
        Ok(rate) => {
            println!("{rate:.0} msg/s ({messages} confirmed publishes, {window} in flight)");
            0
        }
        Err(e) => {
            eprintln!("probe failed: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
    }

    #[test]
    fn the_declaration_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_reach_the_load_config() {
        let cli = parse(&[
            "--orders",
            "20",
            "--rate",
            "150.5",
            "--no-history",
            "--processor-metrics",
            "http://a/metrics,http://b/metrics",
            "--drain-timeout",
            "9",
            "--quiet",
        ])
        .unwrap();
        let config = cli.run.config();
        assert_eq!(config.orders, 20);
        assert_eq!(config.rate, Some(150.5));
        assert!(config.history.is_none());
        assert_eq!(
            config.processor_metrics,
            ["http://a/metrics", "http://b/metrics"]
        );
        assert_eq!(config.drain_timeout, Duration::from_secs(9));
        assert!(!config.progress);
    }

    #[test]
    fn bad_values_are_named() {
        for (args, name) in [
            (&["--orders", "0"][..], "--orders"),
            (&["--rate", "-3"][..], "--rate"),
            (&["--retry-share", "1.5"][..], "--retry-share"),
            (&["--unknown-share", "x"][..], "--unknown-share"),
            (&["--orderz", "5"][..], "--orderz"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(name), "{args:?}: {err}");
        }
        let probe = parse(&["probe", "--window", "0"]).unwrap_err().to_string();
        assert!(probe.contains("--window"), "{probe}");
    }
}
