//! Handling one `order.created` delivery: notify the customer effectively once.
//!
//! ```text
//! parse ── malformed / not a reservation ──────────────> dead-letter (notifier.dlq)
//! claim_notification.lua ── already sent ──> publish order.notified again, ack (skipped duplicate)
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
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use pipeline::amqp::{Broker, Disposition, header, isolated};
use pipeline::history::HistoryClient;
use pipeline::keys::Keys;
use pipeline::messages::{EventKind, OrderEvent, OrderNotified, Outcome};
use pipeline::order::{ClaimCall, NotificationClaim as Claim, claim_notifications};
use pipeline::store::Redis;
use pipeline::trace::TraceParent;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::sink::{Notification, SendError, Sent, Sink};

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

/// A delivery that parsed as an `order.created` event.
struct Parsed {
    event: OrderEvent,
    notification: Notification,
    trace: TraceParent,
}

/// Where one notification stands after its claim and send.
enum Step {
    /// Settled without a send to record (skipped, put back, dead-lettered).
    Done(Disposition),
    /// Sent (or failed to send): the attempt is to be recorded.
    Record(Box<Sending>),
}

struct Sending {
    parsed: Parsed,
    token: String,
    sent: Sent,
}

impl Sending {
    fn attempt(&self, sink: &'static str) -> pipeline::order::Attempt<'_> {
        pipeline::order::Attempt {
            sent: self.sent.result.is_ok(),
            token: &self.token,
            attempts: self.sent.attempts,
            sink,
            error: match &self.sent.result {
                Ok(()) => "",
                Err(SendError::Transient(e) | SendError::Permanent(e)) => e,
            },
        }
    }
}

impl Handler {
    /// A batch of deliveries: one script run claims every notification in
    /// it; those it claimed are sent, recorded by one more script run, and
    /// publish their `order.notified`, waiting for the confirms all at once.
    /// A malformed event is dead-lettered alone. A notification that needs
    /// more than the first claim (another instance holds it, no record, a
    /// Redis error) goes its own way meanwhile, with its own retries and its
    /// own record: it never holds up the batch's record, and the batch never
    /// holds up its wait (two instances waiting on each other's batches
    /// would otherwise wait until their claims expired).
    #[tracing::instrument(name = "notify", skip_all, fields(batch = deliveries.len()))]
    pub async fn handle_batch(&self, deliveries: Vec<Delivery>) -> Vec<Disposition> {
        let parsed: Vec<Result<Parsed, Disposition>> = deliveries.iter().map(parse).collect();
        let tokens: Vec<String> = parsed
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let first = self.claim_many(&parsed, &tokens).await;
        let mut out = vec![Disposition::Requeue; parsed.len()];
        let (mut claimed, mut alone) = (Vec::new(), Vec::new());
        for (i, ((p, token), claim)) in parsed.into_iter().zip(tokens).zip(first).enumerate() {
            match (p, claim) {
                (Err(disposition), _) => out[i] = disposition,
                (Ok(p), Some(Claim::Claimed)) => claimed.push((i, p, token)),
                (Ok(p), claim) => alone.push((i, p, token, claim)),
            }
        }
        let alone = futures_util::future::join_all(alone.into_iter().map(
            |(i, p, token, claim)| async move {
                let span = span(&p);
                let work = async {
                    match self.claim_and_send(p, token, claim).await {
                        Step::Done(disposition) => disposition,
                        Step::Record(sending) => self.finish(*sending, None).await,
                    }
                };
                let disposition = isolated(work.instrument(span), Disposition::Requeue).await;
                (i, disposition)
            },
        ));
        let batch = async {
            let steps = futures_util::future::join_all(claimed.into_iter().map(
                |(i, p, token)| async move {
                    let span = span(&p);
                    let work = self.claim_and_send(p, token, Some(Claim::Claimed));
                    let step =
                        isolated(work.instrument(span), Step::Done(Disposition::Requeue)).await;
                    (i, step)
                },
            ))
            .await;
            let mut recorded = self
                .record_many(steps.iter().map(|(_, s)| s))
                .await
                .map(Vec::into_iter);
            let finished = steps.into_iter().map(|(i, step)| {
                let recorded = match step {
                    Step::Record(_) => recorded.as_mut().and_then(Iterator::next),
                    Step::Done(_) => None,
                };
                async move {
                    let disposition = match step {
                        Step::Done(disposition) => disposition,
                        Step::Record(sending) => {
                            let span = span(&sending.parsed);
                            let work = self.finish(*sending, recorded).instrument(span);
                            isolated(work, Disposition::Requeue).await
                        }
                    };
                    (i, disposition)
                }
            });
            futures_util::future::join_all(finished).await
        };
        let (alone, batch) = tokio::join!(alone, batch);
        for (i, disposition) in alone.into_iter().chain(batch) {
            out[i] = disposition;
        }
        out
    }

