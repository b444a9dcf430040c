//! Processor throughput from a pre-filled `orders.queue`.
//!
//! ```sh
//! make deps
//! cargo run --release -p order-processor --example throughput -- [ORDERS] [PREFETCH]
//! ```
//!
//! Fills a fresh, prefixed topology with ORDERS orders (default 50,000) for a
//! SKU with enough stock, then starts one processor in this process and times
//! it until every order is decided. Prints orders/s. Everything it made is
//! removed afterwards.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use order_processor::{Processor, ProcessorConfig};
use pipeline::amqp::{Broker, Outgoing};
use pipeline::config::{BrokerConfig, RedisConfig};
use pipeline::messages::ROUTE_NEW_ORDER;
use pipeline::shutdown::CancellationToken;
use pipeline::trace::TraceParent;
use redis::AsyncCommands;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let orders: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let prefetch: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let run = format!("bench-{}.", std::process::id());
    let mut broker_config = BrokerConfig::from_env("throughput-bench")?;
    if std::env::var("RABBITMQ_URLS").is_err() {
        broker_config.urls = pipeline::config::parse_urls(
            "RABBITMQ_URLS",
            "amqp://guest:guest@127.0.0.1:5672/%2f,amqp://guest:guest@127.0.0.1:5673/%2f,amqp://guest:guest@127.0.0.1:5674/%2f",
        )?;
    }
    broker_config.topology_prefix = run.clone();
    broker_config.queue_expires = Some(Duration::from_secs(3600));
    let mut redis_config = RedisConfig::from_env()?;
    redis_config.key_prefix = run.replace('.', ":");

    let shutdown = CancellationToken::new();
    let publisher = Broker::connect(broker_config.clone(), shutdown.clone()).await?;
    let client = redis::Client::open(redis_config.url.clone())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let prefix = redis_config.key_prefix.clone();
    let _: () = redis
        .set(format!("{prefix}inventory:bench-sku"), orders as i64 * 2)
        .await?;

    println!("filling {}orders.queue with {orders} orders ...", run);
    let fill = Instant::now();
    let exchange = publisher.topology().orders_exchange();
    let trace = TraceParent::generate();
    futures_util::stream::iter(0..orders)
        .map(|i| {
            let (publisher, exchange, trace) = (&publisher, &exchange, &trace);
            async move {
                let id = format!("b{i}");
                let body = format!(r#"{{"id":"{id}","sku":"bench-sku","qty":1,"placed_at_ms":1}}"#);
                let msg = Outgoing {
                    exchange,
                    routing_key: ROUTE_NEW_ORDER,
                    payload: body.as_bytes(),
                    message_id: &id,
                    correlation_id: &id,
                    traceparent: trace,
                };
                publisher
                    .publish(&msg, tokio::time::Instant::now() + Duration::from_secs(60))
                    .await
            }
        })
        .buffer_unordered(512)
        .for_each(|r| async move { r.expect("order published") })
        .await;
    let fill = fill.elapsed();
    println!(
        "filled in {:.1} s ({:.0} confirmed publishes/s)",
        fill.as_secs_f64(),
        orders as f64 / fill.as_secs_f64()
    );

    let config = ProcessorConfig {
        addr: "127.0.0.1:0".parse()?,
        broker: broker_config,
        redis: redis_config,
        prefetch,
        transient_retry: Duration::from_secs(10),
    };
    let stop = CancellationToken::new();
    let processor = Processor::build(config, stop.clone()).await?;
    let started = Instant::now();
    let task = tokio::spawn(processor.run_until_stopped());
    loop {
        let c: std::collections::HashMap<String, u64> =
            redis.hgetall(format!("{prefix}counters")).await?;
        let decided = c.get("reserved").unwrap_or(&0) + c.get("rejected").unwrap_or(&0);
        if decided >= orders {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    task.await??;
    println!(
        "processor: {orders} orders in {:.1} s = {:.0} orders/s (prefetch {prefetch}, one instance)",
        took.as_secs_f64(),
        orders as f64 / took.as_secs_f64()
    );

    // Clean up: queues, then keys (SCAN, never KEYS).
    let link = publisher.current().expect("publisher link");
    let ch = link.connection.create_channel().await?;
    for q in [
        "orders.queue",
        "notifier.queue",
        "orders.dlq",
        "notifier.dlq",
        "orders.rejected",
    ] {
        let _ = ch
            .queue_delete(format!("{run}{q}").into(), Default::default())
            .await;
    }
    publisher.close().await;
    shutdown.cancel();
    let keys: Vec<String> = redis
        .scan_match::<_, String>(format!("{prefix}*"))
        .await?
        .filter_map(|k| async move { k.ok() })
        .collect()
        .await;
    for chunk in keys.chunks(1000) {
        let _: () = redis.del(chunk).await?;
    }
    Ok(())
}
