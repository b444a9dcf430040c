//! T1–T7. Each prints its ledger and fails on a lost or duplicated order.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::run;
use pipeline::amqp::{Broker, Outgoing};
use pipeline::messages::{ROUTE_NEW_ORDER, ROUTE_ORDER_CREATED};
use pipeline::shutdown::CancellationToken;
use pipeline::trace::TraceParent;
use redis::AsyncCommands;

use crate::harness::{ProxyMode, TcpProxy, Wiring, check, eventually, free_port, orders, out_dir};

/// Waits until the run has `n` orders accepted (the gateway's counter).
async fn until_accepted(w: &Wiring, n: i64) {
    let key = format!("{}counters", w.key_prefix());
    let url = w.redis_url.clone();
    eventually(
        Duration::from_secs(120),
        &format!("{n} orders accepted"),
        || {
            let (key, url) = (key.clone(), url.clone());
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                c.hget::<_, _, Option<i64>>(&key, "accepted")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0)
                    >= n
            }
        },
    )
    .await;
}

async fn accepted_now(w: &Wiring) -> i64 {
    let client = redis::Client::open(w.redis_url.clone()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    c.hget::<_, _, Option<i64>>(format!("{}counters", w.key_prefix()), "accepted")
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Seconds from `since` (the fault) until the accepted counter passes
/// `before`, its value just before the fault.
async fn time_to_recover(w: &Wiring, before: i64, since: Instant) -> f64 {
    until_accepted(w, before + 1).await;
    since.elapsed().as_secs_f64()
}

#[tokio::test]
async fn fault_t1_broker_node_killed_mid_load() {
    let mut w = Wiring::new("t1-node-kill");
    // Every service starts on node 3, the one that dies.
    let urls: Vec<&str> = testkit::broker_urls().leak().split(',').collect();
    w.rabbitmq_urls = [urls[2], urls[0], urls[1]].join(",");
    let gateway = w.start("api-gateway").await;
    let _processor = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 4) as i64).await;
    let before = accepted_now(&w).await;
    let killed_at = Instant::now();
    let restart = testkit::kill_node(3);
    let recovery = time_to_recover(&w, before, killed_at).await;
    let mut report = load.await.unwrap().unwrap();
    report.recovery_secs = Some(recovery);
    drop(restart);
    check("t1-node-kill", &report);
    w.cleanup().await;
}

/// T2: SIGKILL `victim` three times mid-load, restarting it each time, while
/// `other` (the other worker) and the gateway keep running.
async fn worker_sigkilled_repeatedly(
    scenario: &'static str,
    victim: &'static str,
    other: &'static str,
) {
    let w = Wiring::new(scenario);
    let gateway = w.start("api-gateway").await;
    let _other = w.start(other).await;
    let mut worker = w.start(victim).await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    for round in 1..=3 {
        until_accepted(&w, (n as i64 * round) / 5).await;
        worker.kill9();
        worker = w.start(victim).await;
    }
    let report = load.await.unwrap().unwrap();
    check(scenario, &report);
    drop(worker);
    w.cleanup().await;
}

#[tokio::test]
async fn fault_t2_processor_sigkilled_repeatedly() {
    worker_sigkilled_repeatedly("t2-processor-kill", "order-processor", "notifier").await;
}

#[tokio::test]
async fn fault_t2_notifier_sigkilled_repeatedly() {
    worker_sigkilled_repeatedly("t2-notifier-kill", "notifier", "order-processor").await;
}

