//! Driving orders through a running pipeline and reading back what happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use pipeline::amqp::topology;
use rand::Rng;
use redis::AsyncCommands;

use crate::ledger::{HistoryLedger, Latency, Ledger, Report, Sample};
use crate::progress::Progress;

/// What to send, where, and how.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The gateway, e.g. `http://127.0.0.1:8080`.
    pub gateway: String,
    /// The client key sent with every request (`op_...`).
    pub api_key: Option<String>,
    /// That key's client: the run's orders are its (`<client>/<id>`).
    pub client: pipeline::domain::ClientId,
    pub redis_url: String,
    /// The stack's `REDIS_KEY_PREFIX`.
    pub key_prefix: String,
    /// An AMQP URL to read DLQ depths from (optional).
    pub amqp_url: Option<String>,
    /// The stack's `TOPOLOGY_PREFIX`.
    pub topology_prefix: String,
    /// Processor `/metrics` URLs, for the redelivery count (optional).
    pub processor_metrics: Vec<String>,
    pub orders: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Open loop: start this many orders per second (else closed loop).
    pub rate: Option<f64>,
    /// Share of accepted orders the client sends once more with the same key.
    pub retry_share: f64,
    /// The run's SKUs, `<run>-sku-<n>`.
    pub skus: u64,
    /// Total initial stock as a share of the orders: below 1 some are
    /// rejected `out_of_stock`.
    pub stock_ratio: f64,
    /// Share of orders for a SKU with no inventory key (`unknown_sku`).
    pub unknown_share: f64,
    /// Whether a notifier is running (reserved orders must end `notified`).
    pub expect_notified: bool,
    pub drain_timeout: Duration,
    /// Tries per order before the client gives up (503/409/timeouts).
    pub max_tries: u32,
    pub request_timeout: Duration,
    pub run_id: String,
    pub progress: bool,
    /// The order history to verify against (and to read expired orders
    /// from), if the stack runs one.
    pub history: Option<HistoryTarget>,
}

/// Where the history's tables are.
#[derive(Debug, Clone)]
pub struct HistoryTarget {
    pub database_url: String,
    pub schema: String,
    /// How long the history may take to catch up after the drain.
    pub catch_up_timeout: Duration,
    /// Verify the history against the run (else it is only read, for orders
    /// whose Redis records have expired).
    pub check: bool,
}

impl LoadConfig {
    /// Defaults for the local stack (`make up`).
    pub fn local(orders: u64) -> Self {
        Self {
            gateway: "http://127.0.0.1:8080".into(),
            // Set from a [`crate::RunKey`].
            api_key: None,
            client: pipeline::domain::ClientId::default_client(),
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: String::new(),
            amqp_url: Some("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            topology_prefix: String::new(),
            processor_metrics: vec!["http://127.0.0.1:9101/metrics".into()],
            orders,
            concurrency: 64,
            rate: None,
            retry_share: 0.05,
            skus: 10,
            stock_ratio: 0.9,
            unknown_share: 0.01,
            expect_notified: true,
            drain_timeout: Duration::from_secs(300),
            max_tries: 20,
            request_timeout: Duration::from_secs(15),
            run_id: format!("lt{}", pipeline::messages::now_ms()),
            progress: true,
            history: None,
        }
    }

    /// Order `i`'s id, as the run sends it.
    fn order_id(&self, i: u64) -> String {
        format!("{}-{i}", self.run_id)
    }

    /// Order `i`'s id as the stack keeps it (qualified by the client).
    fn stored_id(&self, i: u64) -> String {
        pipeline::domain::OrderId::parse(&self.order_id(i))
            .expect("run ids are order ids")
            .scoped(&self.client)
            .to_string()
    }

    fn sku(&self, i: u64) -> String {
        // A deterministic ~unknown_share of orders go to a SKU nobody stocks.
        let every = if self.unknown_share > 0.0 {
            (1.0 / self.unknown_share).round().max(1.0) as u64
        } else {
            u64::MAX
        };
        if i % every == every - 1 {
            format!("{}-ghost", self.run_id)
        } else {
            format!("{}-sku-{}", self.run_id, i % self.skus.max(1))
        }
    }

    fn stock_per_sku(&self) -> i64 {
        ((self.orders as f64 * self.stock_ratio) / self.skus.max(1) as f64).ceil() as i64
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }
}

/// What the client saw for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Accepted,
    Unknown,
}

