//! Where notifications go: `log` (one structured line each) or `webhook` (an
//! HTTP POST of the notification JSON, signed per Standard Webhooks: see
//! [`crate::signature`]).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use crate::signature::WebhookSecrets;

/// What the customer is told, and what a webhook receives.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// The event's id (`<order id>:created`); also the webhook's
    /// `Idempotency-Key`, the same on every re-send.
    pub event_id: String,
    /// The order's client, and its id as the client named it.
    pub client: String,
    pub order_id: String,
    pub sku: String,
    pub qty: u32,
    pub status: &'static str,
    pub reserved_at_ms: u64,
}

/// Why a send did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (5xx, timeout, connection refused): the
    /// delivery goes back to the queue.
    #[error("{0}")]
    Transient(String),
    /// Will never succeed as sent (4xx): the delivery is dead-lettered.
    #[error("{0}")]
    Permanent(String),
}

/// The result of one `send`, including how many attempts it took.
#[derive(Debug)]
pub struct Sent {
    pub attempts: u32,
    pub result: Result<(), SendError>,
}

#[derive(Debug, Clone)]
pub enum Sink {
    Log,
    Webhook(Webhook),
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// Tries per delivery, the first included.
    pub tries: u32,
    secrets: WebhookSecrets,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(
        url: String,
        timeout: Duration,
        tries: u32,
        secrets: WebhookSecrets,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            url,
            tries,
            secrets,
            client,
        })
    }
}

impl Sink {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook(_) => "webhook",
        }
    }

    pub async fn send(&self, n: &Notification) -> Sent {
        match self {
            Self::Log => {
                tracing::info!(
                    target: "notification",
                    event_id = %n.event_id,
                    order_id = %n.order_id,
                    sku = %n.sku,
                    qty = n.qty,
                    status = n.status,
                    "customer notified"
                );
                Sent {
                    attempts: 1,
                    result: Ok(()),
                }
            }
            Self::Webhook(w) => w.send(n).await,
        }
    }
}

impl Webhook {
    async fn send(&self, n: &Notification) -> Sent {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let once = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.post(n).await
        };
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.tries.saturating_sub(1) as usize);
        let result = once
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, SendError::Transient(_)))
            .notify(|e, delay| tracing::warn!(error = %pipeline::telemetry::chain(&e), ?delay, "webhook failed, retrying"))
            .await;
        Sent {
            attempts: attempts.into_inner(),
            result,
        }
    }

    /// One signed call: the body is serialized once, and exactly those bytes
    /// are signed and sent; each attempt is signed anew (its timestamp).
    async fn post(&self, n: &Notification) -> Result<(), SendError> {
        let body = serde_json::to_vec(n).expect("a notification serializes");
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let signature = self.secrets.sign(&n.event_id, timestamp, &body);
        let res = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("Idempotency-Key", &n.event_id)
            .header("webhook-id", &n.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("webhook unreachable: {e}")))?;
        let status = res.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            Err(SendError::Permanent(format!("webhook answered {status}")))
        } else {
            Err(SendError::Transient(format!("webhook answered {status}")))
        }
    }
}
