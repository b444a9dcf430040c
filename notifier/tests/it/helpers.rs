//! A real notifier in-process on port 0, and a programmable webhook receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use notifier::{AfterSend, Notifier, NotifierConfig, SinkConfig};
use pipeline::shutdown::CancellationToken;

pub use testkit::{World, eventually};

pub fn test_config(prefix: &str, sink: SinkConfig) -> NotifierConfig {
    testkit::configs::notifier(prefix, sink)
}

pub struct RunningNotifier {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningNotifier {
    pub async fn start(config: NotifierConfig, hook: Option<AfterSend>) -> Self {
        let shutdown = CancellationToken::new();
        let n = Notifier::build_with(config, shutdown.clone(), hook)
            .await
            .expect("notifier starts");
        let addr = n.local_addr();
        let task = tokio::spawn(n.run_until_stopped());
        Self {
            addr,
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

/// One call the receiver got.
#[derive(Debug, Clone)]
pub struct Call {
    pub idempotency_key: String,
    pub body: serde_json::Value,
    /// The body as sent (what a signature covers).
    pub raw: Vec<u8>,
    /// The Standard Webhooks headers: id, timestamp, signature.
    pub webhook: [String; 3],
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Statuses to answer, in order, before answering 200 for good.
    script: VecDeque<u16>,
}

/// A webhook receiver on a free loopback port.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    /// What the notifiers sending here sign with (`WEBHOOK_SECRETS`).
    pub secrets: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            secrets: notifier::signature::WebhookSecrets::generate(),
            inner,
        }
    }

    /// Answer these statuses to the next calls, then 200.
    pub fn answer(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().script.extend(statuses);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn sink(&self) -> SinkConfig {
        SinkConfig::webhook(
            self.url.clone(),
            Duration::from_secs(2),
            4,
            notifier::signature::WebhookSecrets::parse(&self.secrets).unwrap(),
        )
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    let answered = inner.script.pop_front().unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inner.calls.push(Call {
        idempotency_key: header("idempotency-key"),
        body: serde_json::from_slice(&body).unwrap_or_default(),
        raw: body.to_vec(),
        webhook: ["webhook-id", "webhook-timestamp", "webhook-signature"].map(header),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

/// Gateway, processor and notifier (webhook sink to `rx`) under one test's
/// prefixes, in this process.
pub struct Pipeline {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    notifier: RunningNotifier,
}

impl Pipeline {
    pub async fn start(w: &World, rx: &Receiver) -> Self {
        let notifier = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
        let shutdown = CancellationToken::new();
        let processor = order_processor::Processor::build(
            testkit::configs::processor(&w.prefix),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let gateway =
            api_gateway::Application::build(testkit::configs::gateway(&w.prefix), shutdown.clone())
                .await
                .unwrap();
        let base = format!("http://{}", gateway.local_addr());
        let tasks = vec![
            tokio::spawn(processor.run_until_stopped()),
            tokio::spawn(gateway.run_until_stopped()),
        ];
        Self {
            base,
            client: testkit::client_with_key(
                &testkit::mint_key(&w.prefix, testkit::TEST_CLIENT, &[]).await,
            ),
            shutdown,
            tasks,
            notifier,
        }
    }

    /// POSTs `body` (with `key` as `Idempotency-Key`, if any).
    pub async fn post(&self, body: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/orders", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.send().await.unwrap()
    }

    pub async fn order(&self, id: &str) -> serde_json::Value {
        self.client
            .get(format!("{}/orders/{id}", self.base))
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
        self.notifier.stop().await;
    }
}
