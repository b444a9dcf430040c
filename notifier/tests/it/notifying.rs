//! Effectively-once notifications.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use notifier::{AfterSend, SinkConfig};
use redis::AsyncCommands;

use crate::helpers::{Receiver, RunningNotifier, World, eventually, test_config};

async fn notification(w: &mut World, id: &str) -> HashMap<String, String> {
    let key = w.key(&format!("notification:{id}"));
    w.redis.hgetall(key).await.unwrap()
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_same_event_five_times_is_one_webhook_call() {
    let mut w = World::new().await;
    let rx = Receiver::start().await;
    let n = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
    for _ in 0..5 {
        w.publish_created("dup-1", "mug", 2).await;
    }
    eventually(
        Duration::from_secs(30),
        "all five deliveries handled",
        || async { metric(&n.metrics().await, "notifications_skipped_total") >= 4.0 },
    )
    .await;
    let calls = rx.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].idempotency_key, "dup-1:created");
    assert_eq!(calls[0].body["order_id"], "dup-1");
    assert_eq!(calls[0].body["qty"], 2);
    let status = notification(&mut w, "dup-1").await;
    assert_eq!(status["status"], "sent");
    assert_eq!(status["channel"], "webhook");
    assert_eq!(status["attempts"], "1");
    assert!(status.contains_key("sent_at"));
    assert_eq!(w.counter("notified").await, 1);
    assert_eq!(w.order("dup-1").await["status"], "notified");
    n.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn two_instances_send_a_thousand_notifications_none_twice() {
    // Both instances' counters, and no other test's.
    let local = testkit::LocalMetrics::install();
    let w = World::new().await;
    let rx = Receiver::start().await;
    let a = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
    let b = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
    // Every event twice, so both instances see copies of the same event.
    let world = &w;
    join_all((0..1000).flat_map(|i| {
        let id = format!("many-{i}");
        [id.clone(), id].map(|id| async move { world.publish_created(&id, "mug", 1).await })
    }))
    .await;
    let counter_key = w.key("counters");
    let redis = w.redis.clone();
    eventually(
        Duration::from_secs(120),
        "1000 notifications recorded",
        || {
            let (mut redis, key) = (redis.clone(), counter_key.clone());
            async move {
                redis
                    .hget::<_, _, Option<i64>>(&key, "notified")
                    .await
                    .unwrap()
                    == Some(1000)
            }
        },
    )
    .await;
    eventually(Duration::from_secs(30), "every copy handled", || async {
        testkit::queue_depth(&w.queue("notifier.queue")).await == 0
            && metric(&local.render(), "notifications_skipped_total") >= 1000.0
    })
    .await;
    let calls = rx.calls();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for c in &calls {
        *per_key.entry(c.idempotency_key.clone()).or_default() += 1;
    }
    assert_eq!(per_key.len(), 1000);
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(w.counter("notified").await, 1000);
    a.stop().await;
    b.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn a_flaky_receiver_gets_one_notification_after_retries() {
    let mut w = World::new().await;
    let rx = Receiver::start().await;
    rx.answer(&[500, 500, 500]);
    let n = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
    w.publish_created("flaky", "mug", 1).await;
    eventually(
        Duration::from_secs(30),
        "the notification recorded",
        || async { w.counter("notified").await == 1 },
    )
    .await;
    let answers: Vec<u16> = rx.calls().iter().map(|c| c.answered).collect();
    assert_eq!(answers, vec![500, 500, 500, 200]);
    assert!(
        rx.calls()
            .iter()
            .all(|c| c.idempotency_key == "flaky:created")
    );
    let status = notification(&mut w, "flaky").await;
    assert_eq!(status["status"], "sent");
    assert_eq!(status["attempts"], "4");
    n.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn a_refusing_receiver_parks_the_event_with_the_error_visible() {
    let mut w = World::new().await;
    let rx = Receiver::start().await;
    rx.answer(&[400]);
    let n = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
    w.publish_created("refused", "mug", 1).await;
    eventually(
        Duration::from_secs(30),
        "the event parked in notifier.dlq",
        || async { testkit::queue_depth(&w.queue("notifier.dlq")).await == 1 },
    )
    .await;
    assert_eq!(rx.calls().len(), 1, "a 4xx is not retried");
    let status = notification(&mut w, "refused").await;
    assert_eq!(status["status"], "failed");
    assert!(status["last_error"].contains("400"), "{status:?}");
    assert_eq!(w.counter("notified").await, 0);

    // The receiver is fixed; the operator replays notifier.dlq.
    let moved = pipeline::amqp::replay::replay_dlq(
        &w.broker,
        pipeline::amqp::replay::Parked::Notifications,
        None,
    )
    .await
    .unwrap();
    assert_eq!(moved, 1);
    eventually(
        Duration::from_secs(30),
        "the replayed notification sent",
        || async { w.counter("notified").await == 1 },
    )
    .await;
    assert_eq!(notification(&mut w, "refused").await["status"], "sent");
    assert_eq!(rx.calls().len(), 2, "one refused call, one accepted");
    assert_eq!(testkit::queue_depth(&w.queue("notifier.dlq")).await, 0);
    n.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn a_retried_claim_finds_its_own_token() {
    // A claim whose reply was lost is retried with the same token: it must be
    // recognised as ours, not as another instance's live claim.
    let w = World::new().await;
    use pipeline::order::{ClaimCall, NotificationClaim, claim_notifications};
    let config = testkit::redis_config(&w.prefix);
    let pool = pipeline::store::connect(&config).unwrap();
    let keys = pipeline::keys::Keys::new(config.key_prefix);
    let id = pipeline::domain::OrderId::parse("own-token").unwrap();
    // No record at all: not claimed until the caller asked the history.
    for (token, adopt, expected) in [
        ("t1", false, "unrecorded"),
        ("t1", true, "claimed"),
        ("t1", false, "claimed"),
        ("t2", false, "busy"),
    ] {
        let call = ClaimCall {
            id: &id,
            token,
            event_id: "own-token:created",
            sink: "log",
        };
        let claims = claim_notifications(&pool, &keys, &[call], Duration::from_secs(30), adopt)
            .await
            .unwrap();
        let got = match &claims[..] {
            [NotificationClaim::Unrecorded] => "unrecorded",
            [NotificationClaim::Claimed] => "claimed",
            [NotificationClaim::Busy(left)] => {
                assert!(*left <= Duration::from_secs(30), "{left:?}");
                "busy"
            }
            other => panic!("token {token}: {other:?}"),
        };
        assert_eq!(got, expected, "token {token}");
    }
    assert_eq!(w.counter("notifications_sending").await, 1, "claimed once");
    w.finish().await;
}

#[tokio::test]
async fn a_crash_between_send_and_record_resends_with_the_same_key() {
    let mut w = World::new().await;
    let rx = Receiver::start().await;
    // The first send "crashes" before it is recorded: its claim stays until
    // it expires, then the redelivered event is sent again.
    let crashed = Arc::new(AtomicBool::new(false));
    let flag = crashed.clone();
    let hook: AfterSend = Arc::new(move |_n| {
        let flag = flag.clone();
        Box::pin(async move { !flag.swap(true, Ordering::SeqCst) })
    });
    let mut config = test_config(&w.prefix, rx.sink());
    config.claim = Duration::from_secs(2);
    let n = RunningNotifier::start(config, Some(hook)).await;
    w.publish_created("crash", "mug", 1).await;
    eventually(Duration::from_secs(30), "the re-send recorded", || async {
        w.counter("notified").await == 1
    })
    .await;
    let calls = rx.calls();
    assert_eq!(calls.len(), 2, "sent, crashed, sent again: {calls:?}");
    assert!(calls.iter().all(|c| c.idempotency_key == "crash:created"));
    assert_eq!(notification(&mut w, "crash").await["status"], "sent");
    n.stop().await;
    w.finish().await;
}

#[tokio::test]
async fn malformed_events_are_dead_lettered_and_the_log_sink_works() {
    // This test's own counters, exact whatever runs beside it.
    let local = testkit::LocalMetrics::install();
    let mut w = World::new().await;
    let n = RunningNotifier::start(test_config(&w.prefix, SinkConfig::log()), None).await;
    let exchange = w.broker.topology().events_exchange();
    w.publish_to(&exchange, "order.created", "junk", b"{nope")
        .await;
    w.publish_created("logged", "mug", 1).await;
    eventually(
        Duration::from_secs(30),
        "junk parked, order notified",
        || async {
            testkit::queue_depth(&w.queue("notifier.dlq")).await == 1
                && w.counter("notified").await == 1
        },
    )
    .await;
    let status = notification(&mut w, "logged").await;
    assert_eq!(status["channel"], "log");
    let page = local.render();
    assert_eq!(metric(&page, "notifications_sent_total{sink=\"log\"}"), 1.0);
    n.stop().await;
    w.finish().await;
}
