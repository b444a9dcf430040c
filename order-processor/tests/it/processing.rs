//! Deciding orders: exactly once, never oversold, the right reasons.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::join_all;
use pipeline::amqp::Broker;

use crate::helpers::{ProcessorWorld, RunningProcessor, World, eventually, once_hook};

#[tokio::test]
async fn two_processors_never_oversell_under_a_concurrent_burst() {
    let mut w = World::new().await;
    w.set_stock("widget", 100).await;
    let a = RunningProcessor::start(w.config()).await;
    let b = RunningProcessor::start(w.config()).await;

    let world = &w;
    join_all(
        (0..300)
            .map(|i| async move { world.publish_order(&format!("race-{i}"), "widget", 1).await }),
    )
    .await;
    w.await_decided(300, Duration::from_secs(60)).await;

    assert_eq!(w.stock("widget").await, Some(0));
    let c = w.counters().await;
    assert_eq!(c.get("reserved"), Some(&100), "{c:?}");
    assert_eq!(c.get("rejected"), Some(&200), "{c:?}");
    assert_eq!(c.get("rejected_out_of_stock"), Some(&200), "{c:?}");
    // One event per order, routed by outcome.
    eventually(Duration::from_secs(10), "events routed", || async {
        testkit::queue_depth(&w.queue("notifier.queue")).await == 100
            && testkit::queue_depth(&w.queue("orders.rejected")).await == 200
    })
    .await;
    let order = w.order("race-7").await;
    assert!(matches!(order["status"].as_str(), "reserved" | "rejected"));
    a.stop().await;
    b.stop().await;
    w.finish().await;
}