    /// The first claim of every parsed notification, in one script run
    /// (`None` each where the run failed: that notification claims alone).
    async fn claim_many(
        &self,
        parsed: &[Result<Parsed, Disposition>],
        tokens: &[String],
    ) -> Vec<Option<Claim>> {
        let calls: Vec<(&Parsed, &str)> = parsed
            .iter()
            .zip(tokens)
            .filter_map(|(p, t)| Some((p.as_ref().ok()?, t.as_str())))
            .collect();
        let claims = match self.claim_batch(&calls, false).await {
            Ok(claims) => claims.into_iter().map(Some).collect(),
            Err(e) => {
                tracing::debug!(error = format!("{e:#}"), "batched claim failed");
                Vec::new()
            }
        };
        let mut claims: std::vec::IntoIter<Option<Claim>> = claims.into_iter();
        parsed
            .iter()
            .map(|p| p.as_ref().ok().and_then(|_| claims.next().flatten()))
            .collect()
    }

    /// Every attempt to record, in one script run: each one's send time, in
    /// order (`None` when the run failed: each attempt is recorded alone).
    async fn record_many<'a>(
        &self,
        steps: impl Iterator<Item = &'a Step>,
    ) -> Option<Vec<Option<u64>>> {
        let sink = self.sink.name();
        let attempts: Vec<(&pipeline::domain::OrderId, pipeline::order::Attempt<'_>)> = steps
            .filter_map(|s| match s {
                Step::Record(sending) => Some((&sending.parsed.event.id, sending.attempt(sink))),
                Step::Done(_) => None,
            })
            .collect();
        match pipeline::order::record_notifications(&self.pool, &self.keys, &attempts).await {
            Ok(recorded) => Some(recorded),
            Err(e) => {
                tracing::debug!(error = format!("{e:#}"), "batched record failed");
                None
            }
        }
    }

    /// Claims (starting from `first`, the batch's claim, if it has one) and
    /// sends.
    async fn claim_and_send(&self, p: Parsed, token: String, first: Option<Claim>) -> Step {
        let Parsed {
            event,
            notification: n,
            trace,
        } = &p;
        let mut adopt = false;
        let mut first = first;
        // Claim, waiting out another instance's live claim.
        loop {
            let claimed = match first.take() {
                Some(claim) => Ok(claim),
                None => {
                    pipeline::retry::transient(self.transient_retry, &self.shutdown, || {
                        self.claim_once(event, n, &token, adopt)
                    })
                    .await
                }
            };
            match claimed {
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot claim the notification, putting it back"
                    );
                    return Step::Done(Disposition::Requeue);
                }
                Ok(Claim::Sent { at_ms, channel }) => {
                    // Its event may have been lost between the record and the ack.
                    if let Err(e) = self.publish_notified(event, at_ms, &channel, trace).await {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "order.notified not confirmed, putting the delivery back"
                        );
                        return Step::Done(Disposition::Requeue);
                    }
                    metrics::counter!("notifications_skipped_total").increment(1);
                    tracing::debug!("already sent, skipping the duplicate");
                    return Step::Done(Disposition::Ack);
                }
                Ok(Claim::Unrecorded) => match self.notified_in_history(event).await {
                    Ok(true) => {
                        metrics::counter!("notifications_skipped_total").increment(1);
                        tracing::info!(
                            "already notified and kept in the history; its records have expired, nothing to do"
                        );
                        return Step::Done(Disposition::Ack);
                    }
                    Ok(false) => adopt = true,
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "the history does not answer, putting the delivery back"
                        );
                        return Step::Done(Disposition::Requeue);
                    }
                },
                Ok(Claim::Claimed) => break,
                Ok(Claim::Busy(left)) => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Step::Done(Disposition::Requeue),
                        () = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
                    }
                }
            }
        }

        let started = std::time::Instant::now();
        let sent = self.sink.send(n).await;
        metrics::histogram!("notification_send_duration_seconds", "sink" => self.sink.name())
            .record(started.elapsed().as_secs_f64());
        if let Some(hook) = &self.after_send
            && hook(n.clone()).await
        {
            return Step::Done(Disposition::Requeue);
        }
        Step::Record(Box::new(Sending {
            parsed: p,
            token,
            sent,
        }))
    }

    /// Records the attempt (unless the batch did: `recorded` is then its
    /// send time) and settles: publishes `order.notified` after a recorded
    /// send.
    async fn finish(&self, sending: Sending, recorded: Option<Option<u64>>) -> Disposition {
        let sink = self.sink.name();
        let event = &sending.parsed.event;
        let recorded = match recorded {
            Some(sent_at) => Ok(sent_at),
            None => {
                let attempt = sending.attempt(sink);
                pipeline::retry::transient(self.transient_retry, &self.shutdown, || {
                    pipeline::order::record_notification(
                        &self.pool, &self.keys, &event.id, &attempt,
                    )
                })
                .await
            }
        };
        let sent = &sending.sent;
        match (&sent.result, recorded) {
            (Ok(()), Ok(sent_at)) => {
                metrics::counter!("notifications_sent_total", "sink" => sink).increment(1);
                tracing::debug!(sink, attempts = sent.attempts, "notification sent");
                let at_ms = sent_at.unwrap_or_else(pipeline::messages::now_ms);
                match self
                    .publish_notified(event, at_ms, sink, &sending.parsed.trace)
                    .await
                {
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
        let parsed = (event, n);
        self.claim_calls(&[(parsed, token)], adopt)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("claim_notification.lua returned nothing"))
    }

    async fn claim_batch(
        &self,
        calls: &[(&Parsed, &str)],
        adopt: bool,
    ) -> anyhow::Result<Vec<Claim>> {
        let calls: Vec<((&OrderEvent, &Notification), &str)> = calls
            .iter()
            .map(|(p, token)| ((&p.event, &p.notification), *token))
            .collect();
        self.claim_calls(&calls, adopt).await
    }

    /// A claim for each (event, notification, token), in one script run.
    async fn claim_calls(
        &self,
        calls: &[((&OrderEvent, &Notification), &str)],
        adopt: bool,
    ) -> anyhow::Result<Vec<Claim>> {
        let calls: Vec<ClaimCall<'_>> = calls
            .iter()
            .map(|((event, n), token)| ClaimCall {
                id: &event.id,
                token,
                event_id: &n.event_id,
                sink: self.sink.name(),
            })
            .collect();
        claim_notifications(&self.pool, &self.keys, &calls, self.claim, adopt).await
    }
}

/// The help texts (`# HELP`) of the metrics the notifier records.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};

    describe_counter!(
        "notifications_sent_total",
        "Notifications sent and recorded, by sink (log, webhook)."
    );
    describe_histogram!(
        "notification_send_duration_seconds",
        Unit::Seconds,
        "Time to send one notification through the sink, its retries included, by sink \
         (log, webhook)."
    );
    describe_counter!(
        "notification_failures_total",
        "Notifications the sink could not deliver, by kind (transient: put back on the \
         queue; permanent: dead-lettered)."
    );
    describe_counter!(
        "notifications_skipped_total",
        "Notifications not sent again: already sent, as recorded in Redis or the history."
    );
    describe_counter!(
        "notifications_dead_lettered_total",
        "Messages dead-lettered unsent: malformed, or not an order.created event."
    );
}

fn span(p: &Parsed) -> tracing::Span {
    tracing::info_span!("notification", id = %p.event.id, trace_id = %p.trace.trace_id())
}

/// Reads a delivery as an `order.created` event; anything else is
/// dead-lettered.
fn parse(delivery: &Delivery) -> Result<Parsed, Disposition> {
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
            return Err(Disposition::DeadLetter);
        }
    };
    if event.outcome != Outcome::Reserved {
        tracing::warn!(?message_id, "not an order.created event, dead-lettering it");
        metrics::counter!("notifications_dead_lettered_total").increment(1);
        return Err(Disposition::DeadLetter);
    }
    let trace = header(delivery, "traceparent")
        .and_then(|h| TraceParent::parse(&h))
        .unwrap_or_else(TraceParent::generate);
    let notification = Notification {
        event_id: message_id.unwrap_or_else(|| Outcome::Reserved.event_id(&event.id)),
        client: event.id.client().to_owned(),
        order_id: event.id.local().to_owned(),
        sku: event.sku.to_string(),
        qty: event.qty.get(),
        status: "reserved",
        reserved_at_ms: event.decided_at_ms,
    };
    Ok(Parsed {
        event,
        notification,
        trace,
    })
}
