//! Consuming a work queue across broker failovers, with manual acks.
//!
//! [`consume`] opens a channel on the broker's current link, sets the prefetch
//! (QoS) limit and hands each delivery to the handler in its own task, so up to
//! `prefetch` deliveries are processed at once. The handler's [`Disposition`]
//! is applied on the channel the delivery came from. When the consumer ends
//! (the server cancelled it, the channel or connection died) it waits for the
//! broker's next link and consumes again: deliveries that were not acked on the
//! old channel are redelivered by the broker, never acked on the new one.
//!
//! On shutdown it cancels the consumer, lets in-flight deliveries finish and
//! settle, and closes the channel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub queue: String,
    /// Deliveries in flight at once (AMQP prefetch).
    pub prefetch: u16,
    /// Shown in the broker's consumer list.
    pub tag: String,
}

/// Consumes until `shutdown`, re-subscribing on every new broker link.
pub async fn consume<H, Fut>(
    broker: Broker,
    options: ConsumeOptions,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Disposition> + Send + 'static,
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
                tracing::warn!(queue = %options.queue, node = %link.node, error = %e, "consumer ended, re-subscribing");
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
    H: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Disposition> + Send + 'static,
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
    let (channel, mut consumer) = tokio::time::timeout(setup_timeout, subscribe)
        .await
        .map_err(|_| anyhow::anyhow!("no answer to basic.consume within {setup_timeout:?}"))??;
    tracing::info!(queue = %options.queue, node = %link.node, prefetch = options.prefetch, "consuming");
    let in_flight = metrics::gauge!("deliveries_in_flight", "queue" => options.queue.clone());
    let mut tasks = JoinSet::new();
    let ended = loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                break Ok(());
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let handler = handler.clone();
                    let in_flight = in_flight.clone();
                    in_flight.increment(1.0);
                    tasks.spawn(async move {
                        settle(delivery, handler, setup_timeout).await;
                        in_flight.decrement(1.0);
                    });
                }
                Some(Err(e)) => break Err(anyhow::Error::from(e)),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
            },
        }
    };
    // Deliveries already handed out finish and settle on this channel (if it
    // is still open; otherwise the broker redelivers them).
    while tasks.join_next().await.is_some() {}
    if ended.is_ok() {
        let _ = tokio::time::timeout(setup_timeout, channel.close(200, "shutdown".into())).await;
        tracing::info!(queue = %options.queue, "consumer stopped");
    }
    ended
}

async fn settle<H, Fut>(delivery: Delivery, handler: Arc<H>, timeout: Duration)
where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = Disposition>,
{
    let acker = delivery.acker.clone();
    let tag = delivery.delivery_tag;
    let disposition = handler(delivery).await;
    metrics::counter!(
        "deliveries_settled_total",
        "disposition" => match disposition {
            Disposition::Ack => "ack",
            Disposition::Requeue => "requeue",
            Disposition::DeadLetter => "dead_letter",
        }
    )
    .increment(1);
    let send = async {
        match disposition {
            Disposition::Ack => acker.ack(BasicAckOptions::default()).await,
            Disposition::Requeue => {
                acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
            Disposition::DeadLetter => acker.reject(BasicRejectOptions { requeue: false }).await,
        }
    };
    // Bounded: on a connection that just died the ack may never complete,
    // and the consumer waits for every settle before it re-subscribes.
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            // The channel is gone; the broker redelivers the message.
            tracing::warn!(delivery_tag = tag, error = %e, "could not settle a delivery; it will be redelivered");
        }
        Err(_) => {
            tracing::warn!(
                delivery_tag = tag,
                "settling a delivery timed out; it will be redelivered"
            );
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
