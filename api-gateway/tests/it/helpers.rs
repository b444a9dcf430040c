//! Test harness: a real gateway in-process on port 0, against the real Redis and
//! RabbitMQ cluster that `make test` starts. Every app gets its own topology and
//! key prefix, so tests run in parallel without seeing each other's orders.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api_gateway::idempotency::Lifetimes;
use api_gateway::{Application, GatewayConfig};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use pipeline::config::{BrokerConfig, RedisConfig, parse_urls};
use pipeline::shutdown::CancellationToken;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique prefix for one test's queues and keys.
pub fn unique_prefix() -> String {
    format!("t-{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A config for a test gateway: port 0, own prefixes, short timeouts.
pub fn test_config(prefix: &str) -> GatewayConfig {
    GatewayConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        broker: BrokerConfig {
            urls: parse_urls("RABBITMQ_URLS", &broker_urls()).unwrap(),
            heartbeat: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(1500),
            confirm_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_millis(500),
            topology_prefix: prefix.to_owned(),
            delivery_limit: 5,
            // Queues of crashed tests clean themselves up.
            queue_expires: Some(Duration::from_secs(600)),
            connection_name: "api-gateway-test".into(),
        },
        redis: RedisConfig {
            url: redis_url(),
            pool_size: 16,
            timeout: Duration::from_millis(1000),
            key_prefix: prefix.replace('.', ":"),
        },
        request_timeout: Duration::from_secs(5),
        lifetimes: Lifetimes {
            lease: Duration::from_secs(30),
            done: Duration::from_secs(600),
        },
        max_qty: 1000,
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: GatewayConfig,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(test_config(&unique_prefix())).await
}

pub async fn spawn_with(config: GatewayConfig) -> TestApp {
    init_logs();
    let shutdown = CancellationToken::new();
    let app = Application::build(config.clone(), shutdown.clone())
        .await
        .expect("gateway starts");
    let addr = app.local_addr();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        config,
        client: reqwest::Client::new(),
        shutdown,
        server,
    }
}

fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber_init();
    });
}

fn tracing_subscriber_init() -> Option<()> {
    // Logs only when asked for (RUST_LOG=debug cargo nextest run ...).
    std::env::var("RUST_LOG").ok()?;
    pipeline::telemetry::init("api-gateway-test").ok()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_order(&self, body: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/orders"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.send().await.expect("request sent")
    }

    pub fn queue(&self) -> String {
        format!("{}orders.queue", self.config.broker.topology_prefix)
    }

    pub fn exchange(&self) -> String {
        format!("{}orders.direct", self.config.broker.topology_prefix)
    }

    /// A separate connection for inspecting the broker.
    pub async fn broker(&self) -> Connection {
        let url = broker_urls().split(',').next().unwrap().to_owned();
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("inspector connects")
    }

    /// Messages waiting in this app's `orders.queue`.
    pub async fn queued_orders(&self) -> u32 {
        let conn = self.broker().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                self.queue().into(),
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

    /// Takes every message from this app's `orders.queue`.
    pub async fn drain_orders(&self) -> Vec<lapin::message::BasicGetMessage> {
        let conn = self.broker().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(msg) = ch
            .basic_get(self.queue().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            msg.ack(BasicAckOptions::default()).await.unwrap();
            out.push(msg);
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.redis.key_prefix)
    }

    /// Stops the app and deletes its queues.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let conn = self.broker().await;
        let _ = (&mut self.server).await;
        let ch = conn.create_channel().await.unwrap();
        for q in [
            "orders.queue",
            "notifier.queue",
            "orders.dlq",
            "notifier.dlq",
        ] {
            let name = format!("{}{q}", self.config.broker.topology_prefix);
            let _ = ch.queue_delete(name.into(), Default::default()).await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
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
