//! supplier: answers quote requests from its catalog.
//!
//! One binary, many instances: `SUPPLIER_ID` names one. It consumes its own
//! queue `quotes.<id>` (manual acks, `SUPPLIER_PREFETCH` at once) and answers
//! each request to its `reply_to` with its `correlation_id`, from the Redis
//! hash `catalog:<id>` (sku → JSON entry; edit it with `redis-cli HSET`).
//!
//! A request past its deadline is never answered: the broker drops it once
//! its `expiration` passed, and the supplier checks the body's `deadline_ms`
//! before and after its work. `SUPPLIER_DELAY_MS` and
//! `SUPPLIER_FAILURE_RATE` make a slow or failing supplier for demos and
//! tests.
//!
//! Depends on `pipeline` and `quotes` only: no other service crate (it
//! answers over the broker).

pub mod catalog;
pub mod config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use pipeline::amqp::{Broker, ConsumeOptions, Disposition};
use pipeline::domain::SupplierId;
use pipeline::keys::Keys;
use pipeline::messages::now_ms;
use quotes::{QuoteReply, QuoteRequest, Unavailable};

use crate::catalog::{CatalogEntry, demo_catalog};
use pipeline::service::Base;
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis;
use redis::AsyncCommands;

pub use config::SupplierConfig;

/// A supplier that is connected and bound, ready to run.
pub struct Supplier {
    base: Base,
    state: Arc<State>,
    prefetch: u16,
}

struct State {
    id: SupplierId,
    broker: Broker,
    pool: Redis,
    keys: Keys,
    delay: Duration,
    failure_rate: f64,
}

impl Supplier {
    pub async fn build(
        config: SupplierConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let id = config.id.clone().context(
            "SUPPLIER_ID is required: it names this supplier, its queue and its catalog",
        )?;
        let mut broker = config
            .service
            .broker
            .clone()
            .named(&format!("supplier-{id}"));
        broker.suppliers = vec![id.clone()];
        let base = Base::start_with("supplier", &config.service, broker, shutdown).await?;
        describe_metrics();
        if config.demo_catalog && seed_demo_catalog(&base.pool, &base.keys, &id).await? {
            tracing::info!(supplier = %id, "demo catalog seeded");
        }
        let state = Arc::new(State {
            id,
            broker: base.broker.clone(),
            pool: base.pool.clone(),
            keys: base.keys.clone(),
            delay: config.delay,
            failure_rate: config.failure_rate,
        });
        Ok(Self {
            base,
            state,
            prefetch: config.prefetch,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.base.local_addr()
    }

    /// Answers requests until shutdown; requests in hand are answered (or
    /// let go) before the broker link closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let options = ConsumeOptions {
            queue: self.base.broker.topology().supplier_queue(&self.state.id),
            prefetch: self.prefetch,
            // Whatever has arrived is answered at once and acked together.
            batch: usize::from(self.prefetch),
            tag: format!("supplier-{}", self.state.id),
        };
        let state = self.state.clone();
        self.base
            .run_worker(
                options,
                pipeline::amqp::each(move |delivery| {
                    let state = state.clone();
                    async move {
                        state.handle(delivery).await;
                        // A quote request is never retried: a redelivered one
                        // would be stale, and the gateway has its deadline.
                        Disposition::Ack
                    }
                }),
            )
            .await
    }
}

/// The help texts (`# HELP`) of the metrics a supplier records.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "supplier_requests_total",
        "Quote requests handled, by outcome (quoted, not_carried, insufficient_stock, \
         failed, expired: not answered, malformed)."
    );
}

/// Writes the demo catalog of `supplier` if its hash does not exist; `true`
/// if it wrote it. An operator's catalog is never touched.
pub async fn seed_demo_catalog(
    pool: &Redis,
    keys: &Keys,
    supplier: &SupplierId,
) -> anyhow::Result<bool> {
    let script = redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
         redis.call('HSET', KEYS[1], unpack(ARGV))
         return 1",
    );
    let mut invocation = script.prepare_invoke();
    invocation.key(keys.catalog(supplier));
    for (sku, entry) in demo_catalog(supplier.as_str()) {
        invocation.arg(sku).arg(serde_json::to_string(&entry)?);
    }
    let mut conn = pool.connection();
    let written: i64 = invocation.invoke_async(&mut conn).await?;
    Ok(written == 1)
}

