//! Redis outages, the delivery limit, the DLQ replay command, shutdown, and the
//! gateway and processor together.

use std::time::Duration;

use pipeline::messages::now_ms;
use serde_json::Value;

use crate::helpers::{ProcessorWorld, ProxyMode, RunningProcessor, TcpProxy, World, eventually};
use crate::processing::processed;

#[tokio::test]
async fn orders_wait_out_a_redis_outage_and_are_then_processed_once() {
    let mut w = World::new().await;
    w.set_stock("desk", 20).await;
    let redis_addr = testkit::redis_url()
        .trim_start_matches("redis://")
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(redis_addr).await;
    let mut config = w.config();
    config.service.redis.url =
        pipeline::config::RedisUrl::parse(&format!("redis://{}", proxy.addr)).unwrap();
    let p = RunningProcessor::start(config).await;

    proxy.set(ProxyMode::Down);
    for i in 0..5 {
        w.publish_order(&format!("outage-{i}"), "desk", 2).await;
    }
    eventually(
        Duration::from_secs(20),
        "the processor to hit the outage",
        || async { p.metrics().await.contains("transient_failures_total") },
    )
    .await;
    assert_eq!(
        w.counter("reserved").await,
        0,
        "nothing decided while Redis is away"
    );

    proxy.set(ProxyMode::Forward);
    w.await_decided(5, Duration::from_secs(60)).await;
    assert_eq!(w.counter("reserved").await, 5);
    assert_eq!(w.stock("desk").await, Some(10));
    assert_eq!(
        testkit::queue_depth(&w.queue("orders.dlq")).await,
        0,
        "nothing parked"
    );
    p.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn a_non_integer_stock_value_parks_the_order_at_once_and_replay_completes_it() {
    use pipeline::amqp::replay::{Parked, replay_dlq};
    // This test's own counters, exact whatever runs beside it.
    let local = testkit::LocalMetrics::install();
    let mut w = World::new().await;
    // An operator's typo and a fraction: neither is a transient failure.
    for (sku, value) in [("broken", "abc"), ("fraction", "10.5")] {
        let key = w.key(&format!("inventory:{sku}"));
        let _: () = redis::AsyncCommands::set(&mut w.redis, key, value)
            .await
            .unwrap();
    }
    let p = RunningProcessor::start(w.config()).await;
    w.publish_order("stuck", "broken", 1).await;
    w.publish_order("split", "fraction", 20).await;
    eventually(Duration::from_secs(30), "both orders parked", || async {
        testkit::queue_depth(&w.queue("orders.dlq")).await == 2
    })
    .await;
    for id in ["stuck", "split"] {
        let order = w.order(id).await;
        assert_eq!(order["status"], "parked", "{id}: {order:?}");
        assert_eq!(order["reason"], "invalid_stock", "{id}: {order:?}");
    }
    assert_eq!(w.counter("parked").await, 2);
    assert_eq!(w.counter("rejected").await, 0, "10.5 is not out_of_stock");
    let metrics = local.render();
    assert!(
        metrics.contains("orders_parked_total"),
        "the parking was counted: {metrics}"
    );
    assert!(
        !metrics.contains("transient_failures_total"),
        "parked at once, never retried as transient: {metrics}"
    );

    // Replayed while still broken: each message moves once and parks again;
    // the replay does not chase its own tail.
    assert_eq!(
        replay_dlq(&w.broker, Parked::Orders, None).await.unwrap(),
        2
    );
    eventually(Duration::from_secs(30), "both parked again", || async {
        testkit::queue_depth(&w.queue("orders.dlq")).await == 2
    })
    .await;
    assert_eq!(
        w.counter("parked").await,
        2,
        "parked orders are counted once"
    );

    // The operator fixes the values and replays the DLQ.
    w.set_stock("broken", 3).await;
    w.set_stock("fraction", 10).await;
    assert_eq!(
        replay_dlq(&w.broker, Parked::Orders, None).await.unwrap(),
        2
    );
    w.await_decided(2, Duration::from_secs(30)).await;
    assert_eq!(w.order("stuck").await["status"], "reserved");
    assert!(!w.order("stuck").await.contains_key("reason"));
    assert_eq!(w.order("split").await["status"], "rejected");
    assert_eq!(w.order("split").await["reason"], "out_of_stock");
    assert_eq!(w.stock("broken").await, Some(2));
    assert_eq!(w.counter("parked").await, 0);
    assert_eq!(testkit::queue_depth(&w.queue("orders.dlq")).await, 0);
    p.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_orders_and_leaves_the_rest_queued() {
    let mut w = World::new().await;
    w.set_stock("lamp", 1000).await;
    let p = RunningProcessor::start(w.config()).await;
    for i in 0..200 {
        w.publish_order(&format!("sd-{i}"), "lamp", 1).await;
    }
    eventually(Duration::from_secs(30), "some orders processed", || async {
        processed(&p.metrics().await, "reserved") >= 10.0
    })
    .await;
    p.stop().await;
    // Every order is either decided (and its delivery acked) or still queued.
    let decided = w.counter("reserved").await;
    let queued = i64::from(testkit::queue_depth(&w.queue("orders.queue")).await);
    assert_eq!(decided + queued, 200, "decided {decided} + queued {queued}");
    assert_eq!(w.stock("lamp").await, Some(1000 - decided));
    // A new processor finishes the rest.
    let p = RunningProcessor::start(w.config()).await;
    w.await_decided(200, Duration::from_secs(60)).await;
    assert_eq!(w.stock("lamp").await, Some(800));
    p.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn end_to_end_a_posted_order_becomes_reserved() {
    let mut w = World::new().await;
    w.set_stock("mag-safe-phone-case", 100).await;
    let p = RunningProcessor::start(w.config()).await;
    let shutdown = pipeline::shutdown::CancellationToken::new();
    let gateway_config = testkit::configs::gateway(&w.prefix);
    let gateway = api_gateway::Application::build(gateway_config, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    let server = tokio::spawn(gateway.run_until_stopped());

    let client =
        testkit::client_with_key(&testkit::mint_key(&w.prefix, testkit::TEST_CLIENT, &[]).await);
    let before = now_ms();
    let res = client
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body(r#"{"id":"e2e-1","sku":"mag-safe-phone-case","qty":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let url = format!("{base}/orders/e2e-1");
    eventually(
        Duration::from_secs(30),
        "the order to be reserved",
        || async {
            let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            v["status"] == "reserved"
        },
    )
    .await;
    let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert!(v["timestamps_ms"]["accepted"].as_u64().unwrap() >= before);
    assert!(v["timestamps_ms"]["reserved"].as_u64().unwrap() >= before);
    assert_eq!(w.stock("mag-safe-phone-case").await, Some(98));
    assert_eq!(w.counter("accepted").await, 1);
    assert_eq!(w.counter("reserved").await, 1);

    shutdown.cancel();
    server.await.unwrap().unwrap();
    p.stop().await;
    w.finish().await;
}
