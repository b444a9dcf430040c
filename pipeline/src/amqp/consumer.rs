//! The one worker every consumer plugs into: a work queue consumed across
//! broker failovers, deliveries handled in batches, acks batched.
//!
//! [`consume`] opens a channel on the broker's current link, sets the prefetch
//! (QoS) limit and hands deliveries to the handler in batches: whatever has
//! arrived when the handler can take more, up to `batch` at a time (so a
//! batch is one delivery when traffic is light and grows with the load; no
//! delivery waits for a batch to fill). Several batches may be in the works at
//! once, up to `prefetch` deliveries. The handler returns one [`Disposition`]
//! per delivery; a requeue or dead-letter is sent at once for that delivery
//! alone (a poison message still parks alone), and acks are sent as one
//! `basic.ack` with `multiple = true` once every older delivery is settled
//! (see [`settle`](super::settle)). When the consumer ends (the server
//! cancelled it, the channel or connection died) it waits for the broker's
//! next link and consumes again: deliveries that were not acked on the old
//! channel are redelivered by the broker, never acked on the new one.
//!
//! On shutdown it cancels the consumer, lets in-flight batches finish and
//! settle, and closes the channel.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::settle::{Settle, Settler};
use super::{Broker, Link};

/// What to do with a delivery once the handler is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done; remove it from the queue.
    Ack,
    /// A transient failure: put it back for another try. The queue's
    /// `x-delivery-limit` parks it in the DLQ after too many tries.
    Requeue,
    /// It can never succeed (malformed, schema-invalid): dead-letter it now.
    DeadLetter,
}

impl Disposition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Requeue => "requeue",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub queue: String,
    /// Deliveries in flight at once (AMQP prefetch).
    pub prefetch: u16,
    /// The most deliveries handed to the handler at once (`WORKER_BATCH`).
    pub batch: usize,
    /// Shown in the broker's consumer list.
    pub tag: String,
}

/// `work`, with a panic in it turned into `on_panic`: one delivery's bug
/// must not take the rest of its batch down with it.
pub async fn isolated<T>(work: impl Future<Output = T>, on_panic: T) -> T {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(value) => value,
        Err(_) => {
            tracing::error!("handling a delivery panicked; putting it back");
            on_panic
        }
    }
}

/// Runs `handle` on every delivery of a batch concurrently: a batch handler
/// for work that has no cheaper way to do many at once.
pub fn each<F, Fut>(handle: F) -> impl Fn(Vec<Delivery>) -> BoxFuture<'static, Vec<Disposition>>
where
    F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Disposition> + Send + 'static,
{
    move |batch| {
        let handle = handle.clone();
        futures_util::future::join_all(
            batch
                .into_iter()
                .map(move |d| isolated(handle(d), Disposition::Requeue)),
        )
        .boxed()
    }
}

