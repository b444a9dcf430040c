//! Test support shared by every service's integration tests: where the local
//! stack is, unique prefixes, awaiting a condition, a fault-injecting TCP proxy
//! and broker inspection. Dev-dependency only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use pipeline::config::{BrokerConfig, RedisConfig, parse_urls};

/// Broker settings for a test service: the local cluster, its own topology
/// prefix, short timeouts, queues that expire if a test crashes.
pub fn broker_config(prefix: &str, connection_name: &str) -> BrokerConfig {
    BrokerConfig {
        urls: parse_urls("RABBITMQ_URLS", &broker_urls()).unwrap(),
        heartbeat: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(1500),
        confirm_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(500),
        topology_prefix: prefix.to_owned(),
        delivery_limit: 5,
        queue_expires: Some(Duration::from_secs(600)),
        connection_name: connection_name.to_owned(),
    }
}

/// Redis settings for a test service: its own key prefix.
pub fn redis_config(prefix: &str) -> RedisConfig {
    RedisConfig {
        url: redis_url(),
        pool_size: 16,
        timeout: Duration::from_millis(1000),
        key_prefix: prefix.replace('.', ":"),
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

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique prefix for one test's queues and keys.
pub fn unique_prefix() -> String {
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
    for q in [
        "orders.queue",
        "notifier.queue",
        "orders.dlq",
        "notifier.dlq",
        "orders.rejected",
    ] {
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
