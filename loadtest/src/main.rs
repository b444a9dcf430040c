//! `loadtest`: drive orders through a running stack (`make up`) and print the
//! ledger. Exits 1 when an invariant fails, 2 on bad arguments.

use std::time::Duration;

use loadtest::{HistoryTarget, LoadConfig, plot, run};

const USAGE: &str = "\
usage: loadtest [options]
       loadtest probe [--amqp URL] [--messages N] [--window W] [--json]
                          the broker's raw confirmed publish rate alone (to a fresh
                          3-replica quorum queue; default 50000 messages, 512 in flight)
  --orders N              orders to place (default 10000)
  --concurrency C         requests in flight (default 64)
  --rate R                open loop: start R orders per second (default: closed loop)
  --retry-share F         share of accepted orders re-sent with the same key (default 0.05)
  --skus N                SKUs to spread orders over (default 10)
  --stock-ratio F         initial stock as a share of orders; below 1 some are out of stock (default 0.9)
  --unknown-share F       share of orders for an unknown SKU (default 0.01)
  --gateway URL           default http://127.0.0.1:8080
  --redis URL             default redis://127.0.0.1:6379
  --amqp URL              for DLQ depths (default amqp://guest:guest@127.0.0.1:5672/%2f)
  --key-prefix P          the stack's REDIS_KEY_PREFIX (default empty)
  --topology-prefix P     the stack's TOPOLOGY_PREFIX (default empty)
  --processor-metrics URL processor /metrics, comma-separated (default http://127.0.0.1:9101/metrics)
  --no-notifier           no notifier runs: reserved orders need not be notified
  --database URL          the order history's PostgreSQL (default $DATABASE_URL, else the make-up one)
  --history-schema S      the history's HISTORY_SCHEMA (default order_history)
  --no-history            no order history runs: skip the history checks
  --drain-timeout SECS    how long to wait for the pipeline to drain (default 300)
  --json FILE             also write the report as JSON
  --plot FILE             also write a throughput/latency plot (SVG)
  --quiet                 no progress bars";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("probe") {
        std::process::exit(probe(&args[1..]).await);
    }
    match parse(args) {
        Ok(Some((config, json, plot_file))) => match run(config).await {
            Ok(report) => {
                println!("{report}");
                if let Some(path) = json {
                    let body = serde_json::to_string_pretty(&report).expect("a report serializes");
                    if let Err(e) = std::fs::write(&path, body) {
                        eprintln!("cannot write {path}: {e}");
                    }
                }
                if let Some(path) = plot_file {
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
            Err(e) => {
                eprintln!("loadtest failed: {e:#}");
                std::process::exit(1);
            }
        },
        Ok(None) => println!("{USAGE}"),
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

/// A flag's value that must be a number above zero.
fn positive<T: std::str::FromStr + Default + PartialOrd>(value: Option<&String>) -> Result<T, ()> {
    value
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > T::default())
        .ok_or(())
}

/// `loadtest probe`: prints the raw confirmed publish rate (or JSON).
async fn probe(args: &[String]) -> i32 {
    let (mut amqp, mut messages, mut window, mut json) = (
        "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        50_000u64,
        512usize,
        false,
    );
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let parsed = match flag.as_str() {
            "--amqp" => it.next().map(|v| amqp = v.clone()).ok_or(()),
            "--messages" => positive(it.next()).map(|n| messages = n),
            "--window" => positive(it.next()).map(|n| window = n),
            "--json" => {
                json = true;
                Ok(())
            }
            _ => Err(()),
        };
        if parsed.is_err() {
            eprintln!("bad probe argument near {flag:?}\n{USAGE}");
            return 2;
        }
    }
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

type Parsed = Option<(LoadConfig, Option<String>, Option<String>)>;

fn parse(args: Vec<String>) -> Result<Parsed, String> {
    let mut config = LoadConfig::local(10_000);
    let mut history = Some(HistoryTarget {
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| order_history::config::DEFAULT_DATABASE_URL.to_owned()),
        schema: "order_history".into(),
        catch_up_timeout: Duration::from_secs(300),
        check: true,
    });
    let (mut json, mut plot_file) = (None, None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--orders" => config.orders = num(&flag, value()?)?,
            "--concurrency" => config.concurrency = num(&flag, value()?)?,
            "--rate" => config.rate = Some(num(&flag, value()?)?),
            "--retry-share" => config.retry_share = num(&flag, value()?)?,
            "--skus" => config.skus = num(&flag, value()?)?,
            "--stock-ratio" => config.stock_ratio = num(&flag, value()?)?,
            "--unknown-share" => config.unknown_share = num(&flag, value()?)?,
            "--gateway" => config.gateway = value()?,
            "--redis" => config.redis_url = value()?,
            "--amqp" => config.amqp_url = Some(value()?),
            "--key-prefix" => config.key_prefix = value()?,
            "--topology-prefix" => config.topology_prefix = value()?,
            "--processor-metrics" => {
                config.processor_metrics = value()?.split(',').map(str::to_owned).collect();
            }
            "--no-notifier" => config.expect_notified = false,
            "--database" => {
                if let Some(h) = history.as_mut() {
                    h.database_url = value()?;
                }
            }
            "--history-schema" => {
                if let Some(h) = history.as_mut() {
                    h.schema = value()?;
                }
            }
            "--no-history" => history = None,
            "--drain-timeout" => config.drain_timeout = Duration::from_secs(num(&flag, value()?)?),
            "--json" => json = Some(value()?),
            "--plot" => plot_file = Some(value()?),
            "--quiet" => config.progress = false,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if config.orders == 0 || config.concurrency == 0 || config.skus == 0 {
        return Err("--orders, --concurrency and --skus must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&config.retry_share) || !(0.0..=1.0).contains(&config.unknown_share) {
        return Err("--retry-share and --unknown-share are shares between 0 and 1".into());
    }
    if config.rate.is_some_and(|r| r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    config.history = history;
    Ok(Some((config, json, plot_file)))
}