#[tokio::test]
async fn fault_t3_poison_messages_are_parked_and_the_rest_flows() {
    let w = Wiring::new("t3-poison");
    let gateway = w.start("api-gateway").await;
    let _processor = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 3) as i64).await;

    let shutdown = CancellationToken::new();
    let broker = Broker::connect(
        testkit::broker_config(&w.prefix, "poisoner"),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let trace = TraceParent::generate();
    let poison: [&[u8]; 4] = [
        b"\x00\x01 not json",
        br#"{"id":"p","sku":"x","qty":-1,"placed_at_ms":1}"#,
        br#"{"id":"p","sku":"x","qty":1}"#,
        br#"[1,2,3]"#,
    ];
    let mut sent = 0;
    for (i, body) in poison.iter().cycle().take(20).enumerate() {
        for (exchange, route) in [
            (broker.topology().orders_exchange(), ROUTE_NEW_ORDER),
            (broker.topology().events_exchange(), ROUTE_ORDER_CREATED),
        ] {
            let id = format!("poison-{i}");
            let msg = Outgoing {
                exchange: &exchange,
                routing_key: route,
                payload: body,
                message_id: &id,
                correlation_id: &id,
                traceparent: &trace,
            };
            broker
                .publish(&msg, tokio::time::Instant::now() + Duration::from_secs(10))
                .await
                .unwrap();
            sent += 1;
        }
    }
    broker.close().await;
    shutdown.cancel();
    let report = load.await.unwrap().unwrap();
    check("t3-poison", &report);
    assert_eq!(
        report.ledger.dead_lettered, sent,
        "every poison message parked, nothing else"
    );
    w.cleanup().await;
}

/// A Redis of the test's own, AOF on, on a free port.
struct OwnRedis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    fn start(port: u16, dir: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        Self { child, port, dir }
    }

    async fn ready(&self) {
        let url = format!("redis://127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(20), "own redis up", || {
            let url = url.clone();
            async move {
                let Ok(c) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = c.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            }
        })
        .await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn fault_t4_redis_killed_and_restarted_with_aof() {
    let mut w = Wiring::new("t4-redis-kill");
    let port = free_port();
    let dir = out_dir("t4-redis-kill").join("redis");
    let _ = std::fs::remove_dir_all(&dir);
    let mut redis = OwnRedis::start(port, dir.clone());
    redis.ready().await;
    w.redis_url = format!("redis://127.0.0.1:{port}");
    let gateway = w.start("api-gateway").await;
    let _processor = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 3) as i64).await;
    let before = accepted_now(&w).await;
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let killed_at = Instant::now();
    // The outage itself: Redis stays down for a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis = OwnRedis::start(port, redis.dir.clone());
    redis.ready().await;
    let recovery = time_to_recover(&w, before, killed_at).await;
    let mut report = load.await.unwrap().unwrap();
    report.recovery_secs = Some(recovery);
    check("t4-redis-kill", &report);
    drop(redis);
    w.cleanup().await;
}

#[tokio::test]
async fn fault_t5_broker_link_blackholed_past_the_heartbeat() {
    let mut w = Wiring::new("t5-blackhole");
    let urls: Vec<String> = testkit::broker_urls()
        .split(',')
        .map(str::to_owned)
        .collect();
    let node1: std::net::SocketAddr = urls[0]
        .trim_start_matches("amqp://guest:guest@")
        .trim_end_matches("/%2f")
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(node1).await;
    w.rabbitmq_urls = [proxy.url(), urls[1].clone(), urls[2].clone()].join(",");
    let gateway = w.start("api-gateway").await;
    let _processor = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 4) as i64).await;
    let before = accepted_now(&w).await;
    proxy.set(ProxyMode::Blackhole);
    let cut_at = Instant::now();
    // Services fail over to node 2 once heartbeats are missed (2 s here).
    let recovery = time_to_recover(&w, before, cut_at).await;
    // Keep the cut for longer than the heartbeat timeout, then heal it.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(cut_at.elapsed())).await;
    proxy.set(ProxyMode::Forward);
    let mut report = load.await.unwrap().unwrap();
    report.recovery_secs = Some(recovery);
    check("t5-blackhole", &report);
    w.cleanup().await;
}

