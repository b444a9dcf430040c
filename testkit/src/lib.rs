//! Test support shared by every service's integration tests: where the local
//! stack is, unique prefixes, awaiting a condition, a fault-injecting TCP proxy
//! and broker inspection. Dev-dependency only.
//!
//! Depends on every service, to start them in-process; it is a dev-dependency
//! only and nothing but tests may depend on it.

pub mod configs;
mod local_metrics;
pub use local_metrics::LocalMetrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use pipeline::amqp::{Broker, Outgoing};
use pipeline::config::{BrokerConfig, BrokerNodes, RedisConfig, RedisUrl};
use pipeline::messages::{ROUTE_NEW_ORDER, ROUTE_ORDER_CREATED, ROUTE_ORDER_REJECTED};
use pipeline::shutdown::CancellationToken;
use pipeline::trace::TraceParent;
use redis::AsyncCommands;
use std::collections::HashMap;
use tokio::time::Instant;

/// Broker settings for a test service: the local cluster, its own topology
/// prefix, short timeouts, queues that expire if a test crashes.
pub fn broker_config(prefix: &str, connection_name: &str) -> BrokerConfig {
    BrokerConfig {
        urls: BrokerNodes::parse(&broker_urls()).unwrap(),
        heartbeat: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(1500),
        confirm_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(500),
        topology_prefix: prefix.to_owned(),
        delivery_limit: 5,
        queue_expires: Some(Duration::from_secs(600)),
        connection_name: connection_name.to_owned(),
        suppliers: Vec::new(),
    }
}

/// Redis settings for a test service: its own key prefix.
pub fn redis_config(prefix: &str) -> RedisConfig {
    RedisConfig {
        url: RedisUrl::parse(&redis_url()).unwrap(),
        timeout: Duration::from_millis(1000),
        response_timeout: Duration::from_secs(5),
        key_prefix: prefix.replace('.', ":"),
    }
}

/// Everything a test service shares: port 0, its own topology and key
/// prefix, the test listener limits.
pub fn service_config(prefix: &str, connection_name: &str) -> pipeline::service::ServiceConfig {
    pipeline::service::ServiceConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        broker: broker_config(prefix, connection_name),
        redis: redis_config(prefix),
        http: http_limits(),
    }
}

/// Listener limits for a test service: the defaults, shorter where a test
/// waits for them (`http_limits_with` sets its own).
pub fn http_limits() -> pipeline::http::Limits {
    pipeline::http::Limits {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_connections: 1024,
    }
}

