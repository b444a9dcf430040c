//! Redis keeps only the hot path: finished orders expire once the history
//! holds them, and every promise about them survives the expiry.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::{Pipeline, Replica, World, drop_schema, eventually, history_config, metrics};

#[tokio::test]
async fn a_finished_order_expires_from_redis_and_is_never_decided_or_notified_again() {
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
    let (processor, notifier) = (p.processor, p.notifier);
    eventually(
        Duration::from_secs(20),
        "both replays handled",
        || async move {
            metrics(processor).await.contains("outcome=\"expired\"} 1")
                && metrics(notifier)
                    .await
                    .contains("notifications_skipped_total 1")
        },
    )
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