/// Any stock Redis counts with is decided on, up to i64::MAX (beyond the
/// 2^53 a Lua number holds exactly); what Redis would refuse to DECRBY parks.
#[tokio::test]
async fn every_64_bit_stock_is_decided_and_what_redis_cannot_count_parks() {
    let mut w = World::new().await;
    w.set_stock("vast", i64::MAX).await;
    w.set_stock("deep-debt", i64::MIN).await;
    w.set_stock("near-2-53", 9_007_199_254_740_993).await;
    for (sku, raw) in [("too-big", "9223372036854775808"), ("padded", "007")] {
        let key = w.key(&format!("inventory:{sku}"));
        let _: () = redis::AsyncCommands::set(&mut w.redis, key, raw)
            .await
            .unwrap();
    }
    let p = RunningProcessor::start(w.config()).await;
    w.publish_order("vast-1", "vast", 3).await;
    w.publish_order("debt-1", "deep-debt", 1).await;
    w.publish_order("odd-1", "near-2-53", 1).await;
    w.publish_order("big-1", "too-big", 1).await;
    w.publish_order("pad-1", "padded", 1).await;
    w.await_decided(3, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "two orders parked", || async {
        testkit::queue_depth(&w.queue("orders.dlq")).await == 2
    })
    .await;
    assert_eq!(w.order("vast-1").await["status"], "reserved");
    assert_eq!(w.stock("vast").await, Some(i64::MAX - 3));
    assert_eq!(w.order("debt-1").await["reason"], "out_of_stock");
    assert_eq!(w.stock("deep-debt").await, Some(i64::MIN));
    assert_eq!(w.order("odd-1").await["status"], "reserved");
    assert_eq!(w.stock("near-2-53").await, Some(9_007_199_254_740_992));
    for id in ["big-1", "pad-1"] {
        let order = w.order(id).await;
        assert_eq!(order["status"], "parked", "{id}: {order:?}");
        assert_eq!(order["reason"], "invalid_stock", "{id}: {order:?}");
    }
    p.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn unknown_sku_and_too_large_qty_are_rejected_with_their_reason() {
    let mut w = World::new().await;
    w.set_stock("lamp", 5).await;
    let p = RunningProcessor::start(w.config()).await;
    w.publish_order("too-many", "lamp", 6).await;
    w.publish_order("no-such", "ghost", 1).await;
    w.publish_order("fits", "lamp", 5).await;
    w.await_decided(3, Duration::from_secs(30)).await;

    let too_many = w.order("too-many").await;
    assert_eq!(too_many["status"], "rejected");
    assert_eq!(too_many["reason"], "out_of_stock");
    assert!(too_many.contains_key("rejected_at"));
    let ghost = w.order("no-such").await;
    assert_eq!(ghost["status"], "rejected");
    assert_eq!(ghost["reason"], "unknown_sku");
    assert_eq!(w.order("fits").await["status"], "reserved");
    assert_eq!(
        w.stock("lamp").await,
        Some(0),
        "only the order that fits took stock"
    );
    assert_eq!(
        w.stock("ghost").await,
        None,
        "an unknown SKU is not created"
    );
    let c = w.counters().await;
    assert_eq!(c.get("rejected_unknown_sku"), Some(&1));
    assert_eq!(c.get("rejected_out_of_stock"), Some(&1));

    let rejected = testkit::drain(&w.queue("orders.rejected")).await;
    let ids: HashSet<String> = rejected
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        HashSet::from([
            "too-many:rejected".to_owned(),
            "no-such:rejected".to_owned()
        ])
    );
    let event: serde_json::Value = serde_json::from_slice(&rejected[0].delivery.data).unwrap();
    assert_eq!(event["outcome"], "rejected");
    assert!(event["reason"].is_string());
    p.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn a_redelivered_order_is_decided_once_even_when_the_link_dies_before_the_ack() {
    let mut w = World::new().await;
    w.set_stock("phone", 10).await;
    // Close the processor's connection right after the first decision is
    // committed, before its event is published and the delivery acked: the
    // broker redelivers it.
    let cell: Arc<OnceLock<Broker>> = Arc::new(OnceLock::new());
    let hook_cell = cell.clone();
    let hook = once_hook(move || {
        let cell = hook_cell.clone();
        async move {
            let link = cell.get().unwrap().current().unwrap();
            link.connection
                .close(320, "test: link dies after commit".into())
                .await
                .unwrap();
        }
    });
    let p = RunningProcessor::start_with(w.config(), Some(hook)).await;
    cell.set(p.broker.clone()).ok().unwrap();

    w.publish_order("redo", "phone", 2).await;
    w.await_decided(1, Duration::from_secs(30)).await;
    // Four more copies of the same order (a client retry after a confirm
    // timeout publishes the same message id again).
    for _ in 0..4 {
        w.publish_order("redo", "phone", 2).await;
    }
    eventually(
        Duration::from_secs(30),
        "every copy processed and acked",
        || async {
            let m = p.metrics().await;
            processed(&m, "replayed") >= 5.0
                && testkit::queue_depth(&w.queue("orders.queue")).await == 0
        },
    )
    .await;

    assert_eq!(w.stock("phone").await, Some(8), "decremented once");
    assert_eq!(w.counter("reserved").await, 1, "counted once");
    let events = testkit::drain(&w.queue("notifier.queue")).await;
    assert!(
        events.len() >= 5,
        "the event is re-published on every redelivery"
    );
    let ids: HashSet<String> = events
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        HashSet::from(["redo:created".to_owned()]),
        "one effect downstream"
    );
    let m = p.metrics().await;
    assert!(
        m.contains("orders_redelivered_total"),
        "the redelivery was counted"
    );
    p.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_and_valid_ones_around_them_flow() {
    let mut w = World::new().await;
    w.set_stock("cup", 10).await;
    let p = RunningProcessor::start(w.config()).await;
    w.publish_order("ok-1", "cup", 1).await;
    w.publish_raw("poison-1", b"not json at all").await;
    w.publish_raw(
        "poison-2",
        br#"{"id":"x","sku":"cup","qty":0,"placed_at_ms":1}"#,
    )
    .await;
    w.publish_raw(
        "poison-3",
        br#"{"id":"x","sku":"cup","qty":1,"placed_at_ms":1,"evil":true}"#,
    )
    .await;
    w.publish_order("ok-2", "cup", 1).await;
    w.await_decided(2, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "poison in orders.dlq", || async {
        testkit::queue_depth(&w.queue("orders.dlq")).await == 3
    })
    .await;
    assert_eq!(w.stock("cup").await, Some(8));
    let parked: HashSet<String> = testkit::drain(&w.queue("orders.dlq"))
        .await
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        parked,
        HashSet::from(["poison-1".into(), "poison-2".into(), "poison-3".into()])
    );
    p.stop().await;
    w.finish().await;
}

