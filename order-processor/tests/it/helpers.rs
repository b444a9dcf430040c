//! A real processor in-process on port 0, a publisher for `orders.direct`, and
//! Redis accessors, all under one test's own topology and key prefix.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use order_processor::{AfterCommit, Processor, ProcessorConfig};
use pipeline::amqp::{Broker, Outgoing};
use pipeline::messages::ROUTE_NEW_ORDER;
use pipeline::shutdown::CancellationToken;
use pipeline::trace::TraceParent;
use redis::AsyncCommands;
use tokio::time::Instant;

pub use testkit::{ProxyMode, TcpProxy, eventually, unique_prefix};

pub fn test_config(prefix: &str) -> ProcessorConfig {
    ProcessorConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        broker: testkit::broker_config(prefix, "order-processor-test"),
        redis: testkit::redis_config(prefix),
        prefetch: 32,
        transient_retry: Duration::from_secs(10),
    }
}

pub struct RunningProcessor {
    pub addr: std::net::SocketAddr,
    pub broker: Broker,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningProcessor {
    pub async fn start(config: ProcessorConfig) -> Self {
        Self::start_with(config, None).await
    }

    pub async fn start_with(config: ProcessorConfig, hook: Option<AfterCommit>) -> Self {
        let shutdown = CancellationToken::new();
        let processor = Processor::build_with(config, shutdown.clone(), hook)
            .await
            .expect("processor starts");
        let addr = processor.local_addr();
        let broker = processor.broker().clone();
        let task = tokio::spawn(processor.run_until_stopped());
        Self {
            addr,
            broker,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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
        let broker = Broker::connect(
            testkit::broker_config(&prefix, "test-publisher"),
            shutdown.clone(),
        )
        .await
        .unwrap();
        Self {
            prefix,
            broker,
            redis: testkit::redis().await,
            shutdown,
        }
    }

    pub fn config(&self) -> ProcessorConfig {
        test_config(&self.prefix)
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

    pub async fn counter(&mut self, name: &str) -> i64 {
        self.counters().await.get(name).copied().unwrap_or(0)
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
        let msg = Outgoing {
            exchange: &exchange,
            routing_key: ROUTE_NEW_ORDER,
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
        testkit::delete_topology(&self.prefix).await;
    }
}

/// A hook that runs `f` once, on the first committed order.
pub fn once_hook<F, Fut>(f: F) -> AfterCommit
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::new(f);
    Arc::new(move |_order| {
        let (fired, f) = (fired.clone(), f.clone());
        Box::pin(async move {
            if !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                f().await;
            }
        })
    })
}
