//! Handling one `order.created` delivery: notify the customer effectively once.
//!
//! ```text
//! parse ── malformed / not a reservation ──────────────> dead-letter (notifier.dlq)
//! claim.lua ── already sent ──> publish order.notified again, ack (skipped duplicate)
//!    │      ├─ no record at all ──> ask the history: notified there: ack;
//!    │      │                        never seen: claim it anyway
//!    │      └─ another instance is sending ──> wait for its claim, try again
//! send through the sink (webhook: retries on 5xx/timeouts)
//! notified.lua ── sent ──> publish order.notified (confirmed), ack
//!            │            (the marker is set only after the send)
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
use pipeline::amqp::{Broker, Disposition, header};
use pipeline::history::HistoryClient;
use pipeline::keys::Keys;
use pipeline::messages::{EventKind, OrderEvent, OrderNotified, Outcome};
use pipeline::store::Redis;
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
    pub broker: Broker,
    /// Asked only when an order has neither a notification nor an order
    /// record (`None`: no history deployed, such an order is notified).
    pub history: Option<HistoryClient>,
    pub pool: Redis,
    pub keys: Keys,
    pub sink: Sink,
    pub claim: Duration,
    pub transient_retry: Duration,
    pub shutdown: CancellationToken,
    pub after_send: Option<AfterSend>,
}

enum Claim {
    Sent { at_ms: u64, channel: String },
    Busy(Duration),
    Claimed,
    Unrecorded,
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
        self.notify(&event, notification, &trace)
            .instrument(span)
            .await
    }

    async fn notify(
        &self,
        event: &OrderEvent,
        n: Notification,
        trace: &TraceParent,
    ) -> Disposition {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut adopt = false;
        // Claim, waiting out another instance's live claim.
        loop {
            let claimed = pipeline::retry::transient(self.transient_retry, &self.shutdown, || {
                self.claim_once(event, &n, &token, adopt)
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
                Ok(Claim::Sent { at_ms, channel }) => {
                    // Its event may have been lost between the record and the ack.
                    if let Err(e) = self.publish_notified(event, at_ms, &channel, trace).await {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "order.notified not confirmed, putting the delivery back"
                        );
                        return Disposition::Requeue;
                    }
                    metrics::counter!("notifications_skipped_total").increment(1);
                    tracing::debug!("already sent, skipping the duplicate");
                    return Disposition::Ack;
                }
                Ok(Claim::Unrecorded) => match self.notified_in_history(event).await {
                    Ok(true) => {
                        metrics::counter!("notifications_skipped_total").increment(1);
                        tracing::info!(
                            "already notified and kept in the history; its records have expired, nothing to do"
                        );
                        return Disposition::Ack;
                    }
                    Ok(false) => adopt = true,
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "the history does not answer, putting the delivery back"
                        );
                        return Disposition::Requeue;
                    }
                },
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
            (Ok(()), Ok(sent_at)) => {
                metrics::counter!("notifications_sent_total", "sink" => sink).increment(1);
                tracing::debug!(sink, attempts = sent.attempts, "notification sent");
                let at_ms = sent_at.unwrap_or_else(pipeline::messages::now_ms);
                match self.publish_notified(event, at_ms, sink, trace).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        // Recorded: the redelivery publishes it again, sends nothing.
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "order.notified not confirmed, putting the delivery back"
                        );
                        Disposition::Requeue
                    }
                }
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

    /// Whether the history has this order notified. Asked only for an order
    /// without any Redis record.
    async fn notified_in_history(&self, event: &OrderEvent) -> anyhow::Result<bool> {
        let Some(history) = &self.history else {
            return Ok(false);
        };
        let notified = pipeline::order::OrderStatus::Notified;
        history
            .reached(&event.id, notified, self.transient_retry, &self.shutdown)
            .await
    }

    /// `order.notified` on `orders.topic`, confirmed (for the history).
    async fn publish_notified(
        &self,
        event: &OrderEvent,
        at_ms: u64,
        channel: &str,
        trace: &TraceParent,
    ) -> anyhow::Result<()> {
        let body = OrderNotified {
            id: event.id.clone(),
            sku: event.sku.clone(),
            qty: event.qty,
            channel: channel.to_owned(),
            notified_at_ms: at_ms,
        };
        let payload = serde_json::to_vec(&body)?;
        pipeline::retry::transient(self.transient_retry, &self.shutdown, || async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            Ok(self
                .broker
                .publish_event(EventKind::Notified, &event.id, &payload, trace, deadline)
                .await?)
        })
        .await
    }

    async fn claim_once(
        &self,
        event: &OrderEvent,
        n: &Notification,
        token: &str,
        adopt: bool,
    ) -> anyhow::Result<Claim> {
        let mut conn = self.pool.connection();
        let reply: Vec<String> = CLAIM
            .key(self.keys.notification(&event.id))
            .key(self.keys.counters())
            .key(self.keys.order(&event.id))
            .arg(token)
            .arg(self.claim.as_millis() as u64)
            .arg(&n.event_id)
            .arg(self.sink.name())
            .arg(if adopt { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        match reply.as_slice() {
            [tag, at, channel] if tag == "sent" => Ok(Claim::Sent {
                at_ms: at.parse().unwrap_or(0),
                channel: channel.clone(),
            }),
            [tag] if tag == "unrecorded" => Ok(Claim::Unrecorded),
            [tag] if tag == "claimed" => Ok(Claim::Claimed),
            [tag, ms] if tag == "busy" => Ok(Claim::Busy(Duration::from_millis(
                ms.parse().unwrap_or(1000),
            ))),
            other => anyhow::bail!("unexpected claim.lua reply {other:?}"),
        }
    }
}
