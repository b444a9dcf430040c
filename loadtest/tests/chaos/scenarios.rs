//! T1–T9. Each prints its ledger and fails on a lost or duplicated order.
//!
//! Recovery is measured honestly: from the fault until an order *sent after
//! the fault* is accepted ([`Wiring::first_accepted_after`]); requests already
//! in flight before it cannot satisfy the measure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::run;
use pipeline::amqp::{Broker, Outgoing};
use pipeline::messages::{ROUTE_NEW_ORDER, ROUTE_ORDER_CREATED};
use pipeline::shutdown::CancellationToken;
use pipeline::trace::TraceParent;
use redis::AsyncCommands;

use crate::harness::{
    ProxyMode, TcpProxy, Wiring, check, eventually, free_port, history_health, orders, out_dir,
};

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

#[tokio::test]
async fn fault_t1_broker_node_killed_mid_load() {
    let mut w = Wiring::new("t1-node-kill").with_history(1);
    // Every service starts on node 3, the one that dies.
    let urls: Vec<&str> = testkit::broker_urls().leak().split(',').collect();
    w.rabbitmq_urls = [urls[2], urls[0], urls[1]].join(",");
    let _history = w.start_history(0).await;
    let (gateway, _workers) = w.start_pipeline().await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 4) as i64).await;
    let killed_at = Instant::now();
    let restart = testkit::kill_node(3);
    let recovery = w.first_accepted_after(&gateway, killed_at).await;
    let mut report = load.await.unwrap().unwrap();
    report
        .recovery
        .push(("first order sent after the kill accepted".into(), recovery));
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
    let gateway = w.start_gateway().await;
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
    let (gateway, _workers) = w.start_pipeline().await;
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
        Self { child, port }
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
    let (gateway, _workers) = w.start_pipeline().await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 3) as i64).await;
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let killed_at = Instant::now();
    let probe = w.first_accepted_after(&gateway, killed_at);
    // The outage itself: Redis stays down for a second.
    let restart = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let redis = OwnRedis::start(port, dir.clone());
        redis.ready().await;
        (redis, killed_at.elapsed().as_secs_f64())
    };
    let (recovery, (restarted, back)) = tokio::join!(probe, restart);
    redis = restarted;
    let mut report = load.await.unwrap().unwrap();
    report
        .recovery
        .push(("Redis back (restart after 1 s down)".into(), back));
    report
        .recovery
        .push(("first order sent after the kill accepted".into(), recovery));
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
    let (gateway, _workers) = w.start_pipeline().await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 4) as i64).await;
    proxy.set(ProxyMode::Blackhole);
    let cut_at = Instant::now();
    // Services fail over to node 2 once heartbeats are missed (2 s here).
    let recovery = w.first_accepted_after(&gateway, cut_at).await;
    // Keep the cut for longer than the heartbeat timeout, then heal it.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(cut_at.elapsed())).await;
    proxy.set(ProxyMode::Forward);
    let mut report = load.await.unwrap().unwrap();
    report
        .recovery
        .push(("first order sent after the cut accepted".into(), recovery));
    check("t5-blackhole", &report);
    w.cleanup().await;
}

