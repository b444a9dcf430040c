//! The HTTP API: pages, filters, one order's timeline, errors, and the whole
//! pipeline's orders with their reasons.

use serde_json::Value;

use crate::helpers::{Pipeline, Replica, World, drop_schema, history_config};

fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn orders_page_newest_first_and_filter_by_status_sku_and_time() {
    let w = World::new().await;
    for i in 0..25 {
        let sku = if i % 2 == 0 { "even" } else { "odd" };
        w.publish_order(&format!("p-{i:02}"), sku, 1).await;
        if i % 5 == 0 {
            w.publish_rejected(&format!("p-{i:02}"), sku, "unknown_sku")
                .await;
        }
    }
    let r = Replica::start(history_config(&w.prefix, "r1")).await;
    r.await_json("/stats", "25 orders", |s| {
        s["orders"]["total"] == 25 && s["orders"]["rejected"] == 5
    })
    .await;

    // Keyset pages of 10: every order once, newest first.
    let mut seen = Vec::new();
    let mut path = "/orders?limit=10".to_owned();
    loop {
        let page = r.json(&path).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/orders?limit=10&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("p-{i:02}")).collect();
    assert_eq!(seen, expected);

    let rejected = r.json("/orders?status=rejected").await;
    assert_eq!(ids(&rejected), ["p-20", "p-15", "p-10", "p-05", "p-00"]);
    assert_eq!(rejected["orders"][0]["reason"], "unknown_sku");
    assert_eq!(rejected["orders"][0]["source"], "history");
    let odd_rejected = r.json("/orders?status=rejected&sku=odd").await;
    assert_eq!(ids(&odd_rejected), ["p-15", "p-05"]);
    assert_eq!(
        r.json("/orders?sku=odd&limit=1000").await["orders"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    // Placed at 1 ms after the epoch (the test publisher's time).
    assert_eq!(
        ids(&r.json("/orders?since=2026-01-01T00:00:00Z").await).len(),
        0
    );
    assert_eq!(
        ids(&r.json("/orders?until=2026-01-01T00:00:00Z&limit=3").await).len(),
        3
    );
    assert_eq!(ids(&r.json("/orders?since=0&until=2").await).len(), 25);

    // One order with its timeline.
    let one = r.json("/orders/p-05").await;
    assert_eq!(one["status"], "rejected");
    let kinds: Vec<&str> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["placed", "rejected"]);
    assert_eq!(one["events"][1]["id"], "p-05:rejected");
    assert_eq!(one["timestamps_ms"]["rejected"], 7);

    // Errors are problems naming what was wrong.
    for (path, status, field) in [
        ("/orders?status=shipped", 400, "status"),
        ("/orders?limit=0", 400, "limit"),
        ("/orders?cursor=abc", 400, "cursor"),
        ("/orders?since=yesterday-ish", 400, "since"),
        ("/orders?sku=a%20b", 400, "sku"),
        ("/orders?stauts=rejected", 400, "stauts"),
        ("/orders/has%20space", 422, "id"),
    ] {
        let res = r.get(path).await;
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{path}: {body}");
    }
    let missing = r.get("/orders/never-placed").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["type"],
        "/problems/order-not-found"
    );
    r.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}

#[tokio::test]
async fn parked_and_notified_orders_appear_with_their_reasons_and_stats_equal_the_counters() {
    let mut w = World::new().await;
    let r = Replica::start(history_config(&w.prefix, "r1")).await;
    let p = Pipeline::start(&w.prefix, Some(r.client())).await;
    w.set_stock("mug", 5).await;
    let broken = w.key("inventory:broken");
    let _: () = redis::AsyncCommands::set(&mut w.redis, &broken, "abc")
        .await
        .unwrap();
    for body in [
        r#"{"id":"ok","sku":"mug","qty":2}"#,
        r#"{"id":"short","sku":"mug","qty":9}"#,
        r#"{"id":"nosku","sku":"ghost","qty":1}"#,
        r#"{"id":"stuck","sku":"broken","qty":1}"#,
    ] {
        assert_eq!(p.post(body).await.status(), 202, "{body}");
    }
    let ok = r
        .await_json("/orders/ok", "ok notified", |o| o["status"] == "notified")
        .await;
    let kinds: Vec<&str> = ok["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["placed", "created", "notified"]);
    assert!(
        ok["events"][0]["trace_id"]
            .as_str()
            .is_some_and(|t| t.len() == 32)
    );
    let short = r
        .await_json("/orders/short", "short rejected", |o| {
            o["status"] == "rejected"
        })
        .await;
    assert_eq!(short["reason"], "out_of_stock");
    let nosku = r
        .await_json("/orders/nosku", "nosku rejected", |o| {
            o["status"] == "rejected"
        })
        .await;
    assert_eq!(nosku["reason"], "unknown_sku");
    let stuck = r
        .await_json("/orders/stuck", "stuck parked", |o| o["status"] == "parked")
        .await;
    assert_eq!(stuck["reason"], "invalid_stock");

    // The operator fixes the value and replays: the order completes.
    let _: () = redis::AsyncCommands::set(&mut w.redis, &broken, 3)
        .await
        .unwrap();
    let moved =
        pipeline::amqp::replay::replay_dlq(&w.broker, pipeline::amqp::replay::Parked::Orders, None)
            .await
            .unwrap();
    assert_eq!(moved, 1);
    let stuck = r
        .await_json("/orders/stuck", "stuck notified", |o| {
            o["status"] == "notified"
        })
        .await;
    assert_eq!(stuck["reason"], Value::Null);
    let kinds: Vec<&str> = stuck["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["placed", "parked", "created", "notified"]);

    // Drained: /stats equals the Redis counters.
    let stats = r
        .await_json("/stats", "every event", |s| s["events"]["notified"] == 2)
        .await;
    let c = w.counters().await;
    assert_eq!(stats["orders"]["total"], c["accepted"]);
    assert_eq!(stats["events"]["created"], c["reserved"]);
    assert_eq!(stats["events"]["rejected"], c["rejected"]);
    assert_eq!(stats["events"]["notified"], c["notified"]);
    assert_eq!(
        stats["orders"]["parked"],
        c.get("parked").copied().unwrap_or(0)
    );
    p.stop().await;
    r.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}
