//! A quote world: one gateway and real supplier instances in-process, on the
//! local broker and Redis, under one test's own topology and key prefix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use api_gateway::{Application, GatewayConfig, QuotesConfig};
use pipeline::domain::SupplierId;
use pipeline::shutdown::CancellationToken;
use quotes::scatter::BreakerConfig;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use supplier::{Supplier, SupplierConfig};

pub use testkit::eventually;

pub const SKU: &str = "mag-safe-phone-case";

/// How a supplier misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    pub delay: Duration,
    pub failure_rate: f64,
}

impl Knobs {
    pub fn slow(ms: u64) -> Self {
        Self {
            delay: Duration::from_millis(ms),
            failure_rate: 0.0,
        }
    }

    pub fn failing() -> Self {
        Self {
            delay: Duration::ZERO,
            failure_rate: 1.0,
        }
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub struct World {
    pub prefix: String,
    pub gateway: Gateway,
    pub client: reqwest::Client,
    pub quotes: QuotesConfig,
    suppliers: HashMap<String, Running>,
    redis: redis::aio::MultiplexedConnection,
}

/// A breaker that opens and recovers within a test's patience.
pub fn quick_breaker() -> BreakerConfig {
    BreakerConfig {
        window: 4,
        min_calls: 2,
        failure_rate_percent: 50,
        open_for: Duration::from_millis(600),
        half_open_probes: 1,
    }
}

pub fn gateway_config(prefix: &str, quotes: QuotesConfig) -> GatewayConfig {
    GatewayConfig {
        quotes,
        ..testkit::configs::gateway(prefix)
    }
}

pub async fn start_gateway(prefix: &str, quotes: QuotesConfig) -> Gateway {
    let shutdown = CancellationToken::new();
    let app = Application::build(gateway_config(prefix, quotes), shutdown.clone())
        .await
        .expect("gateway starts");
    let addr = app.local_addr();
    let server = tokio::spawn(app.run_until_stopped());
    Gateway {
        addr,
        shutdown,
        server,
    }
}

impl Gateway {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("the server task ran to its end")
            .expect("the server stopped cleanly");
    }
}

fn ids(names: &[&str]) -> Vec<SupplierId> {
    names
        .iter()
        .map(|n| SupplierId::parse(n).unwrap())
        .collect()
}

impl World {
    /// A gateway asking `suppliers`, each running with its knobs, and each
    /// carrying `SKU` as acme 12.50/3 days, globex 11.90/5 days, initech
    /// 13.90/1 day (the demo catalog), 500 units each.
    pub async fn new(suppliers: &[(&str, Knobs)], breaker: BreakerConfig) -> Self {
        Self::with_quotes(suppliers, breaker, |_| {}).await
    }

    /// [`World::new`], with the gateway's quote settings changed by `tweak`.
    pub async fn with_quotes(
        suppliers: &[(&str, Knobs)],
        breaker: BreakerConfig,
        tweak: impl FnOnce(&mut QuotesConfig),
    ) -> Self {
        let prefix = testkit::unique_prefix();
        let names: Vec<&str> = suppliers.iter().map(|(n, _)| *n).collect();
        let mut quotes = QuotesConfig::with_suppliers(ids(&names));
        quotes.breaker = breaker;
        tweak(&mut quotes);
        // Also the shortest deadline whose silence counts against a circuit.
        quotes.default_timeout = Duration::from_millis(1000);
        let gateway = start_gateway(&prefix, quotes.clone()).await;
        let key = testkit::mint_key(&prefix, testkit::TEST_CLIENT, &[]).await;
        let mut world = Self {
            redis: testkit::redis().await,
            prefix,
            gateway,
            client: testkit::client_with_key(&key),
            quotes,
            suppliers: HashMap::new(),
        };
        for (name, price, days) in [("acme", 1250, 3), ("globex", 1190, 5), ("initech", 1390, 1)] {
            world.set_catalog(name, SKU, price, 500, days).await;
        }
        for (name, knobs) in suppliers {
            world.start_supplier(name, *knobs).await;
        }
        world
    }