impl State {
    async fn handle(&self, delivery: Delivery) {
        let outcome = self.answer(&delivery).await;
        metrics::counter!("supplier_requests_total", "outcome" => outcome).increment(1);
    }

    /// Answers one request; the label of what happened.
    async fn answer(&self, delivery: &Delivery) -> &'static str {
        let (Some(reply_to), Some(correlation)) = (
            delivery.properties.reply_to().clone(),
            delivery.properties.correlation_id().clone(),
        ) else {
            tracing::warn!("a quote request without reply_to or correlation_id; dropped");
            return "malformed";
        };
        let request: QuoteRequest = match serde_json::from_slice(&delivery.data) {
            Ok(r) => r,
            Err(e) => {
                let reply = QuoteReply::Failed {
                    supplier: self.id.clone(),
                    error: format!("unreadable quote request: {e}"),
                };
                self.reply(reply_to.as_str(), correlation.as_str(), &reply)
                    .await;
                return "malformed";
            }
        };
        if now_ms() >= request.deadline_ms {
            return "expired";
        }
        if !self.delay.is_zero() {
            let left = Duration::from_millis(request.deadline_ms.saturating_sub(now_ms()));
            tokio::time::sleep(self.delay.min(left)).await;
        }
        let (reply, outcome) =
            if self.failure_rate > 0.0 && rand::random::<f64>() < self.failure_rate {
                (
                    QuoteReply::Failed {
                        supplier: self.id.clone(),
                        error: "injected failure (SUPPLIER_FAILURE_RATE)".into(),
                    },
                    "failed",
                )
            } else {
                self.quote(&request).await
            };
        // Never an answer past the deadline: nobody waits for it.
        if now_ms() >= request.deadline_ms {
            return "expired";
        }
        self.reply(reply_to.as_str(), correlation.as_str(), &reply)
            .await;
        outcome
    }

    async fn quote(&self, request: &QuoteRequest) -> (QuoteReply, &'static str) {
        let failed = |error: String| {
            (
                QuoteReply::Failed {
                    supplier: self.id.clone(),
                    error,
                },
                "failed",
            )
        };
        let raw: Option<String> = match self
            .pool
            .connection()
            .hget(self.keys.catalog(&self.id), request.sku.as_str())
            .await
        {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(error = %pipeline::telemetry::chain(&e), "catalog unavailable");
                return failed("catalog unavailable".into());
            }
        };
        let Some(raw) = raw else {
            return (
                QuoteReply::Unavailable {
                    supplier: self.id.clone(),
                    sku: request.sku.clone(),
                    qty: request.qty,
                    reason: Unavailable::NotCarried,
                    stock: 0,
                },
                "not_carried",
            );
        };
        let entry: CatalogEntry = match serde_json::from_str(&raw) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(sku = request.sku.as_str(), value = raw, error = %pipeline::telemetry::chain(&e), "invalid catalog entry");
                return failed(format!(
                    "catalog entry for {} is invalid ({e}); expected {{\"unit_price_minor\":1250,\"currency\":\"EUR\",\"stock\":40,\"delivery_days\":3}}",
                    request.sku.as_str()
                ));
            }
        };
        if entry.stock < u64::from(request.qty.get()) {
            return (
                QuoteReply::Unavailable {
                    supplier: self.id.clone(),
                    sku: request.sku.clone(),
                    qty: request.qty,
                    reason: Unavailable::InsufficientStock,
                    stock: entry.stock,
                },
                "insufficient_stock",
            );
        }
        (
            QuoteReply::Quoted {
                supplier: self.id.clone(),
                sku: request.sku.clone(),
                qty: request.qty,
                unit_price_minor: entry.unit_price_minor,
                currency: entry.currency,
                stock: entry.stock,
                delivery_days: entry.delivery_days,
            },
            "quoted",
        )
    }

    /// Sends `reply` to the requester's direct reply-to address. Best effort:
    /// a reply that cannot be sent is the gateway's timeout.
    async fn reply(&self, reply_to: &str, correlation_id: &str, reply: &QuoteReply) {
        let Some(link) = self.broker.current() else {
            tracing::warn!("no broker link; a quote reply is lost");
            return;
        };
        let body = match serde_json::to_vec(reply) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %pipeline::telemetry::chain(&e), "could not encode a quote reply");
                return;
            }
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(correlation_id.into());
        let sent = link
            .channel
            .basic_publish(
                "".into(),
                reply_to.into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %pipeline::telemetry::chain(&e), "could not send a quote reply");
            self.broker.report_failure();
        }
    }
}
