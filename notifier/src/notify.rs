//! Handling one `order.created` delivery: notify the customer effectively once.
//!
//! ```text
//! parse ── malformed / not a reservation ──────────────> dead-letter (notifier.dlq)
//! claim.lua ── already sent ──> ack (skipped duplicate)
//!    │      └─ another instance is sending ──> wait for its claim, try again
//! send through the sink (webhook: retries on 5xx/timeouts)
//! notified.lua ── sent ──> ack          (the marker is set only after the send)
//!            ── transient failure ──> requeue (DELIVERY_LIMIT parks it)
//!            ── permanent (4xx) ────> dead-letter, error kept in the status hash
//! ```
//!
//! The one case where a notification goes out twice: the notifier dies between
//! a successful send and the record. Its claim expires, the delivery comes back,
//! and the notification is sent again with the same `Idempotency-Key`, which a
//! webhook receiver uses to drop the repeat.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lapin::message::Delivery;
use pipeline::amqp::{Disposition, header};
use pipeline::keys::Keys;
use pipeline::messages::{OrderEvent, Outcome};
use pipeline::store::Pool;
use pipeline::trace::TraceParent;
use redis::Script;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::sink::{Notification, SendError, Sink};

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("claim.lua")));

/// Called after a send and before it is recorded; returning `true` abandons
/// the delivery there, as a crash would (tests).
pub type AfterSend =
    Arc<dyn Fn(Notification) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct Handler {
    pub pool: Pool,
    pub keys: Keys,
    pub sink: Sink,
    pub claim: Duration,
    pub transient_retry: Duration,
    pub shutdown: CancellationToken,
    pub after_send: Option<AfterSend>,
}

enum Claim {
    Sent,
    Busy(Duration),
    Claimed,
}

impl Handler {
    pub async fn handle(&self, delivery: Delivery) -> Disposition {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string());
        let event: OrderEvent = match serde_json::from_slice(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(?message_id, reason = %e, "malformed event, dead-lettering it");
                metrics::counter!("notifications_dead_lettered_total").increment(1);
                return Disposition::DeadLetter;
            }
        };
        if event.outcome != Outcome::Reserved {
            tracing::warn!(?message_id, "not an order.created event, dead-lettering it");
            metrics::counter!("notifications_dead_lettered_total").increment(1);
            return Disposition::DeadLetter;
        }
        let trace = header(&delivery, "traceparent")
            .and_then(|h| TraceParent::parse(&h))
            .unwrap_or_else(TraceParent::generate);
        let notification = Notification {
            event_id: message_id.unwrap_or_else(|| Outcome::Reserved.event_id(&event.id)),
            order_id: event.id.to_string(),
            sku: event.sku.to_string(),
            qty: event.qty.get(),
            status: "reserved",
            reserved_at_ms: event.decided_at_ms,
        };
        let span =
            tracing::info_span!("notification", id = %event.id, trace_id = %trace.trace_id());
        self.notify(&event, notification).instrument(span).await
    }

    async fn notify(&self, event: &OrderEvent, n: Notification) -> Disposition {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // Claim, waiting out another instance's live claim.
        loop {
            let claimed = pipeline::retry::transient(self.transient_retry, &self.shutdown, || {
                self.claim_once(event, &n, &token)
            })
            .await;
            match claimed {
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot claim the notification, putting it back"
                    );
                    return Disposition::Requeue;
                }
                Ok(Claim::Sent) => {
                    metrics::counter!("notifications_skipped_total").increment(1);
                    tracing::debug!("already sent, skipping the duplicate");
                    return Disposition::Ack;
                }
                Ok(Claim::Claimed) => break,
                Ok(Claim::Busy(left)) => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Disposition::Requeue,
                        () = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
                    }
                }
            }
        }

        let started = std::time::Instant::now();
        let sent = self.sink.send(&n).await;
        let sink = self.sink.name();
        metrics::histogram!("notification_send_duration_seconds", "sink" => sink)
            .record(started.elapsed().as_secs_f64());
        if let Some(hook) = &self.after_send
            && hook(n.clone()).await
        {
            return Disposition::Requeue;
        }
        let error = sent.result.as_ref().err().map(ToString::to_string);
        let attempt = pipeline::order::Attempt {
            sent: sent.result.is_ok(),
            token: &token,
            attempts: sent.attempts,
            sink,
            error: error.as_deref().unwrap_or(""),
        };
        let recorded = pipeline::retry::transient(self.transient_retry, &self.shutdown, || {
            pipeline::order::record_notification(&self.pool, &self.keys, &event.id, &attempt)
        })
        .await;
        match (&sent.result, recorded) {
            (Ok(()), Ok(_)) => {
                metrics::counter!("notifications_sent_total", "sink" => sink).increment(1);
                tracing::debug!(sink, attempts = sent.attempts, "notification sent");
                Disposition::Ack
            }
            (Ok(()), Err(e)) => {
                // Sent but not recorded: the redelivery will send it again.
                tracing::error!(
                    error = format!("{e:#}"),
                    "notification sent but not recorded; it will be re-sent"
                );
                Disposition::Requeue
            }
            (Err(SendError::Transient(e)), _) => {
                metrics::counter!("notification_failures_total", "kind" => "transient")
                    .increment(1);
                tracing::warn!(error = %e, attempts = sent.attempts, "notification not sent, putting it back");
                Disposition::Requeue
            }
            (Err(SendError::Permanent(e)), _) => {
                metrics::counter!("notification_failures_total", "kind" => "permanent")
                    .increment(1);
                tracing::error!(error = %e, "notification refused by the receiver, dead-lettering it");
                Disposition::DeadLetter
            }
        }
    }

    async fn claim_once(
        &self,
        event: &OrderEvent,
        n: &Notification,
        token: &str,
    ) -> anyhow::Result<Claim> {
        let mut conn = self.pool.get().await?;
        let reply: Vec<String> = CLAIM
            .key(self.keys.notification(&event.id))
            .key(self.keys.counters())
            .arg(token)
            .arg(self.claim.as_millis() as u64)
            .arg(&n.event_id)
            .arg(self.sink.name())
            .invoke_async(&mut *conn)
            .await?;
        match reply.as_slice() {
            [tag] if tag == "sent" => Ok(Claim::Sent),
            [tag] if tag == "claimed" => Ok(Claim::Claimed),
            [tag, ms] if tag == "busy" => Ok(Claim::Busy(Duration::from_millis(
                ms.parse().unwrap_or(1000),
            ))),
            other => anyhow::bail!("unexpected claim.lua reply {other:?}"),
        }
    }
}