/// `orders_processed_total{outcome="..."}` from a Prometheus text page.
pub fn processed(metrics: &str, outcome: &str) -> f64 {
    let prefix = format!("orders_processed_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_message_that_disagrees_with_the_record_is_parked_and_never_merged() {
    let mut w = World::new().await;
    w.set_stock("a", 10).await;
    w.set_stock("b", 10).await;
    // The gateway accepted m1 as 1 x a.
    let key = w.key("order:m1");
    let _: () = redis::AsyncCommands::hset_multiple(
        &mut w.redis,
        key,
        &[
            ("sku", "a"),
            ("qty", "1"),
            ("status", "accepted"),
            ("accepted_at", "1"),
        ],
    )
    .await
    .unwrap();
    let p = RunningProcessor::start(w.config()).await;
    // A message naming m1 with another payload: an anomaly.
    w.publish_order("m1", "b", 5).await;
    eventually(Duration::from_secs(30), "the anomaly parked", || async {
        testkit::queue_depth(&w.queue("orders.dlq")).await == 1
    })
    .await;
    assert_eq!(w.counter("anomalies").await, 1);
    assert_eq!(
        w.stock("b").await,
        Some(10),
        "the disagreeing message moved no stock"
    );
    assert!(
        !w.order("m1").await.contains_key("outcome"),
        "nothing decided from it"
    );
    let mut redis = w.redis.clone();
    let listed: Vec<String> = redis::AsyncCommands::lrange(&mut redis, w.key("anomalies"), 0, -1)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].contains("\"message_id\":\"m1\""), "{listed:?}");

    // The real message is decided from the record.
    w.publish_order("m1", "a", 1).await;
    w.await_decided(1, Duration::from_secs(30)).await;
    let order = w.order("m1").await;
    assert_eq!(
        (order["status"].as_str(), order["sku"].as_str()),
        ("reserved", "a")
    );
    assert_eq!(w.stock("a").await, Some(9));
    eventually(
        Duration::from_secs(10),
        "the event, built from the record",
        || async { testkit::queue_depth(&w.queue("notifier.queue")).await == 1 },
    )
    .await;
    let events = testkit::drain(&w.queue("notifier.queue")).await;
    let event: serde_json::Value = serde_json::from_slice(&events[0].delivery.data).unwrap();
    assert_eq!(
        (event["sku"].as_str(), event["qty"].as_u64()),
        (Some("a"), Some(1))
    );
    p.stop().await;
    w.finish().await;
}

