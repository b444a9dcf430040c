//! The history in-process on port 0 (as many replicas as a test wants), with
//! the rest of the pipeline wired to it, under one test's prefixes and schema.

use std::time::Duration;

use order_history::{History, HistoryConfig, State};
use pipeline::history::HistoryClientConfig;
use pipeline::shutdown::CancellationToken;
use serde_json::Value;
use std::sync::Arc;

pub use testkit::{World, eventually};

pub fn history_config(prefix: &str, replica: &str) -> HistoryConfig {
    testkit::configs::history(prefix, replica)
}

/// One replica running in this process.
pub struct Replica {
    pub base: String,
    pub state: Arc<State>,
    /// An admin key of the test's key store: what the API needs.
    pub key: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    pub async fn start(config: HistoryConfig) -> Self {
        let key = testkit::mint_key_in(
            &config.keys.at(config.database_url.clone()),
            testkit::TEST_CLIENT,
            &[],
        )
        .await;
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
            http: testkit::client_with_key(&key),
            key,
            shutdown,
            task,
        }
    }

    /// This replica as the other services' `HISTORY_URLS` (with its key).
    pub fn client(&self) -> HistoryClientConfig {
        HistoryClientConfig {
            timeout: Duration::from_secs(2),
            api_key: Some(self.key.clone().into()),
            ..HistoryClientConfig::at(vec![self.base.clone()])
        }
    }

    /// `GET path` with the admin key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
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
    /// Sends the test's client key (scope `admin`).
    pub client: reqwest::Client,
    pub processor: std::net::SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    pub async fn start(prefix: &str, history: Option<HistoryClientConfig>) -> Self {
        let shutdown = CancellationToken::new();
        let history = history.unwrap_or_else(HistoryClientConfig::none);
        let processor = order_processor::Processor::build(
            order_processor::ProcessorConfig {
                history: history.clone(),
                ..testkit::configs::processor(prefix)
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let notifier = notifier::Notifier::build(
            notifier::NotifierConfig {
                prefetch: 32,
                history: history.clone(),
                ..testkit::configs::notifier(prefix, notifier::SinkConfig::log())
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let gateway = api_gateway::Application::build(
            api_gateway::GatewayConfig {
                history,
                ..testkit::configs::gateway(prefix)
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", gateway.local_addr());
        let processor_addr = processor.local_addr();
        let tasks = vec![
            tokio::spawn(processor.run_until_stopped()),
            tokio::spawn(notifier.run_until_stopped()),
            tokio::spawn(gateway.run_until_stopped()),
        ];
        Self {
            base,
            client: testkit::client_with_key(
                &testkit::mint_key(prefix, testkit::TEST_CLIENT, &[]).await,
            ),
            processor: processor_addr,
            shutdown,
            tasks,
        }
    }

    pub async fn post(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/orders", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
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