#[tokio::test]
async fn fault_t6_duplicate_storm_is_one_order_one_effect() {
    let w = Wiring::new("t6-storm");
    let (gateway, _workers) = w.start_pipeline().await;
    let mut redis = w.redis().await;
    let key = |k: &str| format!("{}{k}", w.key_prefix());
    let _: () = redis.set(key("inventory:storm-sku"), 10).await.unwrap();

    let http = w.http();
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
    let gateway = w.start_gateway().await;
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
    let (gateway, _workers) = w.start_pipeline().await;
    let mut redis = w.redis().await;
    let key = |k: &str| format!("{}{k}", w.key_prefix());
    let _: () = redis.set(key("inventory:other-sku"), 1_000).await.unwrap();

    let n = orders().min(300);
    let load = run(w.load(&gateway, n));
    let http = w.http();
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

/// T8: `kill -9` of the active history replica mid-load. The standby takes
/// over, the history ends complete (the ledger checks every order and its
/// events), and the pipeline never notices.
#[tokio::test]
async fn fault_t8_active_history_replica_killed_mid_load() {
    let w = Wiring::new("t8-history-kill").with_history(2);
    let mut one = w.start_history(0).await;
    let mut two = w.start_history(1).await;
    let (gateway, _workers) = w.start_pipeline().await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 3) as i64).await;
    let (active, standby) = if history_health(&one).await["role"] == "active" {
        (&mut one, &two)
    } else {
        (&mut two, &one)
    };
    assert_eq!(history_health(standby).await["role"], "standby");
    active.kill9();
    let killed_at = Instant::now();
    let marks = async {
        let mut took_over = None;
        loop {
            let h = history_health(standby).await;
            if h["role"] == "active" && took_over.is_none() {
                took_over = Some(killed_at.elapsed().as_secs_f64());
            }
            if let Some(took) = took_over
                && h["applied"].as_u64().unwrap_or(0) > 0
            {
                return (took, killed_at.elapsed().as_secs_f64());
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(60),
                "no failover: {h}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((took_over, first_applied), accepted) =
        tokio::join!(marks, w.first_accepted_after(&gateway, killed_at));
    let mut report = load.await.unwrap().unwrap();
    let complete = killed_at.elapsed().as_secs_f64();
    report.recovery.extend([
        ("standby active (failover)".to_owned(), took_over),
        ("standby applied its first event".to_owned(), first_applied),
        (
            "first order sent after the kill accepted".to_owned(),
            accepted,
        ),
        ("history complete and verified".to_owned(), complete),
    ]);
    check("t8-history-kill", &report);
    assert!(
        report
            .ledger
            .history
            .as_ref()
            .is_some_and(|h| h.complete > 0)
    );
    w.cleanup().await;
}

/// A PostgreSQL of the test's own on a free port (a restart must not disturb
/// the other tests' database).
struct OwnPostgres {
    data: std::path::PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn bin(tool: &str) -> std::path::PathBuf {
        let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (make deps)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .collect();
        dirs.sort();
        dirs.pop().expect("a PostgreSQL version").join(tool)
    }

    /// Runs a PostgreSQL tool as the `postgres` user when we are root
    /// (`initdb` refuses root), else as ourselves.
    fn run(tool: &str, args: &[&str]) {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(tool));
            c
        } else {
            Command::new(Self::bin(tool))
        };
        let status = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {args:?} failed");
    }

    fn start() -> Self {
        let port = free_port();
        let data = std::env::temp_dir().join(format!("order-pipeline-t9-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let _ = Command::new("chown").arg("postgres:").arg(&data).status();
        let d = data.to_str().unwrap().to_owned();
        Self::run(
            "initdb",
            &[
                "-D",
                &format!("{d}/pg"),
                "-A",
                "trust",
                "-U",
                "order_pipeline",
                "--no-sync",
            ],
        );
        let pg = Self { data, port };
        pg.up();
        pg
    }

    fn up(&self) {
        let d = self.data.to_str().unwrap();
        let opts = format!(
            "-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        Self::run(
            "pg_ctl",
            &[
                "-D",
                &format!("{d}/pg"),
                "-o",
                &opts,
                "-l",
                &format!("{d}/pg.log"),
                "-w",
                "start",
            ],
        );
    }

    fn down(&self) {
        let d = self.data.to_str().unwrap();
        Self::run(
            "pg_ctl",
            &["-D", &format!("{d}/pg"), "-m", "fast", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://order_pipeline@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let d = self.data.to_str().unwrap().to_owned();
        let _ = std::panic::catch_unwind(|| {
            Self::run(
                "pg_ctl",
                &["-D", &format!("{d}/pg"), "-m", "immediate", "stop"],
            )
        });
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// T9: PostgreSQL restarted mid-load. The order path never waits on it; the
/// history reconnects, catches up, and ends complete.
#[tokio::test]
async fn fault_t9_postgres_restarted_mid_load() {
    let pg = OwnPostgres::start();
    let mut w = Wiring::new("t9-postgres-restart").with_history(2);
    w.database_url = pg.url();
    let one = w.start_history(0).await;
    let two = w.start_history(1).await;
    let (gateway, _workers) = w.start_pipeline().await;
    let n = orders();
    let load = tokio::spawn(run(w.load(&gateway, n)));
    until_accepted(&w, (n / 3) as i64).await;
    let applied = |h: &serde_json::Value| h["applied"].as_u64().unwrap_or(0);
    let before = applied(&history_health(&one).await) + applied(&history_health(&two).await);
    pg.down();
    let stopped_at = Instant::now();
    let accepted = w.first_accepted_after(&gateway, stopped_at).await;
    // Down for at least 2 s, then back with the same data.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(stopped_at.elapsed())).await;
    pg.up();
    let back = stopped_at.elapsed().as_secs_f64();
    let mut applying = None;
    while applying.is_none() {
        let now = applied(&history_health(&one).await) + applied(&history_health(&two).await);
        if now > before {
            applying = Some(stopped_at.elapsed().as_secs_f64());
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(90),
            "the history never resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut report = load.await.unwrap().unwrap();
    report.recovery.extend([
        (
            "first order sent after the stop accepted".to_owned(),
            accepted,
        ),
        ("PostgreSQL back (restart after 2 s down)".to_owned(), back),
        ("history applying again".to_owned(), applying.unwrap()),
        (
            "history complete and verified".to_owned(),
            stopped_at.elapsed().as_secs_f64(),
        ),
    ]);
    check("t9-postgres-restart", &report);
    assert!(
        accepted < back,
        "orders were accepted while PostgreSQL was down ({accepted:.1} s < {back:.1} s)"
    );
    drop((one, two));
    w.cleanup().await;
}