    /// This test's broker names.
    pub fn topology(&self) -> pipeline::amqp::Topology {
        pipeline::amqp::Topology::new(self.prefix.clone(), 5)
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix.replace('.', ":"))
    }

    pub async fn start_supplier(&mut self, id: &str, knobs: Knobs) {
        let id = SupplierId::parse(id).unwrap();
        let config = SupplierConfig {
            delay: knobs.delay,
            failure_rate: knobs.failure_rate,
            ..testkit::configs::supplier(&self.prefix, &id)
        };
        let shutdown = CancellationToken::new();
        let supplier = Supplier::build(config, shutdown.clone())
            .await
            .expect("supplier starts");
        let task = tokio::spawn(supplier.run_until_stopped());
        self.suppliers
            .insert(id.to_string(), Running { shutdown, task });
    }

    pub async fn stop_supplier(&mut self, id: &str) {
        let running = self.suppliers.remove(id).expect("a running supplier");
        running.shutdown.cancel();
        running.task.await.unwrap().unwrap();
    }

    pub async fn set_catalog(
        &mut self,
        supplier: &str,
        sku: &str,
        price: u64,
        stock: u64,
        days: u32,
    ) {
        let entry = json!({"unit_price_minor": price, "currency": "EUR", "stock": stock, "delivery_days": days});
        self.set_catalog_raw(supplier, sku, &entry.to_string())
            .await;
    }

    pub async fn set_catalog_raw(&mut self, supplier: &str, sku: &str, raw: &str) {
        let key = self.key(&format!("catalog:{supplier}"));
        let _: () = self.redis.hset(key, sku, raw).await.unwrap();
    }

    pub async fn redis(&mut self) -> &mut redis::aio::MultiplexedConnection {
        &mut self.redis
    }

    /// An HTTP client with a fresh key of another client.
    pub async fn client_of(&self, name: &str) -> reqwest::Client {
        testkit::client_with_key(
            &testkit::mint_key(&self.prefix, name, &clients::Scope::CLIENT).await,
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    /// `GET /quotes/<SKU>?<query>`: status and body.
    pub async fn quote(&self, query: &str) -> (StatusCode, Value) {
        self.get(&format!("/quotes/{SKU}?{query}")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self.client.get(self.url(path)).send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap())
    }

    /// `GET /suppliers`, one supplier's entry.
    pub async fn supplier_status(&self, id: &str) -> Value {
        let (_, body) = self.get("/suppliers").await;
        body["suppliers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == id)
            .cloned()
            .unwrap()
    }

    pub async fn post_order(&self, body: Value) -> (StatusCode, Value) {
        let res = self
            .client
            .post(self.url("/orders"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap())
    }

    /// Stops everything and deletes the test's queues (every quorum queue
    /// and stream keeps files open on every broker node).
    pub async fn finish(mut self) {
        let ids: Vec<String> = self.suppliers.keys().cloned().collect();
        for id in ids {
            self.stop_supplier(&id).await;
        }
        let topology = self.topology();
        self.gateway.stop().await;
        testkit::delete_topology(&self.prefix).await;
        testkit::drop_key_store(&self.prefix).await;
        let conn = testkit::inspector().await;
        let channel = conn.create_channel().await.unwrap();
        for id in self.quotes.suppliers.iter() {
            let queue = topology.supplier_queue(id);
            let _ = channel
                .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

/// Each supplier's entry of a quote result, by name.
pub fn outcome<'a>(body: &'a Value, supplier: &str) -> &'a Value {
    body["suppliers"]
        .as_array()
        .expect("a suppliers list")
        .iter()
        .find(|s| s["supplier"] == supplier)
        .unwrap_or_else(|| panic!("{supplier} in {body}"))
}
