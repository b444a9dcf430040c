//! The history in-process on port 0 (as many replicas as a test wants), with
//! the rest of the pipeline wired to it, under one test's prefixes and schema.

use std::time::Duration;

use order_history::{History, HistoryConfig, State};
use pipeline::history::HistoryClient;
use pipeline::shutdown::CancellationToken;
use serde_json::Value;
use std::sync::Arc;

pub use testkit::{World, eventually};

pub fn history_config(prefix: &str, replica: &str) -> HistoryConfig {
    HistoryConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        broker: testkit::broker_config(prefix, &format!("order-history-{replica}")),
        redis: testkit::redis_config(prefix),
        http: testkit::http_limits(),
        database_url: testkit::database_url(),
        schema: testkit::history_schema(prefix),
        replica: replica.to_owned(),
        batch: 100,
        lock_poll: Duration::from_millis(100),
        retention: Duration::from_secs(3600),
        pool_size: 4,
        db_timeout: Duration::from_secs(3),
    }
}

/// One replica running in this process.
pub struct Replica {
    pub base: String,
    pub state: Arc<State>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    pub async fn start(config: HistoryConfig) -> Self {
        let shutdown = CancellationToken::new();
        let history = History::build(config, shutdown.clone())
            .await
            .expect("history starts");
        let base = format!("http://{}", history.local_addr());
        let state = history.state();
        let task = tokio::spawn(history.run_until_stopped());
        Self {
            base,
            state,
            shutdown,
            task,
        }
    }

    pub fn client(&self) -> HistoryClient {
        HistoryClient::new(vec![self.base.clone()], Duration::from_secs(2))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base)).await.unwrap()
    }

    pub async fn json(&self, path: &str) -> Value {
        let res = self.get(path).await;
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.unwrap()
    }

    /// Waits until this replica has applied up to the stream's end as it
    /// knows it and `check` holds on `GET path`.
    pub async fn await_json(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let res = self.get(path).await;
            if res.status().is_success() {
                last = res.json().await.unwrap();
                if check(&last) {
                    return last;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last {path}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A database session in the test's schema, for looking at rows directly.
pub async fn sql(prefix: &str) -> tokio_postgres::Client {
    let url = format!(
        "{}?options=-csearch_path%3D{}",
        testkit::database_url(),
        testkit::history_schema(prefix)
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(conn);
    client
}

/// Drops the test's schema.
pub async fn drop_schema(prefix: &str) {
    order_history::db::Database::new(
        &testkit::database_url(),
        &testkit::history_schema(prefix),
        Duration::from_secs(3),
    )
    .unwrap()
    .drop_schema()
    .await
    .unwrap();
}

/// Gateway, processor and notifier (log sink) wired to `history`.
pub struct Pipeline {
    pub base: String,
    pub processor: std::net::SocketAddr,
    pub notifier: std::net::SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    pub async fn start(prefix: &str, history: Option<HistoryClient>) -> Self {
        let shutdown = CancellationToken::new();
        let processor = order_processor::Processor::build(
            order_processor::ProcessorConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                broker: testkit::broker_config(prefix, "order-processor-test"),
                redis: testkit::redis_config(prefix),
                http: testkit::http_limits(),
                prefetch: 32,
                batch: 32,
                transient_retry: Duration::from_secs(10),
                history: history.clone(),
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let notifier = notifier::Notifier::build(
            notifier::NotifierConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                broker: testkit::broker_config(prefix, "notifier-test"),
                redis: testkit::redis_config(prefix),
                http: testkit::http_limits(),
                prefetch: 32,
                batch: 32,
                transient_retry: Duration::from_secs(10),
                sink: notifier::SinkConfig::Log,
                claim: Duration::from_secs(30),
                history: history.clone(),
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let gateway = api_gateway::Application::build(
            api_gateway::GatewayConfig {
                quotes: api_gateway::QuotesConfig::with_suppliers(Vec::new()),
                addr: "127.0.0.1:0".parse().unwrap(),
                broker: testkit::broker_config(prefix, "api-gateway-test"),
                redis: testkit::redis_config(prefix),
                http: testkit::http_limits(),
                request_timeout: Duration::from_secs(5),
                lifetimes: api_gateway::idempotency::Lifetimes {
                    lease: Duration::from_secs(30),
                    done: Duration::from_secs(600),
                },
                max_qty: 1000,
                history,
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", gateway.local_addr());
        let (processor_addr, notifier_addr) = (processor.local_addr(), notifier.local_addr());
        let tasks = vec![
            tokio::spawn(processor.run_until_stopped()),
            tokio::spawn(notifier.run_until_stopped()),
            tokio::spawn(gateway.run_until_stopped()),
        ];
        Self {
            base,
            processor: processor_addr,
            notifier: notifier_addr,
            shutdown,
            tasks,
        }
    }

    pub async fn post(&self, body: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/orders", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base)).await.unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

/// The Prometheus text of a service.
pub async fn metrics(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every order and event row of a history, in a stable order, without the
/// wall-clock columns (what a rebuild must reproduce).
pub async fn snapshot(prefix: &str) -> (Vec<String>, Vec<String>) {
    let db = sql(prefix).await;
    let orders = db
        .query(
            "SELECT row_to_json(t)::text FROM (
                 SELECT id, sku, qty, status, status_rank, reason, timestamps, placed_at,
                        first_offset, updated_offset
                   FROM orders ORDER BY id) t",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let events = db
        .query(
            "SELECT row_to_json(t)::text FROM (
                 SELECT event_id, order_id, kind, stream_offset, at_ms, reason, trace_id, body
                   FROM events ORDER BY event_id) t",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (orders, events)
}
