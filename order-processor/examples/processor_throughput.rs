//! Processor throughput from a pre-filled `orders.queue`.
//!
//! ```sh
//! make deps
//! cargo run --release -p order-processor --example processor_throughput -- [ORDERS] [PREFETCH]
//! ```
//!
//! Fills a fresh, prefixed topology with ORDERS orders (default 50,000) for a
//! SKU with enough stock, then starts one processor in this process and times
//! it until every order is decided. Prints orders/s. Everything it made is
//! removed afterwards.

use order_processor::{Processor, ProcessorConfig};
use pipeline::messages::ROUTE_NEW_ORDER;
use pipeline::shutdown::CancellationToken;
use redis::AsyncCommands;
use testkit::bench::Fixture;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let orders: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let prefetch: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(128);

    let mut fx = Fixture::new("bench-processor").await?;
    let stock = fx.key("inventory:bench-sku");
    let _: () = fx.redis.set(stock, orders * 2).await?;
    let exchange = fx.publisher.topology().orders_exchange();
    fx.fill(orders, &exchange, ROUTE_NEW_ORDER, |i| {
        let id = format!("b{i}");
        let body = format!(r#"{{"id":"{id}","sku":"bench-sku","qty":1,"placed_at_ms":1}}"#);
        (id, body)
    })
    .await?;

    let config = ProcessorConfig {
        service: fx.service_config(),
        prefetch,
        ..testkit::configs::processor(&fx.prefix)
    };
    let stop = CancellationToken::new();
    let processor = Processor::build(config, stop.clone()).await?;
    let task = tokio::spawn(processor.run_until_stopped());
    let took = fx
        .wait_for_counters(|c| {
            c.get("reserved").unwrap_or(&0) + c.get("rejected").unwrap_or(&0) >= orders
        })
        .await?;
    stop.cancel();
    task.await??;
    println!(
        "processor: {orders} orders in {:.1} s = {:.0} orders/s (prefetch {prefetch}, one instance)",
        took.as_secs_f64(),
        orders as f64 / took.as_secs_f64()
    );
    fx.cleanup().await
}
