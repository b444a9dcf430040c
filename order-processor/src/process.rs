//! Handling one delivery from `orders.queue`.
//!
//! ```text
//! parse ── malformed ──────────────────────────────> dead-letter (orders.dlq)
//!   │
//! reserve.lua (decide once, from the record) ── no record ──> ask the history:
//!   │                                              decided there: ack (expired record)
//!   │                                              never seen: adopt the message, decide
//!   │                                        ── parked (invalid_stock: order.parked
//!   │                                             published; record_mismatch) ──> dead-letter
//!   │                                        ── Redis error ──┐
//!   │                                        ├─ retry with backoff for TRANSIENT_RETRY_MS,
//! publish event, await confirm ── failure ───┘  then requeue (DELIVERY_LIMIT parks it)
//!   │
//! ack
//! ```
//!
//! A redelivered order that was already decided re-publishes its recorded event
//! (same `message_id`, so downstream dedupes) and is acked: the decision is
//! never taken twice, and an event lost between the decision and the ack is
//! published again. The event is built from the order's record, never from the
//! message: a message that disagrees with the record is parked as an anomaly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use pipeline::amqp::{Broker, Disposition, header, isolated, previous_deliveries};
use pipeline::history::HistoryClient;
use pipeline::keys::Keys;
use pipeline::messages::{EventKind, OrderEvent, OrderParked, OrderPlaced};
use pipeline::store::Redis;
use pipeline::trace::TraceParent;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use pipeline::order::{ParkReason, ReserveCall, Verdict, reserve, reserve_many};

/// How [`Handler::process`] ended.
enum Processed {
    /// Decided (now or before) and its event confirmed.
    Decided { outcome: &'static str, fresh: bool },
    /// Parked for an operator: dead-letter it.
    Parked(ParkReason),
    /// Its record expired after the history recorded its decision: a very
    /// late redelivery or replay, acked without deciding again.
    Expired,
}

/// Called after the decision is committed and before its event is published;
/// tests use it to break the link at the worst moment.
pub type AfterCommit =
    Arc<dyn Fn(OrderPlaced) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Everything a delivery's handling needs; cheap to clone.
#[derive(Clone)]
pub struct Handler {
    pub broker: Broker,
    pub pool: Redis,
    pub keys: Keys,
    pub transient_retry: Duration,
    pub shutdown: CancellationToken,
    pub after_commit: Option<AfterCommit>,
    /// Asked only when an order has no Redis record (`None`: no history
    /// deployed, such an order is adopted at once).
    pub history: Option<HistoryClient>,
}

/// A delivery that parsed as an order.
struct Parsed {
    order: OrderPlaced,
    message_id: String,
    trace: TraceParent,
    started: std::time::Instant,
}

impl Handler {
    /// A batch of deliveries: every order in it is decided by one script run
    /// (one Redis round trip), then each publishes its event and waits for
    /// its confirm, all at once. A malformed message is dead-lettered alone;
    /// an order that needs more than the first decision (no record, a Redis
    /// error) goes on alone, with its own retries.
    #[tracing::instrument(name = "decide", skip_all, fields(batch = deliveries.len()))]
    pub async fn handle_batch(&self, deliveries: Vec<Delivery>) -> Vec<Disposition> {
        let parsed: Vec<Result<Parsed, Disposition>> = deliveries.iter().map(parse).collect();
        let calls: Vec<ReserveCall<'_>> = parsed
            .iter()
            .flatten()
            .map(|p| ReserveCall {
                id: &p.order.id,
                sku: &p.order.sku,
                qty: p.order.qty,
                quote: p.order.quote.as_ref(),
                message_id: &p.message_id,
            })
            .collect();
        let mut first = match reserve_many(&self.pool, &self.keys, &calls, false).await {
            Ok(verdicts) => verdicts.into_iter().map(Some).collect(),
            Err(e) => {
                // Each order retries its own decision.
                tracing::debug!(error = format!("{e:#}"), "batched decision failed");
                vec![None; calls.len()]
            }
        }
        .into_iter();
        drop(calls);
        let work = parsed.into_iter().map(|p| {
            let verdict = p.as_ref().ok().and_then(|_| first.next().flatten());
            async move {
                match p {
                    Ok(p) => isolated(self.finish(p, verdict), Disposition::Requeue).await,
                    Err(disposition) => disposition,
                }
            }
        });
        futures_util::future::join_all(work).await
    }