/// Consumes until `shutdown`, re-subscribing on every new broker link.
/// `handler` gets a batch of deliveries and returns their dispositions, in
/// the same order.
pub async fn consume<H, Fut>(
    broker: Broker,
    options: ConsumeOptions,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Disposition>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut links = broker.subscribe();
    loop {
        let link = tokio::select! {
            () = shutdown.cancelled() => return,
            link = links.wait_for(|l| l.as_ref().is_some_and(|l| l.is_open())) => match link {
                Ok(link) => link.clone().expect("wait_for checked the link"),
                Err(_) => return, // the broker is gone
            },
        };
        let setup_timeout = broker.setup_timeout();
        match consume_on(&link, &options, setup_timeout, &shutdown, handler.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(queue = %options.queue, node = %link.node, error = %crate::telemetry::chain(e.as_ref()), "consumer ended, re-subscribing");
                metrics::counter!("consumer_restarts_total", "queue" => options.queue.clone())
                    .increment(1);
                broker.report_failure();
                // Give the watcher a moment to notice a dead link before
                // trying the same one again (a cancelled consumer on a live
                // link is simply re-opened).
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }
}

/// One consumer on one channel. `Ok` after a clean shutdown, `Err` when the
/// consumer or its channel ended for any other reason.
async fn consume_on<H, Fut>(
    link: &Link,
    options: &ConsumeOptions,
    setup_timeout: Duration,
    shutdown: &CancellationToken,
    handler: Arc<H>,
) -> anyhow::Result<()>
where
    H: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Disposition>> + Send + 'static,
{
    // Bounded: right after a node dies, a quorum queue's leader is being
    // re-elected and the broker may not answer `basic.consume` for a while; an
    // unbounded wait here left a worker consuming nothing.
    let subscribe = async {
        let channel = link.connection.create_channel().await?;
        channel
            .basic_qos(options.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                options.queue.clone().into(),
                options.tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    };
    let (channel, consumer) = tokio::time::timeout(setup_timeout, subscribe)
        .await
        .map_err(|_| anyhow::anyhow!("no answer to basic.consume within {setup_timeout:?}"))??;
    tracing::info!(queue = %options.queue, node = %link.node, prefetch = options.prefetch, batch = options.batch, "consuming");
    let consumer_tag = consumer.tag();
    let mut deliveries = consumer.ready_chunks(options.batch.max(1));
    let worker = Worker {
        channel: &channel,
        queue: &options.queue,
        timeout: setup_timeout,
        // More finished deliveries than a batch (or half the window) waiting
        // behind one slow delivery: ack them one by one rather than let them
        // fill the window (at most prefetch - 1 can ever be held).
        hold_limit: options.batch.min(usize::from(options.prefetch) / 2).max(1),
        in_flight: metrics::gauge!("deliveries_in_flight", "queue" => options.queue.clone()),
    };
    let mut settler = Settler::default();
    let mut tasks = JoinSet::new();
    let ended = loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = channel
                    .basic_cancel(consumer_tag.clone(), BasicCancelOptions::default())
                    .await;
                break Ok(());
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                worker.settle(&mut settler, done).await;
            }
            next = deliveries.next() => {
                let Some(chunk) = next else {
                    break Err(anyhow::anyhow!("the broker cancelled the consumer"));
                };
                let mut batch = Vec::with_capacity(chunk.len());
                let mut failed = None;
                for delivery in chunk {
                    match delivery {
                        Ok(delivery) => batch.push(delivery),
                        Err(e) => failed = Some(anyhow::Error::from(e)),
                    }
                }
                if !batch.is_empty() {
                    worker.start(&mut settler, &mut tasks, batch, handler.clone());
                }
                if let Some(e) = failed {
                    break Err(e);
                }
            }
        }
    };
    // Deliveries already handed out finish and settle on this channel (if it
    // is still open; otherwise the broker redelivers them).
    while let Some(done) = tasks.join_next().await {
        worker.settle(&mut settler, done).await;
    }
    if ended.is_ok() {
        let _ = tokio::time::timeout(setup_timeout, channel.close(200, "shutdown".into())).await;
        tracing::info!(queue = %options.queue, "consumer stopped");
    }
    ended
}

/// A batch's outcome: each delivery's tag and disposition.
type Finished = Vec<(u64, Disposition)>;

/// Hands batches out and sends their settlements on one channel.
struct Worker<'a> {
    channel: &'a Channel,
    queue: &'a str,
    timeout: Duration,
    hold_limit: usize,
    in_flight: metrics::Gauge,
}