/// The local cluster `make up`/`make test` runs, unless `RABBITMQ_URLS` says
/// otherwise.
pub fn broker_urls() -> String {
    std::env::var("RABBITMQ_URLS").unwrap_or_else(|_| {
        (0..3)
            .map(|i| format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5672 + i))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The local PostgreSQL `make up`/`make test` runs, unless `DATABASE_URL`
/// says otherwise.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| pgdb::DEFAULT_DATABASE_URL.into())
}

/// The key store of one test's prefix: its own schema (`k_<prefix>`), a
/// quick refresh, so a revocation shows within a test's patience.
pub fn keys_config(prefix: &str) -> clients::KeysConfig {
    keys_config_at(prefix, &database_url())
}

/// [`keys_config`] in the database at `database_url`.
pub fn keys_config_at(prefix: &str, database_url: &str) -> clients::KeysConfig {
    clients::KeysConfig {
        database_url: secrecy::SecretString::from(database_url.to_owned()),
        cache: clients::KeyCache {
            schema: format!("k_{}", history_schema(prefix)),
            refresh: std::time::Duration::from_millis(500),
            grace: std::time::Duration::from_secs(600),
        },
    }
}

/// The client of the keys the tests' helpers mint: `default`, whose orders
/// keep their bare ids (`order:<id>`), as every order did before client
/// keys. Tests of scoping mint keys of other clients beside it.
pub const TEST_CLIENT: &str = pipeline::domain::ClientId::DEFAULT;

/// The rates of the keys [`mint_key`] makes: more than any test sends.
pub const TEST_RATE: u32 = 1_000_000;

/// A fresh key in `prefix`'s key store, with `scopes` (`admin` when empty),
/// for client `client`: what a test sends as `Authorization: Bearer <key>`.
pub async fn mint_key(prefix: &str, client: &str, scopes: &[clients::Scope]) -> String {
    mint_key_in(&keys_config(prefix), client, scopes).await
}

/// [`mint_key`] in the store `config` names.
pub async fn mint_key_in(
    config: &clients::KeysConfig,
    client: &str,
    scopes: &[clients::Scope],
) -> String {
    mint_limited_key_in(config, client, scopes, TEST_RATE, TEST_RATE).await
}

/// [`mint_key_in`] with these rates (orders and quotes per second).
pub async fn mint_limited_key_in(
    config: &clients::KeysConfig,
    client: &str,
    scopes: &[clients::Scope],
    orders_per_sec: u32,
    quotes_per_sec: u32,
) -> String {
    let scopes = if scopes.is_empty() {
        vec![clients::Scope::Admin]
    } else {
        scopes.to_vec()
    };
    let mut out = Vec::new();
    clients::KeysCommand::Create {
        client: client.to_owned(),
        scopes,
        orders_per_sec: Some(orders_per_sec),
        quotes_per_sec: Some(quotes_per_sec),
    }
    .run(config, &mut out)
    .await
    .expect("a key is minted in the test's key store");
    String::from_utf8(out).unwrap().trim().to_owned()
}

/// Drops `prefix`'s key store, if a test made one.
pub async fn drop_key_store(prefix: &str) {
    drop_key_store_in(&keys_config(prefix)).await
}

/// [`drop_key_store`] of the store `config` names.
pub async fn drop_key_store_in(config: &clients::KeysConfig) {
    if let Ok(store) = config.store() {
        let _ = store.drop_schema().await;
    }
}

/// A client that sends `key` with every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The history schema of one test's prefix (`t-abc.` -> `t_abc`).
pub fn history_schema(prefix: &str) -> String {
    prefix
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique prefix for one test's queues and keys.
pub fn unique_prefix() -> String {
    pipeline::telemetry::init_for_tests();
    format!("t-{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A connection for inspecting the broker, to the first node.
pub async fn inspector() -> Connection {
    let url = broker_urls().split(',').next().unwrap().to_owned();
    Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("inspector connects")
}

/// Messages waiting in `queue` (passive declare).
pub async fn queue_depth(queue: &str) -> u32 {
    let conn = inspector().await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

/// Takes (and acks) every message waiting in `queue`.
pub async fn drain(queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let conn = inspector().await;
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        msg.ack(BasicAckOptions::default()).await.unwrap();
        out.push(msg);
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

/// Deletes the queues of one test's topology.
pub async fn delete_topology(prefix: &str) {
    let conn = inspector().await;
    let ch = conn.create_channel().await.unwrap();
    let queues = pipeline::amqp::topology::QUEUES;
    for q in queues
        .iter()
        .chain(std::iter::once(&pipeline::amqp::topology::EVENTS_STREAM))
    {
        let _ = ch
            .queue_delete(format!("{prefix}{q}").into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// A multiplexed Redis connection for assertions.
pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects")
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a [`TcpProxy`] treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Forward,
    /// Close every connection and refuse new ones: the node is gone.
    Down,
    /// Keep connections open but pass nothing: a silent network cut.
    Blackhole,
}

/// A loopback TCP proxy in front of one broker node, for cutting the gateway's
/// link without touching the shared cluster.
pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(ProxyMode::Forward);
        let task = tokio::spawn(async move {
            let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *rx.borrow() != ProxyMode::Forward {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut rx = rx.clone();
                let held = held.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let changed = async {
                        rx.wait_for(|m| *m != ProxyMode::Forward)
                            .await
                            .map(|m| *m == ProxyMode::Blackhole)
                            .unwrap_or(false)
                    };
                    let blackhole = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        blackhole = changed => blackhole,
                    };
                    if blackhole {
                        // Hold both ends open, silently.
                        held.lock().await.push((inbound, outbound));
                    }
                });
            }
        });
        Self { addr, mode, task }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One test's world: its prefixes, a publishing broker link, Redis.
pub struct World {
    pub prefix: String,
    pub broker: Broker,
    pub redis: redis::aio::MultiplexedConnection,
    shutdown: CancellationToken,
}

impl World {
    pub async fn new() -> Self {
        let prefix = unique_prefix();
        let shutdown = CancellationToken::new();
        let broker = Broker::connect(broker_config(&prefix, "test-publisher"), shutdown.clone())
            .await
            .unwrap();
        Self {
            prefix,
            broker,
            redis: redis().await,
            shutdown,
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix.replace('.', ":"))
    }

    pub fn queue(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub async fn set_stock(&mut self, sku: &str, units: i64) {
        let _: () = self
            .redis
            .set(self.key(&format!("inventory:{sku}")), units)
            .await
            .unwrap();
    }

    pub async fn stock(&mut self, sku: &str) -> Option<i64> {
        self.redis
            .get(self.key(&format!("inventory:{sku}")))
            .await
            .unwrap()
    }

    pub async fn counters(&mut self) -> HashMap<String, i64> {
        self.redis.hgetall(self.key("counters")).await.unwrap()
    }

    /// One field of `counters` (0 when unset). Takes `&self`, so it can be
    /// polled from inside [`eventually`].
    pub async fn counter(&self, name: &str) -> i64 {
        let mut redis = self.redis.clone();
        let value: Option<i64> = redis.hget(self.key("counters"), name).await.unwrap();
        value.unwrap_or(0)
    }

    pub async fn order(&mut self, id: &str) -> HashMap<String, String> {
        self.redis
            .hgetall(self.key(&format!("order:{id}")))
            .await
            .unwrap()
    }

    /// Publishes a raw body to `orders.direct` and waits for the confirm.
    pub async fn publish_raw(&self, message_id: &str, body: &[u8]) {
        let exchange = self.broker.topology().orders_exchange();
        self.publish_to(&exchange, ROUTE_NEW_ORDER, message_id, body)
            .await;
    }

    /// Publishes an `order.created` event for a reserved order to
    /// `orders.topic`, as the processor would.
    pub async fn publish_created(&self, id: &str, sku: &str, qty: u32) {
        let body = format!(
            r#"{{"id":"{id}","sku":"{sku}","qty":{qty},"outcome":"reserved","decided_at_ms":1}}"#
        );
        let exchange = self.broker.topology().events_exchange();
        self.publish_to(
            &exchange,
            ROUTE_ORDER_CREATED,
            &format!("{id}:created"),
            body.as_bytes(),
        )
        .await;
    }

    /// Publishes an `order.rejected` event (decided at 7 ms after the epoch)
    /// to `orders.topic`, as the processor would.
    pub async fn publish_rejected(&self, id: &str, sku: &str, reason: &str) {
        let body = format!(
            r#"{{"id":"{id}","sku":"{sku}","qty":1,"outcome":"rejected","reason":"{reason}","decided_at_ms":7}}"#
        );
        let exchange = self.broker.topology().events_exchange();
        self.publish_to(
            &exchange,
            ROUTE_ORDER_REJECTED,
            &format!("{id}:rejected"),
            body.as_bytes(),
        )
        .await;
    }

    /// Publishes `body` and waits for the confirm.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
        body: &[u8],
    ) {
        let msg = Outgoing {
            exchange,
            routing_key,
            payload: body,
            message_id,
            correlation_id: message_id,
            traceparent: &TraceParent::generate(),
        };
        self.broker
            .publish(&msg, Instant::now() + Duration::from_secs(10))
            .await
            .expect("order published");
    }

    /// Publishes a valid order, as the gateway would.
    pub async fn publish_order(&self, id: &str, sku: &str, qty: u32) {
        let body = format!(r#"{{"id":"{id}","sku":"{sku}","qty":{qty},"placed_at_ms":1}}"#);
        self.publish_raw(id, body.as_bytes()).await;
    }

    /// Waits until `reserved + rejected` reaches `n`.
    pub async fn await_decided(&mut self, n: i64, within: Duration) {
        let redis = self.redis.clone();
        let key = self.key("counters");
        eventually(within, &format!("{n} orders decided"), || {
            let (mut redis, key) = (redis.clone(), key.clone());
            async move {
                let c: HashMap<String, i64> = redis.hgetall(&key).await.unwrap();
                c.get("reserved").unwrap_or(&0) + c.get("rejected").unwrap_or(&0) >= n
            }
        })
        .await;
    }

    pub async fn finish(self) {
        self.shutdown.cancel();
        self.broker.close().await;
        delete_topology(&self.prefix).await;
        drop_key_store(&self.prefix).await;
    }
}

/// A throwaway, prefixed world on the local stack for the benchmark examples:
/// fill a queue fast, then time a service draining it.
pub mod bench {
    use std::time::{Duration, Instant};

    use futures_util::StreamExt;
    use pipeline::amqp::{Broker, Outgoing};
    use pipeline::config::{BrokerConfig, RedisConfig};
    use pipeline::shutdown::CancellationToken;
    use pipeline::trace::TraceParent;
    use redis::AsyncCommands;

    pub struct Fixture {
        pub prefix: String,
        pub broker_config: BrokerConfig,
        pub redis_config: RedisConfig,
        pub publisher: Broker,
        pub redis: redis::aio::MultiplexedConnection,
        shutdown: CancellationToken,
    }

    impl Fixture {
        /// `RABBITMQ_URLS`/`REDIS_URL` or the local stack, under a fresh prefix.
        pub async fn new(name: &str) -> anyhow::Result<Self> {
            let prefix = format!("{name}-{}.", std::process::id());
            let mut broker_config = super::broker_config(&prefix, name);
            broker_config.queue_expires = Some(Duration::from_secs(3600));
            broker_config.heartbeat = Duration::from_secs(5);
            let redis_config = super::redis_config(&prefix);
            let shutdown = CancellationToken::new();
            let publisher = Broker::connect(broker_config.clone(), shutdown.clone()).await?;
            let redis = redis::Client::open(redis_config.url.expose())?
                .get_multiplexed_async_connection()
                .await?;
            Ok(Self {
                prefix,
                broker_config,
                redis_config,
                publisher,
                redis,
                shutdown,
            })
        }

        pub fn key(&self, name: &str) -> String {
            format!("{}{name}", self.redis_config.key_prefix)
        }

        /// Publishes `n` messages made by `make(i) -> (message id, body)` to
        /// `exchange`/`routing_key`, 512 confirms in flight; prints the rate.
        pub async fn fill(
            &self,
            n: u64,
            exchange: &str,
            routing_key: &str,
            make: impl Fn(u64) -> (String, String),
        ) -> anyhow::Result<()> {
            println!("filling {} with {n} messages ...", self.prefix);
            let started = Instant::now();
            let trace = TraceParent::generate();
            let make = &make;
            let results: Vec<_> = futures_util::stream::iter(0..n)
                .map(|i| {
                    let trace = &trace;
                    async move {
                        let (id, body) = make(i);
                        let msg = Outgoing {
                            exchange,
                            routing_key,
                            payload: body.as_bytes(),
                            message_id: &id,
                            correlation_id: &id,
                            traceparent: trace,
                        };
                        self.publisher
                            .publish(&msg, tokio::time::Instant::now() + Duration::from_secs(60))
                            .await
                    }
                })
                .buffer_unordered(512)
                .collect()
                .await;
            for r in results {
                r?;
            }
            let took = started.elapsed().as_secs_f64();
            println!(
                "filled in {took:.1} s ({:.0} confirmed publishes/s)",
                n as f64 / took
            );
            Ok(())
        }

        /// Polls `counters` until `done(counters)` holds; returns the time taken.
        pub async fn wait_for_counters(
            &mut self,
            done: impl Fn(&std::collections::HashMap<String, u64>) -> bool,
        ) -> anyhow::Result<Duration> {
            let started = Instant::now();
            let key = self.key("counters");
            loop {
                let c: std::collections::HashMap<String, u64> = self.redis.hgetall(&key).await?;
                if done(&c) {
                    return Ok(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// A service's shared settings on this world's broker and Redis.
        pub fn service_config(&self) -> pipeline::service::ServiceConfig {
            pipeline::service::ServiceConfig {
                addr: "127.0.0.1:0".parse().expect("a socket address"),
                broker: self.broker_config.clone(),
                redis: self.redis_config.clone(),
                http: super::http_limits(),
            }
        }

        /// Deletes the queues and every key under the prefix (SCAN, never KEYS).
        pub async fn cleanup(mut self) -> anyhow::Result<()> {
            super::delete_topology(&self.prefix).await;
            self.publisher.close().await;
            self.shutdown.cancel();
            let keys: Vec<String> = self
                .redis
                .scan_match::<_, String>(format!("{}*", self.redis_config.key_prefix))
                .await?
                .filter_map(|k| async move { k.ok() })
                .collect()
                .await;
            for chunk in keys.chunks(1000) {
                let _: () = self.redis.del(chunk).await?;
            }
            Ok(())
        }
    }
}

/// The local stack's data folder (`STACK_DIR` or `.stack/`).
pub fn stack_dir() -> std::path::PathBuf {
    std::env::var("STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack"))
}

/// The pid of RabbitMQ node `n` of the local stack.
pub fn node_pid(n: u8) -> String {
    let file = stack_dir().join(format!("rabbitmq/rabbit{n}/pid"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| {
            panic!(
                "node {n} of the local stack is not running ({}): {e}",
                file.display()
            )
        })
        .trim()
        .to_owned()
}

/// `kill -9` of RabbitMQ node `n`; the returned guard restarts it when dropped,
/// pass or fail, so the stack is left whole.
pub fn kill_node(n: u8) -> RestartNode {
    let pid = node_pid(n);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -9 {pid} failed");
    RestartNode(n)
}

pub struct RestartNode(u8);

impl Drop for RestartNode {
    fn drop(&mut self) {
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .args(["start-node", &self.0.to_string()])
            .stdout(std::process::Stdio::null())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "restarting node {} failed: {status:?}",
            self.0
        );
    }
}