#[tokio::test]
async fn fault_t6_duplicate_storm_is_one_order_one_effect() {
    let w = Wiring::new("t6-storm");
    let gateway = w.start("api-gateway").await;
    let _processor = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let client = redis::Client::open(w.redis_url.clone()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let key = |k: &str| format!("{}{k}", w.key_prefix());
    let _: () = redis.set(key("inventory:storm-sku"), 10).await.unwrap();

    let http = reqwest::Client::new();
    let url = format!("http://{}/orders", gateway.addr);
    let storm = (0..100).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res = http
                .post(&url)
                .header("content-type", "application/json")
                .header("idempotency-key", "storm-key")
                .body(r#"{"id":"storm-1","sku":"storm-sku","qty":3}"#)
                .send()
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.headers().contains_key("idempotent-replayed"),
            )
        }
    });
    let answers = futures_util::future::join_all(storm).await;
    let originals = answers
        .iter()
        .filter(|(s, replay)| *s == 202 && !replay)
        .count();
    let replays = answers
        .iter()
        .filter(|(s, replay)| *s == 202 && *replay)
        .count();
    let conflicts = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(originals, 1, "{answers:?}");
    assert_eq!(originals + replays + conflicts, 100, "{answers:?}");

    eventually(Duration::from_secs(30), "the order notified", || {
        let mut redis = redis.clone();
        let k = key("counters");
        async move {
            redis
                .hget::<_, _, Option<i64>>(&k, "notified")
                .await
                .unwrap()
                == Some(1)
        }
    })
    .await;
    let counters: std::collections::HashMap<String, i64> =
        redis.hgetall(key("counters")).await.unwrap();
    let stock: i64 = redis.get(key("inventory:storm-sku")).await.unwrap();
    eprintln!(
        "\n[t6-storm]\n  requests 100: 1 original 202, {replays} replayed 202, {conflicts} 409\n  accepted {:?} reserved {:?} notified {:?} stock 10 -> {stock}",
        counters.get("accepted"),
        counters.get("reserved"),
        counters.get("notified")
    );
    for c in ["accepted", "reserved", "notified"] {
        assert_eq!(counters.get(c), Some(&1), "{c}: {counters:?}");
    }
    assert_eq!(stock, 7, "one stock effect");
    w.cleanup().await;
}

#[tokio::test]
async fn fault_t7_oversell_race_reserves_exactly_the_stock() {
    let w = Wiring::new("t7-oversell");
    let gateway = w.start("api-gateway").await;
    let _processor_a = w.start("order-processor").await;
    let _processor_b = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let n = (orders() / 3 * 3).max(300);
    let mut config = w.load(&gateway, n);
    config.skus = 1;
    config.stock_ratio = 1.0 / 3.0;
    config.unknown_share = 0.0;
    config.concurrency = 64;
    let report = run(config).await.unwrap();
    check("t7-oversell", &report);
    assert_eq!(report.ledger.reserved, n / 3, "exactly the stock reserved");
    assert_eq!(report.ledger.rejected_out_of_stock, n - n / 3);
    assert_eq!(report.ledger.stock_actual, 0);
    w.cleanup().await;
}

/// The ledger counts only the run's own orders, from their own records:
/// another client's orders and a tampered global `counters` hash neither fake
/// nor hide a violation.
#[tokio::test]
async fn ledger_ignores_unrelated_traffic_and_counters() {
    let w = Wiring::new("ledger-unrelated");
    let gateway = w.start("api-gateway").await;
    let _processor = w.start("order-processor").await;
    let _notifier = w.start("notifier").await;
    let client = redis::Client::open(w.redis_url.clone()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let key = |k: &str| format!("{}{k}", w.key_prefix());
    let _: () = redis.set(key("inventory:other-sku"), 1_000).await.unwrap();

    let n = orders().min(300);
    let load = run(w.load(&gateway, n));
    let http = reqwest::Client::new();
    let url = format!("http://{}/orders", gateway.addr);
    let noise = async {
        for i in 0..100 {
            let _ = http
                .post(&url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"id":"other-{i}","sku":"other-sku","qty":1}}"#))
                .send()
                .await;
            // What a double-counting bug elsewhere would look like.
            let _: () = redis.hincr(key("counters"), "reserved", 7).await.unwrap();
            let _: () = redis.hincr(key("counters"), "notified", 7).await.unwrap();
        }
    };
    let (report, ()) = tokio::join!(load, noise);
    let report = report.unwrap();
    check("ledger-unrelated", &report);
    assert_eq!(report.ledger.sent, n);
    assert_eq!(report.ledger.duplicated, 0);
    assert_eq!(
        report.ledger.reserved
            + report.ledger.rejected_out_of_stock
            + report.ledger.rejected_unknown_sku,
        report.ledger.accepted + report.ledger.recovered,
        "only the run's own orders are counted"
    );
    w.cleanup().await;
}
