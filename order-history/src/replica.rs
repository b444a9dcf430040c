//! One replica's life: standby until it holds the advisory lock, then the
//! active consumer of `orders.events`, until its PostgreSQL session or the
//! process ends.
//!
//! ```text
//! standby ── pg_try_advisory_lock every HISTORY_LOCK_POLL_MS ──> active
//! active: read checkpoint ── consume orders.events from checkpoint + 1 (or first)
//!   └─ batch (≤ HISTORY_BATCH, or what arrived within 20 ms)
//!        └─ one transaction: events, orders, checkpoint ── commit ── ack (multiple)
//!             └─ retire the finished orders' Redis records (ORDER_RETENTION_SECS)
//! PostgreSQL session lost ──> standby (the lock went with the session)
//! broker link lost ─────────> re-read the checkpoint, subscribe again
//! ```
//!
//! The batch is applied on the very session that holds the lock: a replica
//! that lost its lock (its session ended) cannot commit anything, so two
//! replicas never write at once, and nothing is applied twice: an event
//! redelivered after a crash between commit and ack is at or below the
//! checkpoint, or its event id is already stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use pipeline::amqp::{Broker, header};
use pipeline::keys::Keys;
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis as RedisPool;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::apply::{self, Incoming};
use crate::db::Database;

/// What this replica is doing, shared with `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct State {
    active: AtomicBool,
    /// The last offset applied (this replica's, or read from the database
    /// while standby); -1 = nothing yet.
    checkpoint: AtomicI64,
    /// The newest offset seen on the stream; -1 = unknown or empty.
    tail: AtomicI64,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub became_active: AtomicU64,
    /// When this replica last became active (ms since the epoch, 0 = never).
    pub active_since_ms: AtomicU64,
}

impl State {
    pub fn new() -> Arc<Self> {
        let state = Self::default();
        state.checkpoint.store(-1, Ordering::Relaxed);
        state.tail.store(-1, Ordering::Relaxed);
        Arc::new(state)
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn checkpoint(&self) -> Option<i64> {
        Some(self.checkpoint.load(Ordering::Relaxed)).filter(|c| *c >= 0)
    }

    pub fn set_checkpoint(&self, offset: Option<i64>) {
        self.checkpoint
            .store(offset.unwrap_or(-1), Ordering::Relaxed);
    }

    pub fn tail(&self) -> Option<i64> {
        Some(self.tail.load(Ordering::Relaxed)).filter(|t| *t >= 0)
    }

    fn saw(&self, offset: i64) {
        self.tail.fetch_max(offset, Ordering::Relaxed);
    }

    /// Events on the stream not applied yet (0 when both are unknown).
    pub fn lag(&self) -> u64 {
        let tail = self.tail().unwrap_or(-1);
        let done = self.checkpoint().unwrap_or(-1);
        u64::try_from(tail - done).unwrap_or(0)
    }
}

/// What a replica needs; cheap to clone.
#[derive(Clone)]
pub struct Replica {
    pub name: String,
    pub db: Database,
    pub broker: Broker,
    pub redis: RedisPool,
    pub keys: Keys,
    pub batch: usize,
    pub lock_poll: Duration,
    pub retention: Duration,
    pub state: Arc<State>,
    pub shutdown: CancellationToken,
}

/// Why an active spell ended.
enum Ended {
    Shutdown,
    /// `until` reached (a rebuild).
    CaughtUp,
}

impl Replica {
    fn stream(&self) -> String {
        self.broker.topology().events_stream()
    }

    /// Standby, active, standby again ... until shutdown.
    pub async fn run(self) {
        loop {
            let Some(client) = self.acquire().await else {
                return;
            };
            self.state.active.store(true, Ordering::Relaxed);
            self.state.became_active.fetch_add(1, Ordering::Relaxed);
            self.state
                .active_since_ms
                .store(pipeline::messages::now_ms(), Ordering::Relaxed);
            metrics::gauge!("history_active").set(1.0);
            metrics::counter!("history_became_active_total").increment(1);
            tracing::info!(replica = %self.name, "active: this replica applies orders.events");
            let ended = self.active(client, None).await;
            self.state.active.store(false, Ordering::Relaxed);
            metrics::gauge!("history_active").set(0.0);
            match ended {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(replica = %self.name, error = format!("{e:#}"), "no longer active; standing by");
                    if self.pause(self.lock_poll).await {
                        return;
                    }
                }
            }
        }
    }

    /// A session holding the lock, or `None` at shutdown.
    pub async fn acquire(&self) -> Option<Client> {
        let mut announced = false;
        loop {
            match self.db.connect().await {
                Ok(client) => loop {
                    match self.db.try_lock_active(&client).await {
                        Ok(true) => return Some(client),
                        Ok(false) => {
                            if !announced {
                                tracing::info!(replica = %self.name, "standby: another replica is active");
                                announced = true;
                            }
                            if let Ok(c) = apply::checkpoint(&client, &self.stream()).await {
                                self.state.set_checkpoint(c);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "PostgreSQL session lost while standing by"
                            );
                            break;
                        }
                    }
                    if self.pause(self.lock_poll).await {
                        return None;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "PostgreSQL does not answer");
                }
            }
            if self.pause(self.lock_poll).await {
                return None;
            }
        }
    }