    async fn finish(&self, p: Parsed, verdict: Option<Verdict>) -> Disposition {
        let Parsed {
            order,
            message_id,
            trace,
            started,
        } = p;
        let span = tracing::info_span!("order", id = %order.id, trace_id = %trace.trace_id());
        match self
            .process(&order, &message_id, &trace, verdict)
            .instrument(span)
            .await
        {
            Ok(Processed::Decided { outcome, fresh }) => {
                let outcome = if fresh { outcome } else { "replayed" };
                metrics::counter!("orders_processed_total", "outcome" => outcome).increment(1);
                metrics::histogram!("order_processing_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                Disposition::Ack
            }
            Ok(Processed::Expired) => {
                metrics::counter!("orders_processed_total", "outcome" => "expired").increment(1);
                tracing::info!(id = %order.id, %message_id, "order already decided and kept in the history; its record has expired, nothing to do");
                Disposition::Ack
            }
            Ok(Processed::Parked(reason)) => {
                metrics::counter!("orders_parked_total", "reason" => reason.as_str()).increment(1);
                tracing::warn!(
                    id = %order.id,
                    %message_id,
                    reason = reason.as_str(),
                    "order parked in the DLQ; fix the cause, then replay-dlq"
                );
                Disposition::DeadLetter
            }
            Err(e) => {
                tracing::warn!(
                    id = %order.id,
                    error = format!("{e:#}"),
                    "order not processed, putting it back on the queue"
                );
                Disposition::Requeue
            }
        }
    }

    /// Decides (once) and publishes the decision's event with a confirm. Each
    /// step retries its own transient failures for `transient_retry`, so a
    /// publish that needs another try does not run the Redis script again.
    async fn process(
        &self,
        order: &OrderPlaced,
        message_id: &str,
        trace: &TraceParent,
        decided: Option<Verdict>,
    ) -> anyhow::Result<Processed> {
        let mut verdict = match decided {
            Some(verdict) => verdict,
            None => self.reserve(order, message_id, false).await?,
        };
        if verdict == Verdict::Unrecorded {
            if self.decided_in_history(order).await? {
                return Ok(Processed::Expired);
            }
            verdict = self.reserve(order, message_id, true).await?;
        }
        let (outcome, reason, decided_at_ms, fresh, sku, qty) = match verdict {
            Verdict::Parked {
                reason,
                at_ms,
                sku,
                qty,
            } => {
                if reason == ParkReason::InvalidStock {
                    let event = OrderParked {
                        id: order.id.clone(),
                        sku,
                        qty,
                        reason: reason.as_str().to_owned(),
                        parked_at_ms: at_ms,
                    };
                    self.publish(
                        EventKind::Parked,
                        &order.id,
                        &serde_json::to_vec(&event)?,
                        trace,
                    )
                    .await?;
                }
                return Ok(Processed::Parked(reason));
            }
            Verdict::Unrecorded => anyhow::bail!("reserve.lua did not adopt an unrecorded order"),
            Verdict::Decided {
                outcome,
                reason,
                decided_at_ms,
                fresh,
                sku,
                qty,
            } => (outcome, reason, decided_at_ms, fresh, sku, qty),
        };
        if let Some(hook) = &self.after_commit {
            hook(order.clone()).await;
        }
        let event = OrderEvent {
            id: order.id.clone(),
            sku,
            qty,
            outcome,
            reason,
            decided_at_ms,
        };
        self.publish(
            outcome.kind(),
            &order.id,
            &serde_json::to_vec(&event)?,
            trace,
        )
        .await?;
        tracing::debug!(
            outcome = outcome.as_str(),
            reason = reason.map(|r| r.as_str()),
            fresh,
            "order processed"
        );
        Ok(Processed::Decided {
            outcome: outcome.as_str(),
            fresh,
        })
    }

    async fn reserve(
        &self,
        order: &OrderPlaced,
        message_id: &str,
        adopt: bool,
    ) -> anyhow::Result<Verdict> {
        pipeline::retry::transient(self.transient_retry, &self.shutdown, || {
            reserve(
                &self.pool,
                &self.keys,
                &order.id,
                &order.sku,
                order.qty,
                order.quote.as_ref(),
                message_id,
                adopt,
            )
        })
        .await
    }

    /// Whether the history has this order decided (reserved, rejected or
    /// notified). Asked only for an order without a Redis record; a history
    /// that does not answer is a transient failure (the message waits).
    async fn decided_in_history(&self, order: &OrderPlaced) -> anyhow::Result<bool> {
        let Some(history) = &self.history else {
            return Ok(false);
        };
        let decided = pipeline::order::OrderStatus::Reserved;
        history
            .reached(&order.id, decided, self.transient_retry, &self.shutdown)
            .await
    }

    /// Publishes one event with a confirm, retrying transient failures.
    async fn publish(
        &self,
        kind: EventKind,
        id: &pipeline::domain::OrderId,
        payload: &[u8],
        trace: &TraceParent,
    ) -> anyhow::Result<()> {
        pipeline::retry::transient(self.transient_retry, &self.shutdown, || async {
            Ok(self
                .broker
                .publish_event(
                    kind,
                    id,
                    payload,
                    trace,
                    Instant::now() + Duration::from_secs(30),
                )
                .await?)
        })
        .await
    }
}

/// The help texts (`# HELP`) of the metrics the processor records.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};

    describe_counter!(
        "orders_processed_total",
        "Orders acked, by outcome (reserved, rejected; replayed: decided before, event \
         republished; expired: record gone, decision found in the history)."
    );
    describe_histogram!(
        "order_processing_duration_seconds",
        Unit::Seconds,
        "Time from reading an order to its decision's event confirmed (expired and \
         parked orders not included)."
    );
    describe_counter!(
        "orders_parked_total",
        "Orders dead-lettered for an operator, by reason (invalid_stock, record_mismatch)."
    );
    describe_counter!(
        "orders_dead_lettered_total",
        "Malformed order messages dead-lettered without a decision."
    );
    describe_counter!(
        "orders_redelivered_total",
        "Order deliveries the broker had delivered before (redeliveries)."
    );
}

/// Reads a delivery as an order; a malformed one is dead-lettered.
fn parse(delivery: &Delivery) -> Result<Parsed, Disposition> {
    let started = std::time::Instant::now();
    let order: OrderPlaced = match serde_json::from_slice(&delivery.data) {
        Ok(order) => order,
        Err(e) => {
            let message_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string());
            tracing::warn!(?message_id, reason = %e, "malformed order message, dead-lettering it");
            metrics::counter!("orders_dead_lettered_total").increment(1);
            return Err(Disposition::DeadLetter);
        }
    };
    if previous_deliveries(delivery) > 0 {
        metrics::counter!("orders_redelivered_total").increment(1);
    }
    let trace = header(delivery, "traceparent")
        .and_then(|h| TraceParent::parse(&h))
        .unwrap_or_else(TraceParent::generate)
        .child();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| order.id.to_string());
    Ok(Parsed {
        order,
        message_id,
        trace,
        started,
    })
}