struct Shared {
    next: AtomicU64,
    accepted: AtomicU64,
    client_retries: AtomicU64,
    retry_anomalies: AtomicU64,
    seen: Mutex<Vec<Option<Seen>>>,
    latencies: Mutex<Vec<u64>>,
    /// Latencies since the last sample.
    window: Mutex<Vec<u64>>,
}

/// Runs the load and returns the report. The caller decides what to do when
/// [`Report::ok`] is false.
pub async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    let redis = redis::Client::open(config.redis_url.clone())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let history = History::connect(&config).await?;

    // Seed the run's inventory.
    let stock = config.stock_per_sku();
    for s in 0..config.skus.max(1) {
        let key = config.key(&format!("inventory:{}-sku-{s}", config.run_id));
        let _: () = conn.set(key, stock).await?;
    }
    let counters_before = counters(&mut conn, &config).await?;
    let dlq_before = dlq_depth(&config).await;
    let redelivered_before = redelivered(&config).await;

    let http = crate::client_builder(config.api_key.as_deref())?
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.concurrency)
        .build()?;
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        client_retries: AtomicU64::new(0),
        retry_anomalies: AtomicU64::new(0),
        seen: Mutex::new(vec![None; config.orders as usize]),
        latencies: Mutex::new(Vec::with_capacity(config.orders as usize)),
        window: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample(
        config.clone(),
        shared.clone(),
        redis.clone(),
        counters_before.clone(),
        samples.clone(),
    ));
    send_all(&config, &http, &shared).await;
    let send_secs = started.elapsed().as_secs_f64();

    // Wait for the pipeline to drain: every order the client placed (or that
    // reached the pipeline without a 202) decided, every reserved one
    // notified — read from the run's own records, so other traffic on the
    // same stack can neither hurry nor hold up the verdict.
    let drain = Progress::new("draining", config.orders, config.progress);
    let deadline = Instant::now() + config.drain_timeout;
    let mut pending: Vec<u64> = (0..config.orders).collect();
    let mut drained = false;
    while Instant::now() < deadline {
        // A fresh connection each round: Redis may have restarted (chaos T4).
        let Ok(mut conn) = redis.get_multiplexed_async_connection().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let seen = shared.seen.lock().expect("lock").clone();
        let Ok(states) = read_orders(&config, &mut conn, &history, &pending).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        pending = pending
            .iter()
            .zip(states)
            .filter(|(i, st)| {
                let client_accepted = seen[**i as usize] == Some(Seen::Accepted);
                !st.settled(client_accepted, config.expect_notified)
            })
            .map(|(i, _)| *i)
            .collect();
        drain.draw(
            config.orders - pending.len() as u64,
            "orders through the pipeline",
        );
        if pending.is_empty() {
            drained = true;
            drain.finish(config.orders, "drained");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !drained {
        drain.finish(config.orders - pending.len() as u64, "timed out");
    }
    // One more settle for late records beyond the counters (e.g. an order
    // accepted after its client gave up).
    let total_secs = started.elapsed().as_secs_f64();
    sampler.abort();
    let _ = sampler.await;
    let samples = std::mem::take(&mut *samples.lock().expect("lock"));

    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut ledger = verify(&config, &mut conn, &history, &shared).await?;
    if config.history.as_ref().is_some_and(|h| h.check) {
        ledger.history = Some(verify_history(&config, &mut conn, &history, &shared).await?);
    }
    ledger.client_retries = shared.client_retries.load(Ordering::Relaxed);
    ledger.retry_anomalies = shared.retry_anomalies.load(Ordering::Relaxed);
    ledger.dead_lettered = dlq_depth(&config).await.saturating_sub(dlq_before);
    ledger.redelivered = redelivered(&config)
        .await
        .saturating_sub(redelivered_before);
    let through = ledger.notified + ledger.rejected_out_of_stock + ledger.rejected_unknown_sku;
    let through = if config.expect_notified {
        through
    } else {
        ledger.reserved + through
    };
    let latency =
        Latency::from_micros(std::mem::take(&mut *shared.latencies.lock().expect("lock")));
    let violations = ledger.violations();
    Ok(Report {
        run_id: config.run_id.clone(),
        accepted_per_sec: ledger.accepted as f64 / send_secs.max(0.001),
        end_to_end_per_sec: through as f64 / total_secs.max(0.001),
        ledger,
        send_secs,
        total_secs,
        latency,
        recovery: Vec::new(),
        drained,
        violations,
        samples,
    })
}

async fn send_all(config: &LoadConfig, http: &reqwest::Client, shared: &Arc<Shared>) {
    let progress = Arc::new(Progress::new("sending", config.orders, config.progress));
    let started = Instant::now();
    let workers: Vec<_> = (0..config.concurrency.max(1))
        .map(|_| {
            let (config, http, shared, progress) = (
                config.clone(),
                http.clone(),
                shared.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = shared.next.fetch_add(1, Ordering::Relaxed);
                    if i >= config.orders {
                        return;
                    }
                    // Open loop: order i is due at i / rate seconds, and its
                    // latency counts from then (no coordinated omission: a
                    // send delayed by a busy client still counts its wait).
                    let scheduled = config
                        .rate
                        .map(|rate| started + Duration::from_secs_f64(i as f64 / rate));
                    if let Some(at) = scheduled {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    place(&config, &http, &shared, i, scheduled).await;
                    if i % 97 == 0 {
                        progress.draw(shared.accepted.load(Ordering::Relaxed), "accepted");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    progress.finish(shared.accepted.load(Ordering::Relaxed), "accepted");
}

/// Places order `i` like a careful client: retries 503, 409 and timeouts with
/// the same key and backoff, then maybe re-sends it once more.
async fn place(
    config: &LoadConfig,
    http: &reqwest::Client,
    shared: &Shared,
    i: u64,
    scheduled: Option<Instant>,
) {
    let id = config.order_id(i);
    let body = format!(r#"{{"id":"{id}","sku":"{}","qty":1}}"#, config.sku(i));
    let url = format!("{}/orders", config.gateway);
    let first = scheduled.unwrap_or_else(Instant::now);
    let mut outcome = Seen::Unknown;
    for attempt in 0..config.max_tries {
        let res = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match res.map(|r| r.status().as_u16()) {
            Ok(202) => {
                outcome = Seen::Accepted;
                break;
            }
            Ok(status) if (400..500).contains(&status) && status != 409 && status != 429 => {
                // The request itself is wrong; retrying cannot help.
                break;
            }
            _ => {
                let backoff = Duration::from_millis((50u64 << attempt.min(6)).min(2000));
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            }
        }
    }
    if outcome == Seen::Accepted {
        let micros = first.elapsed().as_micros() as u64;
        shared.latencies.lock().expect("lock").push(micros);
        shared.window.lock().expect("lock").push(micros);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if rand::rng().random_bool(config.retry_share.clamp(0.0, 1.0)) {
            shared.client_retries.fetch_add(1, Ordering::Relaxed);
            let again = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let fine = match again {
                Ok(r) if r.status() == 202 => r.headers().get("idempotent-replayed").is_some(),
                Ok(r) => matches!(r.status().as_u16(), 409 | 503),
                Err(_) => true,
            };
            if !fine {
                shared.retry_anomalies.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    shared.seen.lock().expect("lock")[i as usize] = Some(outcome);
}

/// One sample per second into `samples`, until aborted.
async fn sample(
    config: LoadConfig,
    shared: Arc<Shared>,
    redis: redis::Client,
    before: HashMap<String, i64>,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_accepted, mut last_decided, mut last_notified) = (0u64, 0i64, 0i64);
    loop {
        tick.tick().await;
        let Ok(now) = fresh_counters(&redis, &config).await else {
            continue;
        };
        let delta =
            |k: &str| now.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let decided = delta("reserved") + delta("rejected");
        let notified = delta("notified");
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let window =
            Latency::from_micros(std::mem::take(&mut *shared.window.lock().expect("lock")));
        samples.lock().expect("lock").push(Sample {
            t_secs: started.elapsed().as_secs_f64(),
            accepted_per_sec: (accepted - last_accepted) as f64,
            decided_per_sec: (decided - last_decided).max(0) as f64,
            notified_per_sec: (notified - last_notified).max(0) as f64,
            p99_ms: window.p99_ms,
        });
        (last_accepted, last_decided, last_notified) = (accepted, decided, notified);
    }
}

async fn fresh_counters(
    redis: &redis::Client,
    config: &LoadConfig,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    counters(&mut conn, config).await
}

async fn counters(
    conn: &mut redis::aio::MultiplexedConnection,
    config: &LoadConfig,
) -> anyhow::Result<HashMap<String, i64>> {
    Ok(conn.hgetall(config.key("counters")).await?)
}

/// What the run's own records say about one order.
#[derive(Debug, Default)]
struct OrderState {
    accepted_at: Option<String>,
    outcome: Option<String>,
    reason: Option<String>,
    sku: Option<String>,
    qty: Option<String>,
    status: Option<String>,
    /// Fresh decisions `reserve.lua` took (more than one is a duplicate).
    decisions: u64,
    notification: Option<String>,
    /// Sends that reached the sink (more than one is a duplicate).
    sends: u64,
    /// Its Redis records had expired: read from the history instead.
    expired: bool,
}

impl OrderState {
    /// Nothing more will happen to it: decided (and notified, if reserved and
    /// notifications are expected), or never in the pipeline at all.
    fn settled(&self, client_accepted: bool, expect_notified: bool) -> bool {
        match self.outcome.as_deref() {
            Some("reserved") => !expect_notified || self.notification.as_deref() == Some("sent"),
            Some(_) => true,
            None => !client_accepted && self.accepted_at.is_none(),
        }
    }
}

/// A session on the history's tables, when the run checks the history;
/// opened again whenever it was lost (PostgreSQL may restart: chaos T9).
struct History {
    target: Option<HistoryTarget>,
    session: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl History {
    async fn connect(config: &LoadConfig) -> anyhow::Result<Self> {
        let history = Self {
            target: config.history.clone(),
            session: tokio::sync::Mutex::new(None),
        };
        if history.is_some() {
            drop(history.session().await?);
        }
        Ok(history)
    }

    fn is_some(&self) -> bool {
        self.target.is_some()
    }

    /// The session, connected.
    async fn session(
        &self,
    ) -> anyhow::Result<tokio::sync::MutexGuard<'_, Option<tokio_postgres::Client>>> {
        let target = self.target.as_ref().expect("checked by the caller");
        let mut session = self.session.lock().await;
        if session.as_ref().is_none_or(|c| c.is_closed()) {
            *session =
                Some(order_history::audit::connect(&target.database_url, &target.schema).await?);
        }
        Ok(session)
    }

    async fn orders(
        &self,
        ids: &[String],
    ) -> anyhow::Result<HashMap<String, order_history::audit::Audit>> {
        if !self.is_some() || ids.is_empty() {
            return Ok(HashMap::new());
        }
        let session = self.session().await?;
        order_history::audit::orders(session.as_ref().expect("connected"), ids).await
    }

    async fn totals(&self) -> anyhow::Result<HashMap<String, i64>> {
        let session = self.session().await?;
        order_history::audit::totals(session.as_ref().expect("connected")).await
    }
}

/// Reads the records of orders `ids` (indexes into the run), pipelined; an
/// order whose records have expired (retention) is read from the history.
async fn read_orders(
    config: &LoadConfig,
    conn: &mut redis::aio::MultiplexedConnection,
    history: &History,
    ids: &[u64],
) -> anyhow::Result<Vec<OrderState>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let id = config.stored_id(i);
            pipe.cmd("HMGET")
                .arg(config.key(&format!("order:{id}")))
                .arg(&[
                    "accepted_at",
                    "outcome",
                    "reason",
                    "sku",
                    "qty",
                    "status",
                    "decisions",
                ]);
            pipe.cmd("HMGET")
                .arg(config.key(&format!("notification:{id}")))
                .arg(&["status", "sends"]);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
        for pair in replies.chunks(2) {
            let mut o: Vec<Option<String>> = redis::from_redis_value(pair[0].clone())?;
            let mut n: Vec<Option<String>> = redis::from_redis_value(pair[1].clone())?;
            let count = |v: Option<String>| v.and_then(|v| v.parse().ok()).unwrap_or(0);
            out.push(OrderState {
                decisions: count(o[6].take()),
                status: o[5].take(),
                qty: o[4].take(),
                sku: o[3].take(),
                reason: o[2].take(),
                outcome: o[1].take(),
                accepted_at: o[0].take(),
                sends: count(n[1].take()),
                notification: n[0].take(),
                expired: false,
            });
        }
    }
    if history.is_some() {
        let gone: Vec<(usize, String)> = ids
            .iter()
            .zip(&out)
            .enumerate()
            .filter(|(_, (_, st))| st.status.is_none() && st.sku.is_none())
            .map(|(k, (i, _))| (k, config.stored_id(*i)))
            .collect();
        let names: Vec<String> = gone.iter().map(|(_, id)| id.clone()).collect();
        let found = history.orders(&names).await?;
        for (k, id) in gone {
            if let Some(a) = found.get(&id) {
                out[k] = from_history(a);
            }
        }
    }
    Ok(out)
}

/// An order whose Redis records expired, as the history tells it. The
/// history's events are unique per kind, so a decision or send it shows is
/// counted once.
fn from_history(a: &order_history::audit::Audit) -> OrderState {
    let outcome = match a.status.as_str() {
        "reserved" | "notified" => Some("reserved".to_owned()),
        "rejected" => Some("rejected".to_owned()),
        _ => None,
    };
    OrderState {
        accepted_at: Some("history".into()),
        decisions: u64::from(outcome.is_some()),
        outcome,
        reason: a.reason.clone(),
        sku: Some(a.sku.clone()),
        qty: Some(a.qty.to_string()),
        status: Some(a.status.clone()),
        notification: (a.status == "notified").then(|| "sent".to_owned()),
        sends: u64::from(a.status == "notified"),
        expired: true,
    }
}

/// The events an order's path implies, sorted.
fn expected_kinds(st: &OrderState, expect_notified: bool) -> Vec<&'static str> {
    let mut kinds = vec!["placed"];
    match st.outcome.as_deref() {
        Some("reserved") => {
            kinds.push("created");
            if expect_notified {
                kinds.push("notified");
            }
        }
        Some("rejected") => kinds.push("rejected"),
        _ => {}
    }
    kinds.sort_unstable();
    kinds
}

/// Waits for the history to hold every order of the run that reached the
/// pipeline with its final status, then compares it order by order with
/// what Redis said, and its totals with the Redis counters.
async fn verify_history(
    config: &LoadConfig,
    conn: &mut redis::aio::MultiplexedConnection,
    history: &History,
    shared: &Shared,
) -> anyhow::Result<HistoryLedger> {
    let target = config.history.as_ref().expect("checked by the caller");
    let seen = shared.seen.lock().expect("lock").clone();
    let all: Vec<u64> = (0..config.orders).collect();
    let states = read_orders(config, conn, history, &all).await?;
    let in_pipeline: Vec<(String, &OrderState)> = all
        .iter()
        .zip(&states)
        .filter(|(i, st)| seen[**i as usize] == Some(Seen::Accepted) || st.accepted_at.is_some())
        .map(|(i, st)| (config.stored_id(*i), st))
        .collect();
    let names: Vec<String> = in_pipeline.iter().map(|(id, _)| id.clone()).collect();
    let final_status = |st: &OrderState| match st.outcome.as_deref() {
        Some("reserved") if config.expect_notified => "notified",
        Some("reserved") => "reserved",
        Some("rejected") => "rejected",
        _ => "",
    };
    let started = Instant::now();
    let deadline = started + target.catch_up_timeout;
    // Totals: the history's against the counters (the same prefix and schema
    // hold every order of the stack, not only this run's: other traffic must
    // settle too, so both are read until they agree or time runs out).
    let pairs = [
        ("orders", "accepted"),
        ("created", "reserved"),
        ("rejected", "rejected"),
        ("notified", "notified"),
    ];
    let (found, differ) = loop {
        let Ok(found) = history.orders(&names).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let complete = in_pipeline
            .iter()
            .filter(|(id, st)| found.get(id).is_some_and(|a| a.status == final_status(st)))
            .count();
        let totals = history.totals().await.unwrap_or_default();
        let counters = counters(conn, config).await?;
        let differ: Vec<String> = pairs
            .iter()
            .filter_map(|(h_key, c_key)| {
                let (hv, cv) = (
                    totals.get(*h_key).copied().unwrap_or(0),
                    counters.get(*c_key).copied().unwrap_or(0),
                );
                (hv != cv).then(|| format!("{h_key} {hv} vs {c_key} {cv}"))
            })
            .collect();
        if (complete == in_pipeline.len() && differ.is_empty()) || Instant::now() > deadline {
            break (found, differ);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let catch_up_secs = started.elapsed().as_secs_f64();
    let mut h = HistoryLedger {
        expected: in_pipeline.len() as u64,
        catch_up_secs,
        ..HistoryLedger::default()
    };
    for (id, st) in &in_pipeline {
        if st.expired {
            h.expired_in_redis += 1;
        }
        let Some(a) = found.get(id) else {
            h.missing += 1;
            continue;
        };
        if a.status != final_status(st) {
            h.missing += 1;
            continue;
        }
        h.complete += 1;
        let mut kinds: Vec<&str> = a.kinds.iter().map(String::as_str).collect();
        kinds.sort_unstable();
        if kinds != expected_kinds(st, config.expect_notified) || a.reason != st.reason {
            h.mismatched += 1;
        }
    }
    h.stats_equal_counters = differ.is_empty();
    h.stats_detail = differ.join(", ");
    Ok(h)
}

/// Reads every order of the run back from its own records and counts. No
/// global counter is consulted: unrelated traffic cannot fake or hide a
/// violation.
async fn verify(
    config: &LoadConfig,
    conn: &mut redis::aio::MultiplexedConnection,
    history: &History,
    shared: &Shared,
) -> anyhow::Result<Ledger> {
    let seen = shared.seen.lock().expect("lock").clone();
    let mut ledger = Ledger {
        sent: config.orders,
        ..Ledger::default()
    };
    let mut reserved_per_sku: HashMap<String, i64> = HashMap::new();
    let all: Vec<u64> = (0..config.orders).collect();
    let states = read_orders(config, conn, history, &all).await?;
    for (i, st) in all.iter().zip(states) {
        let client_accepted = seen[*i as usize] == Some(Seen::Accepted);
        if client_accepted {
            ledger.accepted += 1;
        } else {
            ledger.unknown += 1;
            if st.accepted_at.is_some() {
                ledger.recovered += 1;
            }
        }
        let in_pipeline = client_accepted || st.accepted_at.is_some();
        // One order, one story: the record holds what this run sent.
        if st.sku.is_some()
            && (st.sku.as_deref() != Some(config.sku(*i).as_str())
                || st.qty.as_deref() != Some("1"))
        {
            ledger.mismatched += 1;
        }
        if st.decisions > 1 {
            ledger.duplicated += 1;
        }
        if st.sends > 1 {
            ledger.duplicated += 1;
        }
        match st.outcome.as_deref() {
            Some("reserved") => {
                ledger.reserved += 1;
                if let Some(sku) = &st.sku {
                    *reserved_per_sku.entry(sku.clone()).or_default() += 1;
                }
                if st.notification.as_deref() == Some("sent") {
                    ledger.notified += 1;
                } else if config.expect_notified {
                    ledger.lost += 1;
                }
            }
            Some("rejected") => match st.reason.as_deref() {
                Some("unknown_sku") => ledger.rejected_unknown_sku += 1,
                _ => ledger.rejected_out_of_stock += 1,
            },
            _ if st.status.as_deref() == Some("parked") => ledger.parked += 1,
            _ if in_pipeline => ledger.lost += 1,
            _ => {}
        }
    }
    // Stock arithmetic over the run's SKUs.
    let initial = config.stock_per_sku();
    ledger.stock_min = i64::MAX;
    for s in 0..config.skus.max(1) {
        let sku = format!("{}-sku-{s}", config.run_id);
        let actual: i64 = conn.get(config.key(&format!("inventory:{sku}"))).await?;
        ledger.stock_actual += actual;
        ledger.stock_expected += initial - reserved_per_sku.get(&sku).copied().unwrap_or(0);
        ledger.stock_min = ledger.stock_min.min(actual);
    }
    Ok(ledger)
}

async fn dlq_depth(config: &LoadConfig) -> u64 {
    let Some(url) = &config.amqp_url else {
        return 0;
    };
    let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return 0;
    };
    let mut total = 0;
    for q in [topology::ORDERS_DLQ, topology::NOTIFIER_DLQ] {
        let Ok(ch) = conn.create_channel().await else {
            break;
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        if let Ok(state) = ch
            .queue_declare(
                format!("{}{q}", config.topology_prefix).into(),
                passive,
                FieldTable::default(),
            )
            .await
        {
            total += u64::from(state.message_count());
        }
        let _ = ch.close(200, "done".into()).await;
    }
    let _ = conn.close(200, "done".into()).await;
    total
}

async fn redelivered(config: &LoadConfig) -> u64 {
    let mut total = 0.0;
    for url in &config.processor_metrics {
        let Ok(res) = reqwest::get(url).await else {
            continue;
        };
        let Ok(text) = res.text().await else { continue };
        total += text
            .lines()
            .filter(|l| l.starts_with("orders_redelivered_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total as u64
}
