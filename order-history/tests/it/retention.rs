//! Redis keeps only the hot path: finished orders expire once the history
//! holds them, and every promise about them survives the expiry.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::{Pipeline, Replica, World, drop_schema, eventually, history_config, metrics};

#[tokio::test]
async fn a_finished_order_expires_from_redis_and_is_never_decided_or_notified_again() {
    // This test's own counters, exact whatever runs beside it.
    let local = testkit::LocalMetrics::install();
    let mut w = World::new().await;
    let mut config = history_config(&w.prefix, "r1");
    config.retention = Duration::from_secs(1);
    let r = Replica::start(config).await;
    let p = Pipeline::start(&w.prefix, Some(r.client())).await;
    w.set_stock("mug", 5).await;
    assert_eq!(
        p.post(r#"{"id":"old","sku":"mug","qty":2}"#).await.status(),
        202
    );
    assert_eq!(
        p.post(r#"{"id":"live","sku":"ghost","qty":1}"#)
            .await
            .status(),
        202
    );
    r.await_json("/orders/old", "old notified", |o| o["status"] == "notified")
        .await;
    r.await_json("/orders/live", "live rejected", |o| {
        o["status"] == "rejected"
    })
    .await;

    // Both records go; the history still answers through the gateway.
    let redis = w.redis.clone();
    let keys = [
        w.key("order:old"),
        w.key("notification:old"),
        w.key("order:live"),
    ];
    eventually(Duration::from_secs(10), "the records expired", || {
        let (mut redis, keys) = (redis.clone(), keys.clone());
        async move {
            let n: u32 = redis.exists(&keys).await.unwrap();
            n == 0
        }
    })
    .await;
    let res = p.get("/orders/old").await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["status"], "notified");
    assert_eq!(view["source"], "history");
    assert_eq!(p.get("/orders/never").await.status(), 404);

    // A very late replay of the order and of its event: asked of the
    // history, acked, nothing decided or sent again.
    let before = w.counters().await;
    w.publish_order("old", "mug", 2).await;
    w.publish_created("old", "mug", 2).await;
    eventually(Duration::from_secs(20), "both replays handled", || async {
        let m = local.render();
        m.contains("outcome=\"expired\"} 1") && m.contains("notifications_skipped_total 1")
    })
    .await;
    assert_eq!(
        w.counters().await,
        before,
        "no second decision or notification"
    );
    assert_eq!(w.stock("mug").await, Some(3));
    let old = w.key("order:old");
    let kept: bool = w.redis.exists(&old).await.unwrap();
    assert!(!kept, "the replay did not recreate a record");

    // A client reusing the id: the same payload is the same finished order
    // (its acceptance replayed, nothing decided), another payload a conflict.
    let again = p.post(r#"{"id":"old","sku":"mug","qty":2}"#).await;
    assert_eq!(again.status(), 202);
    assert!(again.headers().contains_key("idempotent-replayed"));
    let other = p.post(r#"{"id":"old","sku":"mug","qty":1}"#).await;
    assert_eq!(other.status(), 409);
    assert_eq!(
        other.json::<Value>().await.unwrap()["type"],
        "/problems/order-id-conflict"
    );
    assert_eq!(w.counters().await, before, "the reused id made no order");
    assert_eq!(w.stock("mug").await, Some(3));

    // A key that outlived its order (linked to it by a retry, so its own TTL
    // ran on): a retry with it finds the retired id, not a new order.
    let key = w.key("idemp:k-linked");
    let _: () = w
        .redis
        .hset_multiple(
            &key,
            &[
                ("fingerprint", r#"{"id":null,"qty":2,"sku":"mug"}"#),
                ("id", "old"),
                ("state", "linked"),
            ],
        )
        .await
        .unwrap();
    let res = p
        .client
        .post(format!("{}/orders", p.base))
        .header("content-type", "application/json")
        .header("idempotency-key", "k-linked")
        .body(r#"{"sku":"mug","qty":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], "old");
    assert_eq!(w.counters().await, before, "the key's retry made no order");

    // An order published around the gateway, never seen by the history, is
    // still adopted and decided.
    w.publish_order("around", "mug", 1).await;
    r.await_json("/orders/around", "around notified", |o| {
        o["status"] == "notified"
    })
    .await;
    assert_eq!(w.stock("mug").await, Some(2));
    p.stop().await;
    r.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}

#[tokio::test]
async fn an_id_the_filter_flags_but_the_history_never_saw_is_a_new_order() {
    let mut w = World::new().await;
    let r = Replica::start(history_config(&w.prefix, "r1")).await;
    let p = Pipeline::start(&w.prefix, Some(r.client())).await;
    w.set_stock("mug", 5).await;
    // Put "lucky" into the filter the way retention does, then forget it: to
    // the gateway it now looks like a retired id the history never saw (a
    // false positive of the filter).
    let pool = pipeline::store::connect(&testkit::redis_config(&w.prefix)).unwrap();
    let keys = pipeline::keys::Keys::new(testkit::redis_config(&w.prefix).key_prefix);
    let order = w.key("order:lucky");
    let _: () = w.redis.hset(&order, "status", "notified").await.unwrap();
    let id = pipeline::domain::OrderId::parse("lucky").unwrap();
    let retired = pipeline::order::retire(&pool, &keys, &[id], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(retired, 1);
    let _: () = w.redis.del(&order).await.unwrap();

    let res = p.post(r#"{"id":"lucky","sku":"mug","qty":1}"#).await;
    assert_eq!(res.status(), 202);
    assert!(!res.headers().contains_key("idempotent-replayed"));
    r.await_json("/orders/lucky", "lucky notified", |o| {
        o["status"] == "notified"
    })
    .await;
    assert_eq!(w.stock("mug").await, Some(4));
    assert!(
        metrics(p.processor)
            .await
            .contains("orders_processed_total")
    );

    // With no history answering, such an id is not guessed about.
    p.stop().await;
    let dead = pipeline::history::HistoryClientConfig {
        timeout: Duration::from_millis(300),
        ..pipeline::history::HistoryClientConfig::at(vec!["http://127.0.0.1:9".into()])
    };
    let p = Pipeline::start(&w.prefix, Some(dead)).await;
    let order = w.key("order:unlucky");
    let _: () = w.redis.hset(&order, "status", "rejected").await.unwrap();
    let id = pipeline::domain::OrderId::parse("unlucky").unwrap();
    pipeline::order::retire(&pool, &keys, &[id], Duration::from_secs(60))
        .await
        .unwrap();
    let _: () = w.redis.del(&order).await.unwrap();
    let res = p.post(r#"{"id":"unlucky","sku":"mug","qty":1}"#).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["type"],
        "/problems/history-unavailable"
    );
    let claimed: bool = w.redis.exists(w.key("order:unlucky")).await.unwrap();
    assert!(!claimed, "nothing claimed for an id that cannot be checked");
    p.stop().await;
    r.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}