impl Worker<'_> {
    fn start<H, Fut>(
        &self,
        settler: &mut Settler,
        tasks: &mut JoinSet<Finished>,
        batch: Vec<Delivery>,
        handler: Arc<H>,
    ) where
        H: Fn(Vec<Delivery>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Disposition>> + Send + 'static,
    {
        let tags: Vec<u64> = batch.iter().map(|d| d.delivery_tag).collect();
        tags.iter().for_each(|&tag| settler.delivered(tag));
        self.in_flight.increment(tags.len() as f64);
        metrics::counter!("worker_batches_total", "queue" => self.queue.to_owned()).increment(1);
        let queue = self.queue.to_owned();
        tasks.spawn(async move {
            // A handler that panics or forgets a delivery puts it back rather
            // than leaving it unsettled (which would hold every later ack).
            // Handlers isolate each delivery's work ([`isolated`]), so a
            // panic that reaches this far is in the batch's shared part.
            let run = AssertUnwindSafe(async move { handler(batch).await }).catch_unwind();
            let dispositions = match run.await {
                Ok(dispositions) => dispositions,
                Err(_) => {
                    tracing::error!(%queue, "the handler panicked; putting its batch back");
                    Vec::new()
                }
            };
            if dispositions.len() != tags.len() {
                tracing::error!(%queue, expected = tags.len(), got = dispositions.len(), "the handler returned the wrong number of dispositions; requeueing the rest");
            }
            let rest = std::iter::repeat(Disposition::Requeue);
            tags.into_iter()
                .zip(dispositions.into_iter().chain(rest))
                .collect()
        });
    }

    /// Sends what a finished batch lets us send.
    async fn settle(&self, settler: &mut Settler, done: Result<Finished, tokio::task::JoinError>) {
        let finished = match done {
            Ok(finished) => finished,
            // Tasks are never aborted and catch their handler's panics; should
            // one fail anyway, its deliveries stay unacked (the acks behind
            // them wait) until the channel closes and the broker redelivers.
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "a batch task failed; its deliveries wait for the next channel");
                return;
            }
        };
        self.in_flight.decrement(finished.len() as f64);
        for (_, disposition) in &finished {
            metrics::counter!("deliveries_settled_total", "disposition" => disposition.as_str())
                .increment(1);
        }
        let mut sends = settler.finished(finished);
        if settler.held() >= self.hold_limit {
            sends.extend(settler.release_held());
        }
        for settle in sends {
            self.send(settle).await;
        }
    }

    async fn send(&self, settle: Settle) {
        let (kind, tag) = match settle {
            Settle::AckUpTo(tag) | Settle::Ack(tag) => ("ack", tag),
            Settle::Requeue(tag) => ("requeue", tag),
            Settle::DeadLetter(tag) => ("dead_letter", tag),
        };
        let send = async {
            match settle {
                Settle::AckUpTo(tag) => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions { multiple: true })
                        .await
                }
                Settle::Ack(tag) => {
                    self.channel
                        .basic_ack(tag, BasicAckOptions::default())
                        .await
                }
                Settle::Requeue(tag) => {
                    self.channel
                        .basic_nack(
                            tag,
                            BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            },
                        )
                        .await
                }
                Settle::DeadLetter(tag) => {
                    self.channel
                        .basic_reject(tag, BasicRejectOptions { requeue: false })
                        .await
                }
            }
        };
        metrics::counter!("settle_frames_total", "kind" => kind).increment(1);
        // Bounded: on a connection that just died the ack may never complete,
        // and the consumer waits for every settle before it re-subscribes.
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // The channel is gone; the broker redelivers the message(s).
                tracing::warn!(delivery_tag = tag, kind, error = %crate::telemetry::chain(&e), "could not settle; the broker will redeliver");
            }
            Err(_) => {
                tracing::warn!(
                    delivery_tag = tag,
                    kind,
                    "settling timed out; the broker will redeliver"
                );
            }
        }
    }
}
/// A string header of a delivery, if present.
pub fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    headers.inner().iter().find_map(|(k, v)| {
        (k.as_str() == name).then(|| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        })?
    })
}

/// How many times the broker delivered this message before (quorum queues'
/// `x-delivery-count`), or 1 when only the `redelivered` flag is known.
pub fn previous_deliveries(delivery: &Delivery) -> u64 {
    let counted = delivery.properties.headers().as_ref().and_then(|h| {
        h.inner().iter().find_map(|(k, v)| {
            (k.as_str() == "x-delivery-count").then(|| match v {
                AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
                AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
                AMQPValue::LongUInt(n) => Some(u64::from(*n)),
                AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
                _ => None,
            })?
        })
    });
    counted.unwrap_or(u64::from(delivery.redelivered))
}