/// An order placed against a quote: the message's quote is part of what must
/// match the record, and an order adopted without a record keeps its terms.
#[tokio::test]
async fn a_quote_backed_order_is_checked_against_its_record_and_adopted_with_its_terms() {
    let mut w = World::new().await;
    w.set_stock("q", 10).await;
    let quoted = |id: &str, quote_id: &str| {
        format!(
            r#"{{"id":"{id}","sku":"q","qty":2,"placed_at_ms":1,"quote":{{"quote_id":"{quote_id}","supplier":"globex","unit_price_minor":1190,"total_minor":2380,"currency":"EUR","delivery_days":5}}}}"#
        )
    };
    let quote_id = "q-0123456789abcdef0123456789abcdef";
    // The gateway accepted qm1 as 2 x q without a quote.
    let key = w.key("order:qm1");
    let _: () = redis::AsyncCommands::hset_multiple(
        &mut w.redis,
        key,
        &[
            ("sku", "q"),
            ("qty", "2"),
            ("status", "accepted"),
            ("accepted_at", "1"),
        ],
    )
    .await
    .unwrap();
    let p = RunningProcessor::start(w.config()).await;
    // A message naming qm1 with a quote the record does not have: an anomaly.
    w.publish_raw("qm1", quoted("qm1", quote_id).as_bytes())
        .await;
    eventually(Duration::from_secs(30), "the anomaly parked", || async {
        testkit::queue_depth(&w.queue("orders.dlq")).await == 1
    })
    .await;
    assert_eq!(w.stock("q").await, Some(10));

    // No record at all (Redis lost it, no history): adopted with its terms.
    w.publish_raw("qm2", quoted("qm2", quote_id).as_bytes())
        .await;
    w.await_decided(1, Duration::from_secs(30)).await;
    let order = w.order("qm2").await;
    assert_eq!(order.get("quote_id").map(String::as_str), Some(quote_id));
    assert_eq!(order.get("supplier").map(String::as_str), Some("globex"));
    assert_eq!(
        order.get("unit_price_minor").map(String::as_str),
        Some("1190")
    );
    assert_eq!(w.stock("q").await, Some(8));
    p.stop().await;
    w.finish().await;
}

/// The sum of a metric's series on a Prometheus text page.
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_batch_is_decided_together_each_order_once_and_a_poison_message_parks_alone() {
    // This test's own counters, exact whatever runs beside it.
    let local = testkit::LocalMetrics::install();
    let mut w = World::new().await;
    w.set_stock("mug", 30).await;
    // Accepted orders, recorded as the gateway records them, queued before
    // the processor starts so that they reach it together.
    for i in 0..40 {
        let id = format!("b-{i}");
        let record = w.key(&format!("order:{id}"));
        let _: () = redis::AsyncCommands::hset_multiple(
            &mut w.redis,
            record,
            &[("sku", "mug"), ("qty", "1"), ("status", "accepted")],
        )
        .await
        .unwrap();
        w.publish_order(&id, "mug", 1).await;
        if i == 20 {
            // A poison message in the middle of the batch.
            w.publish_raw("poison", b"{").await;
        }
    }
    // The same order once more (a gateway that republished it).
    w.publish_order("b-3", "mug", 1).await;
    let p = RunningProcessor::start(w.config()).await;
    w.await_decided(40, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(30),
        "poison parked, the rest acked",
        || async {
            testkit::queue_depth(&w.queue("orders.dlq")).await == 1
                && testkit::queue_depth(&w.queue("orders.queue")).await == 0
        },
    )
    .await;
    assert_eq!(w.stock("mug").await, Some(0));
    let c = w.counters().await;
    assert_eq!(c.get("reserved"), Some(&30), "{c:?}");
    assert_eq!(c.get("rejected"), Some(&10), "{c:?}");
    for i in 0..40 {
        let order = w.order(&format!("b-{i}")).await;
        assert_eq!(
            order.get("decisions").map(String::as_str),
            Some("1"),
            "b-{i}: {order:?}"
        );
    }
    let m = local.render();
    // 42 deliveries, handed out in batches and acked with multiple acks.
    let batches = metric_sum(&m, "worker_batches_total");
    let frames = metric_sum(&m, "settle_frames_total");
    assert_eq!(metric_sum(&m, "deliveries_settled_total"), 42.0, "{m}");
    assert!(batches < 42.0, "{batches} batches for 42 deliveries");
    assert!(frames < 42.0, "{frames} settle frames for 42 deliveries");
    assert_eq!(processed(&m, "replayed"), 1.0, "the republished b-3");
    p.stop().await;
    w.finish().await;
}
