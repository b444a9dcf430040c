//! Test harness: a real gateway in-process on port 0, against the real Redis and
//! RabbitMQ cluster that `make test` starts. Every app gets its own topology and
//! key prefix, so tests run in parallel without seeing each other's orders.

use std::net::SocketAddr;

use api_gateway::{Application, GatewayConfig};
use pipeline::shutdown::CancellationToken;

pub use testkit::{ProxyMode, TcpProxy, broker_urls, eventually, unique_prefix};

/// A config for a test gateway: port 0, own prefixes, short timeouts.
pub fn test_config(prefix: &str) -> GatewayConfig {
    testkit::configs::gateway(prefix)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: GatewayConfig,
    /// Sent by `client` with every request (scope `admin`).
    pub client: reqwest::Client,
    pub key: String,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(test_config(&unique_prefix())).await
}

pub async fn spawn_with(config: GatewayConfig) -> TestApp {
    pipeline::telemetry::init_for_tests();
    let shutdown = CancellationToken::new();
    let app = Application::build(config.clone(), shutdown.clone())
        .await
        .expect("gateway starts");
    let addr = app.local_addr();
    let server = tokio::spawn(app.run_until_stopped());
    // The tests' own client key: every scope, as an operator's would have.
    let key = testkit::mint_key_in(&config.keys, testkit::TEST_CLIENT, &[]).await;
    TestApp {
        addr,
        config,
        client: testkit::client_with_key(&key),
        key,
        shutdown,
        server,
    }
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
        self.topology().orders_queue()
    }

    /// Binds (or unbinds) every queue a new order is routed to (the work
    /// queue and the event stream): unbound, a publish is returned unroutable.
    pub async fn route_orders(&self, ch: &lapin::Channel, routed: bool) {
        for queue in [self.queue(), self.topology().events_stream()] {
            let (queue, exchange, key) = (queue.into(), self.exchange().into(), "order.new".into());
            let args = lapin::types::FieldTable::default();
            if routed {
                ch.queue_bind(queue, exchange, key, Default::default(), args)
                    .await
                    .unwrap();
            } else {
                ch.queue_unbind(queue, exchange, key, args).await.unwrap();
            }
        }
    }

    fn topology(&self) -> pipeline::amqp::Topology {
        pipeline::amqp::Topology::new(self.config.service.broker.topology_prefix.clone(), 1)
    }

    pub fn exchange(&self) -> String {
        self.topology().orders_exchange()
    }

    /// Messages waiting in this app's `orders.queue`.
    pub async fn queued_orders(&self) -> u32 {
        testkit::queue_depth(&self.queue()).await
    }

    /// Takes every message from this app's `orders.queue`.
    pub async fn drain_orders(&self) -> Vec<lapin::message::BasicGetMessage> {
        testkit::drain(&self.queue()).await
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        testkit::redis().await
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.service.redis.key_prefix)
    }

    /// The intake records of this app's Redis prefix, as another gateway
    /// instance would see them (its configured lease and key lifetime).
    pub fn store(&self) -> api_gateway::idempotency::Store {
        api_gateway::idempotency::Store::new(
            pipeline::store::connect(&self.config.service.redis).unwrap(),
            pipeline::keys::Keys::new(self.config.service.redis.key_prefix.clone()),
            self.config.lifetimes,
        )
    }

    /// Stops the app and deletes its queues.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        (&mut self.server)
            .await
            .expect("the server task ran to its end")
            .expect("the server stopped cleanly");
        testkit::delete_topology(&self.config.service.broker.topology_prefix).await;
        if let Ok(store) = self.config.keys.store() {
            let _ = store.drop_schema().await;
        }
    }
}
