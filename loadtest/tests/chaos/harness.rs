//! Service processes started by the test (so they can be SIGKILLed), wired to
//! the shared cluster and Redis (or the test's own) under one prefix.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::{HistoryTarget, LoadConfig, Report};

pub use testkit::{ProxyMode, TcpProxy, eventually};

/// How many orders a scenario sends.
pub fn orders() -> u64 {
    std::env::var("CHAOS_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `target/debug/<name>`: the service binaries cargo builds for the
/// workspace's integration tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --bins` (cargo nextest run --workspace builds it)",
        path.display()
    );
    path
}

pub fn out_dir(scenario: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos")
        .join(scenario);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One running service process; killed when dropped.
pub struct Service {
    pub child: Child,
    pub addr: String,
}

impl Service {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the services find the broker and Redis, and their shared prefixes.
#[derive(Clone)]
pub struct Wiring {
    pub scenario: &'static str,
    pub prefix: String,
    pub rabbitmq_urls: String,
    pub redis_url: String,
    pub extra: Vec<(&'static str, String)>,
    /// The addresses of the order-history replicas (none: no history).
    pub history: Vec<String>,
    pub database_url: String,
    /// The client key the load and the probes send (minted by
    /// [`Wiring::start_pipeline`]).
    api_key: std::sync::OnceLock<String>,
}

impl Wiring {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            prefix: testkit::unique_prefix(),
            rabbitmq_urls: testkit::broker_urls(),
            redis_url: testkit::redis_url(),
            extra: Vec::new(),
            history: Vec::new(),
            database_url: testkit::database_url(),
            api_key: std::sync::OnceLock::new(),
        }
    }

    /// This wiring's key store: its own schema, in its own database.
    fn keys_config(&self) -> clients::KeysConfig {
        testkit::keys_config_at(&self.prefix, &self.database_url)
    }

    /// The client key minted for this wiring.
    pub fn api_key(&self) -> &str {
        self.api_key
            .get()
            .expect("the first service started mints the key")
    }

    /// An HTTP client sending this wiring's key.
    pub fn http(&self) -> reqwest::Client {
        testkit::client_with_key(self.api_key())
    }

    /// Runs `replicas` order-history replicas (started with
    /// [`Wiring::start_history`]), and points every service and the ledger
    /// at them.
    pub fn with_history(mut self, replicas: usize) -> Self {
        self.history = (0..replicas)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        self
    }

    /// Starts history replica `i` (of [`Wiring::with_history`]).
    pub async fn start_history(&self, i: usize) -> Service {
        let replica = format!("h{}", i + 1);
        self.start_at(
            "order-history",
            self.history[i].clone(),
            &[
                ("HISTORY_REPLICA", replica.clone()),
                ("DATABASE_URL", self.database_url.clone()),
                ("HISTORY_SCHEMA", testkit::history_schema(&self.prefix)),
                ("HISTORY_LOCK_POLL_MS", "200".into()),
                ("DATABASE_TIMEOUT_MS", "2000".into()),
            ],
            &replica,
        )
        .await
    }

    pub fn key_prefix(&self) -> String {
        self.prefix.replace('.', ":")
    }

    /// Starts `name` and waits for its `/health` to answer 200.
    pub async fn start(&self, name: &'static str) -> Service {
        let addr = format!("127.0.0.1:{}", free_port());
        self.start_at(name, addr, &[], name).await
    }

    async fn start_at(
        &self,
        name: &'static str,
        addr: String,
        own: &[(&'static str, String)],
        log_name: &str,
    ) -> Service {
        self.mint_key().await;
        let addr_var = match name {
            "api-gateway" => "GATEWAY_ADDR",
            "order-processor" => "PROCESSOR_ADDR",
            "notifier" => "NOTIFIER_ADDR",
            "order-history" => "HISTORY_ADDR",
            _ => "DASHBOARD_ADDR",
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out_dir(self.scenario).join(format!("{log_name}.log")))
            .unwrap();
        let history_urls: Vec<String> =
            self.history.iter().map(|a| format!("http://{a}")).collect();
        let mut env: HashMap<&str, String> = HashMap::from([
            (addr_var, addr.clone()),
            ("RABBITMQ_URLS", self.rabbitmq_urls.clone()),
            ("REDIS_URL", self.redis_url.clone()),
            ("TOPOLOGY_PREFIX", self.prefix.clone()),
            ("REDIS_KEY_PREFIX", self.key_prefix()),
            ("QUEUE_EXPIRES_SECS", "600".into()), // as testkit::broker_config
            ("AMQP_HEARTBEAT_SECS", "2".into()),
            ("AMQP_CONNECT_TIMEOUT_MS", "1500".into()),
            ("AMQP_MAX_BACKOFF_MS", "500".into()),
            ("REDIS_TIMEOUT_MS", "1000".into()),
            ("REQUEST_TIMEOUT_MS", "5000".into()),
            ("TRANSIENT_RETRY_MS", "15000".into()),
            ("NOTIFY_CLAIM_MS", "3000".into()),
            (
                "RUST_LOG",
                "warn,pipeline::amqp=info,order_history=info".into(),
            ),
            ("HISTORY_URLS", history_urls.join(",")),
            ("DATABASE_URL", self.database_url.clone()),
            ("KEYS_SCHEMA", self.keys_config().cache.schema),
            // The history's API needs an admin key (as `make up`'s internal key).
            ("HISTORY_API_KEY", self.api_key().to_owned()),
        ]);
        for (k, v) in self.extra.iter().chain(own) {
            env.insert(k, v.clone());
        }
        let child = Command::new(binary(name))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let health = format!("http://{addr}/health");
        eventually(
            Duration::from_secs(60),
            &format!("{name} healthy"),
            || async {
                reqwest::get(&health)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
        Service { child, addr }
    }

    /// The gateway, then a processor and a notifier (kept alive by the
    /// returned workers).
    pub async fn start_pipeline(&self) -> (Service, [Service; 2]) {
        let gateway = self.start_gateway().await;
        let processor = self.start("order-processor").await;
        let notifier = self.start("notifier").await;
        (gateway, [processor, notifier])
    }

    /// The gateway.
    pub async fn start_gateway(&self) -> Service {
        self.start("api-gateway").await
    }

    /// Mints this wiring's key, the first time.
    async fn mint_key(&self) {
        if self.api_key.get().is_none() {
            let key = testkit::mint_key_in(&self.keys_config(), testkit::TEST_CLIENT, &[]).await;
            let _ = self.api_key.set(key);
        }
    }

    /// A connection to this wiring's Redis.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.clone())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// A load config aimed at this wiring's gateway.
    pub fn load(&self, gateway: &Service, orders: u64) -> LoadConfig {
        let mut c = LoadConfig::local(orders);
        c.gateway = format!("http://{}", gateway.addr);
        c.api_key = Some(self.api_key().to_owned());
        c.redis_url = self.redis_url.clone();
        c.key_prefix = self.key_prefix();
        c.topology_prefix = self.prefix.clone();
        c.amqp_url = Some(testkit::broker_urls().split(',').next().unwrap().to_owned());
        c.processor_metrics = Vec::new();
        c.concurrency = 32;
        c.drain_timeout = Duration::from_secs(240);
        c.request_timeout = Duration::from_secs(10);
        c.progress = false;
        c.run_id = format!("{}-{}", self.scenario, std::process::id());
        if !self.history.is_empty() {
            c.history = Some(HistoryTarget {
                database_url: self.database_url.clone(),
                schema: testkit::history_schema(&self.prefix),
                catch_up_timeout: Duration::from_secs(240),
                check: true,
            });
        }
        c
    }

    pub async fn cleanup(&self) {
        testkit::delete_topology(&self.prefix).await;
        testkit::drop_key_store_in(&self.keys_config()).await;
        if !self.history.is_empty() {
            let schema = testkit::history_schema(&self.prefix);
            let db = order_history::db::Database::new(
                &self.database_url,
                &schema,
                Duration::from_secs(3),
            )
            .unwrap();
            let _ = db.drop_schema().await;
        }
    }

    /// Seconds from `fault` until an order *sent after it* is accepted: a
    /// fresh order every 100 ms from the fault on, until the first 202.
    /// Requests in flight before the fault cannot satisfy it. Each probe
    /// order retries with its id until accepted, as a careful client does
    /// after a 503 (whose outcome is unknown: its message may sit in the
    /// event stream), so none is left half-placed.
    pub async fn first_accepted_after(&self, gateway: &Service, fault: Instant) -> f64 {
        let client = redis::Client::open(self.redis_url.clone()).unwrap();
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let key = format!("{}inventory:probe-sku", self.key_prefix());
            let _: Result<(), _> = redis::AsyncCommands::set_nx(&mut c, key, 1_000_000).await;
        }
        let http = loadtest::client_builder(Some(self.api_key()))
            .unwrap()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("http://{}/orders", gateway.addr);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = 0u64;
        loop {
            tokio::select! {
                Some(at) = rx.recv() => return at,
                _ = tick.tick() => {
                    n += 1;
                    let (http, url, tx) = (http.clone(), url.clone(), tx.clone());
                    let body = format!(
                        r#"{{"id":"probe-{}-{n}","sku":"probe-sku","qty":1}}"#,
                        self.scenario
                    );
                    tokio::spawn(async move {
                        for attempt in 0..120u32 {
                            let res = http
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .await;
                            if res.is_ok_and(|r| r.status() == 202) {
                                let _ = tx.send(fault.elapsed().as_secs_f64());
                                return;
                            }
                            let backoff = 50u64 << attempt.min(4);
                            tokio::time::sleep(Duration::from_millis(backoff)).await;
                        }
                    });
                }
            }
        }
    }
}

/// A history replica's `/health`, or `Null` if it does not answer.
pub async fn history_health(replica: &Service) -> serde_json::Value {
    match reqwest::get(format!("http://{}/health", replica.addr)).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Prints the ledger (saved next to the service logs) and fails the test on a
/// broken invariant.
pub fn check(scenario: &str, report: &Report) {
    let text = report.to_string();
    eprintln!("\n[{scenario}]\n{text}");
    let dir = out_dir(scenario);
    std::fs::write(dir.join("ledger.txt"), &text).unwrap();
    std::fs::write(
        dir.join("ledger.json"),
        serde_json::to_string_pretty(report).unwrap(),
    )
    .unwrap();
    assert!(
        report.drained,
        "[{scenario}] the pipeline did not drain (logs in {})",
        dir.display()
    );
    assert!(
        report.violations.is_empty(),
        "[{scenario}] {:?}",
        report.violations
    );
    assert!(
        report.ledger.accepted > 0,
        "[{scenario}] nothing was accepted"
    );
}