    /// `true` if shutdown came first.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => true,
            () = tokio::time::sleep(d) => false,
        }
    }

    /// Applies the stream from the checkpoint on until shutdown (or, with
    /// `until`, until that offset is applied). `Err` when the session is lost.
    pub async fn active(&self, mut client: Client, until: Option<i64>) -> anyhow::Result<bool> {
        let stream = self.stream();
        loop {
            let checkpoint = apply::checkpoint(&client, &stream).await?;
            self.state.set_checkpoint(checkpoint);
            if let (Some(until), Some(done)) = (until, checkpoint)
                && done >= until
            {
                return Ok(true);
            }
            match self
                .subscribe_and_apply(&mut client, checkpoint, until)
                .await
            {
                Ok(Ended::Shutdown) => return Ok(false),
                Ok(Ended::CaughtUp) => return Ok(true),
                // A database error (the session gone, a statement timeout):
                // give up the lock with the session, so this replica or
                // another starts over from the committed checkpoint.
                Err(e)
                    if client.is_closed()
                        || e.downcast_ref::<tokio_postgres::Error>().is_some() =>
                {
                    return Err(e);
                }
                Err(e) => {
                    // The broker link or channel went away: start over from
                    // the checkpoint on whatever link comes next.
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "stream consumer ended, re-subscribing"
                    );
                    self.broker.report_failure();
                    if self.pause(Duration::from_millis(250)).await {
                        return Ok(false);
                    }
                }
            }
        }
    }

    async fn subscribe_and_apply(
        &self,
        client: &mut Client,
        checkpoint: Option<i64>,
        until: Option<i64>,
    ) -> anyhow::Result<Ended> {
        let stream = self.stream();
        let link = tokio::select! {
            () = self.shutdown.cancelled() => return Ok(Ended::Shutdown),
            link = self.broker.link_until(Instant::now() + Duration::from_secs(3600)) => link?,
        };
        let start = match checkpoint {
            Some(c) => AMQPValue::LongLongInt(c + 1),
            None => AMQPValue::LongString("first".into()),
        };
        let prefetch = u16::try_from(self.batch * 2).unwrap_or(u16::MAX);
        let subscribe = async {
            let channel = link.connection.create_channel().await?;
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let mut args = FieldTable::default();
            args.insert("x-stream-offset".into(), start);
            let consumer = channel
                .basic_consume(
                    stream.clone().into(),
                    format!("order-history-{}", self.name).into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        let (channel, mut consumer) = tokio::time::timeout(self.broker.setup_timeout(), subscribe)
            .await
            .map_err(|_| anyhow::anyhow!("no answer to basic.consume on {stream}"))??;
        tracing::info!(%stream, node = %link.node, from = ?checkpoint.map(|c| c + 1), "consuming the event stream");
        let result = async {
            loop {
                let mut batch: Vec<Incoming> = Vec::with_capacity(self.batch);
                let mut last_tag;
                // The first delivery: wait for it (watching the session).
                let first = tokio::select! {
                    () = self.shutdown.cancelled() => return Ok(Ended::Shutdown),
                    d = consumer.next() => d,
                    () = wait_closed(client) => anyhow::bail!("PostgreSQL session lost"),
                };
                let mut next = first;
                loop {
                    let delivery = match next {
                        Some(Ok(d)) => d,
                        Some(Err(e)) => return Err(e.into()),
                        None => anyhow::bail!("the stream consumer was cancelled"),
                    };
                    last_tag = delivery.delivery_tag;
                    let offset = stream_offset(&delivery)
                        .ok_or_else(|| anyhow::anyhow!("a delivery without x-stream-offset"))?;
                    self.state.saw(offset);
                    // A stream may start a little before the offset asked for.
                    if checkpoint.is_none_or(|c| offset > c) {
                        batch.push(Incoming {
                            offset,
                            routing_key: delivery.routing_key.to_string(),
                            message_id: delivery
                                .properties
                                .message_id()
                                .as_ref()
                                .map(|m| m.to_string()),
                            traceparent: header(&delivery, "traceparent"),
                            body: delivery.data,
                        });
                    }
                    if batch.len() >= self.batch || until.is_some_and(|u| offset >= u) {
                        break;
                    }
                    next = match tokio::time::timeout(Duration::from_millis(20), consumer.next())
                        .await
                    {
                        Ok(d) => d,
                        Err(_) => break,
                    };
                }
                let applied = apply::apply(client, &stream, &batch).await?;
                if let Some(last) = batch.last() {
                    self.state.set_checkpoint(Some(last.offset));
                    metrics::gauge!("history_checkpoint").set(last.offset as f64);
                }
                self.state
                    .applied
                    .fetch_add(applied.inserted as u64, Ordering::Relaxed);
                self.state
                    .duplicates
                    .fetch_add(applied.duplicates as u64, Ordering::Relaxed);
                metrics::counter!("history_events_applied_total")
                    .increment(applied.inserted as u64);
                metrics::counter!("history_events_duplicate_total")
                    .increment(applied.duplicates as u64);
                metrics::counter!("history_events_unreadable_total")
                    .increment(applied.unreadable as u64);
                metrics::counter!("history_batches_total").increment(1);
                // Before the ack: a batch redelivered after a crash here is
                // retired again (harmless), never skipped.
                self.retire(&applied.finished).await;
                channel
                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await?;
                if let (Some(u), Some(done)) = (until, self.state.checkpoint())
                    && done >= u
                {
                    return Ok(Ended::CaughtUp);
                }
            }
        }
        .await;
        let _ =
            tokio::time::timeout(Duration::from_secs(2), channel.close(200, "done".into())).await;
        result
    }

    /// Lets the Redis records of orders the history now holds as finished
    /// expire. A failure costs memory, never correctness: logged and counted.
    async fn retire(&self, finished: &[pipeline::domain::OrderId]) {
        if finished.is_empty() {
            return;
        }
        match pipeline::order::retire(&self.redis, &self.keys, finished, self.retention).await {
            Ok(n) => metrics::counter!("history_orders_retired_total").increment(n as u64),
            Err(e) => {
                metrics::counter!("history_retire_failures_total").increment(1);
                tracing::warn!(
                    error = format!("{e:#}"),
                    orders = finished.len(),
                    "could not set the retention of finished orders in Redis; their records stay"
                );
            }
        }
    }

    /// The newest offset on the stream (read from its last chunk), `None`
    /// when it is empty; an error when the broker does not answer.
    pub async fn probe_tail(&self) -> anyhow::Result<Option<i64>> {
        let link = self
            .broker
            .current()
            .ok_or_else(|| anyhow::anyhow!("no broker link"))?;
        let stream = self.stream();
        let probe = async {
            let channel = link.connection.create_channel().await?;
            channel.basic_qos(1000, BasicQosOptions::default()).await?;
            let mut args = FieldTable::default();
            args.insert(
                "x-stream-offset".into(),
                AMQPValue::LongString("last".into()),
            );
            let mut consumer = channel
                .basic_consume(
                    stream.clone().into(),
                    format!("order-history-tail-{}", self.name).into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await?;
            let mut newest = None;
            while let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
            {
                newest = stream_offset(&d).max(newest);
            }
            let _ = channel.close(200, "done".into()).await;
            Ok::<_, lapin::Error>(newest)
        };
        let newest = tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .map_err(|_| anyhow::anyhow!("reading the tail of {stream} timed out"))??;
        if let Some(n) = newest {
            self.state.saw(n);
        }
        Ok(newest)
    }

    /// Keeps the tail (and so the lag) fresh every `every`, until shutdown.
    pub async fn watch_tail(self, every: Duration) {
        loop {
            let _ = self.probe_tail().await;
            metrics::gauge!("history_lag_events").set(self.state.lag() as f64);
            if self.pause(every).await {
                return;
            }
        }
    }
}

/// The help texts (`# HELP`) of the metrics a replica records.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};

    describe_gauge!(
        "history_active",
        "1 while this replica holds the lock and applies the event stream, 0 after it \
         stopped."
    );
    describe_counter!(
        "history_became_active_total",
        "Times this replica took the lock and became the one that applies the stream."
    );
    describe_gauge!(
        "history_checkpoint",
        "Stream offset of the last event this replica applied."
    );
    describe_gauge!(
        "history_lag_events",
        "Events on the stream the history has not applied yet, as this replica sees it."
    );
    describe_counter!(
        "history_batches_total",
        "Batches of stream events applied, each in one transaction."
    );
    describe_counter!(
        "history_events_applied_total",
        "Events from the stream stored for the first time."
    );
    describe_counter!(
        "history_events_duplicate_total",
        "Events from the stream already stored (redeliveries, republished copies)."
    );
    describe_counter!(
        "history_events_unreadable_total",
        "Messages on the stream that are not a readable order event, stored as unreadable."
    );
    describe_counter!(
        "history_orders_retired_total",
        "Finished orders whose Redis records were set to expire after the retention."
    );
    describe_counter!(
        "history_retire_failures_total",
        "Batches whose finished orders could not be set to expire in Redis."
    );
}

async fn wait_closed(client: &Client) {
    while !client.is_closed() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `x-stream-offset` header of a stream delivery.
fn stream_offset(delivery: &lapin::message::Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}
