//! Applying the stream: exactly once across redeliveries, restarts, rewinds,
//! rebuilds and failovers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::helpers::{Replica, World, drop_schema, eventually, history_config, snapshot, sql};

/// Publishes `n` placed orders `<tag>-<i>` (and a rejection for every third).
async fn publish_orders(w: &World, tag: &str, n: usize) -> usize {
    let mut events = 0;
    for i in 0..n {
        let id = format!("{tag}-{i}");
        w.publish_order(&id, "mug", 1).await;
        events += 1;
        if i % 3 == 0 {
            w.publish_rejected(&id, "mug", "out_of_stock").await;
            events += 1;
        }
    }
    events
}

async fn await_applied(r: &Replica, events: u64) {
    let state = r.state.clone();
    eventually(
        Duration::from_secs(30),
        &format!("{events} events applied"),
        || {
            let state = state.clone();
            async move { state.applied.load(Ordering::Relaxed) >= events }
        },
    )
    .await;
}

#[tokio::test]
async fn resume_from_the_checkpoint_and_a_rewind_replays_nothing_twice() {
    let w = World::new().await;
    let config = history_config(&w.prefix, "r1");
    let first = publish_orders(&w, "a", 6).await as u64;
    let r = Replica::start(config.clone()).await;
    await_applied(&r, first).await;
    r.stop().await;

    // Restart: only what came since is applied.
    let more = publish_orders(&w, "b", 3).await as u64;
    let r = Replica::start(config.clone()).await;
    await_applied(&r, more).await;
    let stats = r.json("/stats").await;
    assert_eq!(stats["orders"]["total"], 9);
    assert_eq!(stats["events"]["placed"], 9);
    assert_eq!(
        r.state.applied.load(Ordering::Relaxed),
        more,
        "nothing re-applied"
    );
    assert_eq!(r.state.duplicates.load(Ordering::Relaxed), 0);
    r.stop().await;
    let before = snapshot(&w.prefix).await;

    // A lost checkpoint (worse than a crash between commit and ack): the
    // whole stream comes again, and every event is a recognised duplicate.
    sql(&w.prefix)
        .await
        .execute("DELETE FROM checkpoint", &[])
        .await
        .unwrap();
    let r = Replica::start(config.clone()).await;
    let state = r.state.clone();
    let total = first + more;
    eventually(Duration::from_secs(30), "the replay seen", || {
        let state = state.clone();
        async move { state.duplicates.load(Ordering::Relaxed) >= total }
    })
    .await;
    assert_eq!(r.state.applied.load(Ordering::Relaxed), 0);
    assert_eq!(snapshot(&w.prefix).await, before, "a replay changes no row");
    r.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}

#[tokio::test]
async fn rebuild_from_first_gives_the_same_rows() {
    let w = World::new().await;
    let config = history_config(&w.prefix, "r1");
    let events = publish_orders(&w, "o", 9).await as u64;
    let r = Replica::start(config.clone()).await;
    await_applied(&r, events).await;

    // Refused while a replica is active.
    let err = order_history::rebuild(config.clone(), Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("stop every order-history replica"),
        "{err}"
    );
    r.stop().await;
    let before = snapshot(&w.prefix).await;
    assert_eq!(before.1.len() as u64, events);

    let rebuilt = order_history::rebuild(config.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(rebuilt.events, events);
    assert_eq!(snapshot(&w.prefix).await, before);
    drop_schema(&w.prefix).await;
    w.finish().await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_active_replica_stops() {
    let w = World::new().await;
    let one = Replica::start(history_config(&w.prefix, "r1")).await;
    let two = Replica::start(history_config(&w.prefix, "r2")).await;
    let (a, b) = (one.state.clone(), two.state.clone());
    eventually(Duration::from_secs(10), "one active replica", || {
        let (a, b) = (a.clone(), b.clone());
        async move { a.is_active() != b.is_active() }
    })
    .await;
    let (active, standby) = if one.state.is_active() {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(standby.json("/health").await["role"], "standby");
    assert_eq!(active.json("/health").await["role"], "active");

    let first = publish_orders(&w, "x", 4).await as u64;
    await_applied(&active, first).await;
    active.stop().await;
    let more = publish_orders(&w, "y", 4).await as u64;
    await_applied(&standby, more).await;
    assert!(standby.state.is_active());
    let stats = standby
        .await_json("/stats", "every order", |s| s["orders"]["total"] == 8)
        .await;
    assert_eq!(stats["events"]["placed"], 8);
    assert_eq!(standby.state.applied.load(Ordering::Relaxed), more);
    // The standby serves the same reads.
    let health = standby.json("/health").await;
    assert_eq!(health["role"], "active");
    standby.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}

#[tokio::test]
async fn messages_that_are_no_order_event_are_kept_and_skipped() {
    let w = World::new().await;
    let exchange = w.broker.topology().events_exchange();
    w.publish_to(&exchange, "order.shipped", "s-1", b"{\"id\":\"s-1\"}")
        .await;
    w.publish_to(&exchange, "order.notified", "s-2:notified", b"not json")
        .await;
    w.publish_order("after", "mug", 1).await;
    let r = Replica::start(history_config(&w.prefix, "r1")).await;
    let stats = r
        .await_json("/stats", "the order after the junk", |s| {
            s["orders"]["total"] == 1
        })
        .await;
    assert_eq!(stats["unreadable"], 2);
    let rows = sql(&w.prefix)
        .await
        .query(
            "SELECT routing_key, error FROM unreadable_events ORDER BY stream_offset",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "order.shipped");
    assert!(rows[1].get::<_, String>(1).contains("notified body"));
    r.stop().await;
    drop_schema(&w.prefix).await;
    w.finish().await;
}
