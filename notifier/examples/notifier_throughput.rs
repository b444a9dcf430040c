//! Notifier throughput with the log sink from a pre-filled `notifier.queue`.
//!
//! ```sh
//! make deps
//! cargo run --release -p notifier --example notifier_throughput -- [EVENTS] [PREFETCH]
//! ```
//!
//! Fills a fresh, prefixed topology with EVENTS `order.created` events
//! (default 50,000), then starts one notifier (log sink, logs off) in this
//! process and times it until every notification is recorded as sent. Prints
//! events/s. Everything it made is removed afterwards.

use std::time::Duration;

use notifier::{Notifier, NotifierConfig, SinkConfig};
use pipeline::messages::ROUTE_ORDER_CREATED;
use pipeline::shutdown::CancellationToken;
use testkit::bench::Fixture;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let prefetch: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let mut fx = Fixture::new("bench-notifier").await?;
    let exchange = fx.publisher.topology().events_exchange();
    fx.fill(events, &exchange, ROUTE_ORDER_CREATED, |i| {
        let body = format!(
            r#"{{"id":"n{i}","sku":"bench-sku","qty":1,"outcome":"reserved","decided_at_ms":1}}"#
        );
        (format!("n{i}:created"), body)
    })
    .await?;

    let config = NotifierConfig {
        service: fx.service_config(),
        prefetch,
        claim: Duration::from_secs(60),
        ..testkit::configs::notifier(&fx.prefix, SinkConfig::log())
    };
    let stop = CancellationToken::new();
    let notifier = Notifier::build(config, stop.clone()).await?;
    let task = tokio::spawn(notifier.run_until_stopped());
    let took = fx
        .wait_for_counters(|c| c.get("notified").copied().unwrap_or(0) >= events)
        .await?;
    stop.cancel();
    task.await??;
    println!(
        "notifier (log sink): {events} events in {:.1} s = {:.0} events/s (prefetch {prefetch}, one instance)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    fx.cleanup().await
}
