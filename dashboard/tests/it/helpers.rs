//! The whole pipeline in one process (gateway, processor, notifier with the
//! log sink, dashboard), all under one test's prefixes.

use pipeline::history::HistoryClientConfig;
use std::time::Duration;

use dashboard::{Dashboard, DashboardConfig};
use pipeline::shutdown::CancellationToken;
use serde_json::Value;

pub use testkit::{World, eventually};

/// How a test's stack differs from the plain one.
#[derive(Debug, Default)]
pub struct Options {
    /// The gateway's `QUOTE_SUPPLIERS` (no supplier runs: one never asked
    /// shows on `/suppliers` as closed, with no figures).
    pub suppliers: Vec<&'static str>,
    /// The dashboard's `GATEWAY_URL`; `None`: the gateway of this stack.
    pub gateway_url: Option<String>,
}

pub struct Stack {
    pub world: World,
    /// The order-history replica the dashboard shows (a second configured
    /// URL answers nothing: a replica that is down).
    pub history: String,
    pub gateway: String,
    pub dashboard: String,
    /// Sends the admin key with every request.
    pub client: reqwest::Client,
    /// The admin key.
    pub key: String,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stack {
    /// The dashboard's page as a browser opens it with the admin key as the
    /// Basic password (`http://operator:<key>@host/`).
    pub fn dashboard_signed_in(&self) -> String {
        self.dashboard
            .replacen("http://", &format!("http://operator:{}@", self.key), 1)
    }

    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let world = World::new().await;
        let prefix = world.prefix.clone();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let history = order_history::History::build(
            order_history::HistoryConfig {
                replica: "dash-h1".into(),
                pool_size: 2,
                ..testkit::configs::history(&prefix, "dash-h1")
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let history_url = format!("http://{}", history.local_addr());
        tasks.push(tokio::spawn(history.run_until_stopped()));

        let processor = order_processor::Processor::build(
            testkit::configs::processor(&prefix),
            shutdown.clone(),
        )
        .await
        .unwrap();
        tasks.push(tokio::spawn(processor.run_until_stopped()));
        let notifier = notifier::Notifier::build(
            notifier::NotifierConfig {
                prefetch: 32,
                ..testkit::configs::notifier(&prefix, notifier::SinkConfig::log())
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        tasks.push(tokio::spawn(notifier.run_until_stopped()));
        let gateway = api_gateway::Application::build(
            api_gateway::GatewayConfig {
                quotes: api_gateway::QuotesConfig::with_suppliers(
                    options
                        .suppliers
                        .iter()
                        .map(|s| pipeline::domain::SupplierId::parse(s).unwrap())
                        .collect(),
                ),
                ..testkit::configs::gateway(&prefix)
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let gateway_url = format!("http://{}", gateway.local_addr());
        tasks.push(tokio::spawn(gateway.run_until_stopped()));
        // One admin key: the tests' client and the dashboard's `/suppliers`.
        let key = testkit::mint_key(&prefix, testkit::TEST_CLIENT, &[]).await;
        let dash = Dashboard::build(
            DashboardConfig {
                service: testkit::service_config(&prefix, "dashboard-test"),
                sample_interval: Duration::from_millis(200),
                history: Duration::from_secs(60),
                low_stock: 10,
                // Only keyspace notifications find a new SKU in time.
                inventory_rescan: Duration::from_secs(3600),
                sse_max_clients: 8,
                order_history: HistoryClientConfig {
                    timeout: Duration::from_millis(500),
                    api_key: Some(key.clone().into()),
                    ..HistoryClientConfig::at(vec![
                        history_url.clone(),
                        "http://127.0.0.1:9".into(),
                    ])
                },
                keys: testkit::keys_config(&prefix),
                gateway: dashboard::gateway::GatewayConfig {
                    timeout: Duration::from_millis(500),
                    api_key: Some(key.clone().into()),
                    ..dashboard::gateway::GatewayConfig::at(Some(
                        options
                            .gateway_url
                            .clone()
                            .unwrap_or_else(|| gateway_url.clone()),
                    ))
                },
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let dashboard_url = format!("http://{}", dash.local_addr());
        tasks.push(tokio::spawn(dash.run_until_stopped()));
        Self {
            world,
            history: history_url,
            gateway: gateway_url,
            dashboard: dashboard_url,
            client: testkit::client_with_key(&key),
            key,
            shutdown,
            tasks,
        }
    }

    pub async fn post(&self, body: &str) -> u16 {
        self.client
            .post(format!("{}/orders", self.gateway))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn metrics_json(&self) -> Value {
        self.client
            .get(format!("{}/metrics", self.dashboard))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
        let schema = testkit::history_schema(&self.world.prefix);
        let db = order_history::db::Database::new(
            &testkit::database_url(),
            &schema,
            Duration::from_secs(3),
        )
        .unwrap();
        db.drop_schema().await.unwrap();
        self.world.finish().await;
    }
}
