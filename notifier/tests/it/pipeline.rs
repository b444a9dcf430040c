//! The whole pipeline in one process: gateway, processor and notifier.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Receiver, RunningNotifier, World, eventually, test_config};

#[tokio::test]
async fn a_posted_order_is_reserved_and_then_notified() {
    let mut w = World::new().await;
    w.set_stock("mag-safe-phone-case", 10).await;
    let rx = Receiver::start().await;
    let notifier = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;

    let shutdown = pipeline::shutdown::CancellationToken::new();
    let processor = order_processor::Processor::build(
        order_processor::ProcessorConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            broker: testkit::broker_config(&w.prefix, "order-processor-test"),
            redis: testkit::redis_config(&w.prefix),
            http: testkit::http_limits(),
            prefetch: 32,
            transient_retry: Duration::from_secs(10),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let processor = tokio::spawn(processor.run_until_stopped());
    let gateway = api_gateway::Application::build(
        api_gateway::GatewayConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            broker: testkit::broker_config(&w.prefix, "api-gateway-test"),
            redis: testkit::redis_config(&w.prefix),
            http: testkit::http_limits(),
            request_timeout: Duration::from_secs(5),
            lifetimes: api_gateway::idempotency::Lifetimes {
                lease: Duration::from_secs(30),
                done: Duration::from_secs(600),
            },
            max_qty: 1000,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    let gateway = tokio::spawn(gateway.run_until_stopped());

    let client = reqwest::Client::new();
    for _ in 0..3 {
        // A client retrying the same order: one order, one notification.
        let res = client
            .post(format!("{base}/orders"))
            .header("content-type", "application/json")
            .body(r#"{"id":"full-1","sku":"mag-safe-phone-case","qty":3}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    let url = format!("{base}/orders/full-1");
    eventually(
        Duration::from_secs(30),
        "the order to be notified",
        || async {
            let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            v["status"] == "notified"
        },
    )
    .await;
    let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    for stage in ["accepted", "reserved", "notified"] {
        assert!(v["timestamps_ms"][stage].is_u64(), "{stage} missing: {v}");
    }
    assert_eq!(rx.calls().len(), 1);
    assert_eq!(w.stock("mag-safe-phone-case").await, Some(7));
    for (name, n) in [("accepted", 1), ("reserved", 1), ("notified", 1)] {
        assert_eq!(w.counter(name).await, n, "{name}");
    }

    shutdown.cancel();
    gateway.await.unwrap().unwrap();
    processor.await.unwrap().unwrap();
    notifier.stop().await;
    w.finish().await;
}
