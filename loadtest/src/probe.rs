//! The broker's raw confirmed-publish rate to a quorum queue: the ceiling the
//! pipeline is measured against.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

/// Publishes `messages` persistent ~100-byte messages to a fresh 3-replica
/// quorum queue with `window` confirms in flight; returns messages per second.
pub async fn confirmed_publish_rate(
    amqp_url: &str,
    messages: u64,
    window: usize,
) -> anyhow::Result<f64> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = format!("bench.probe.{}", std::process::id());
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.clone().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    let body = vec![b'x'; 100];
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..messages)
        .map(|_| {
            let (ch, queue, body) = (&ch, &queue, &body);
            async move {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.clone().into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                match tokio::time::timeout(Duration::from_secs(30), confirm).await?? {
                    Confirmation::Ack(_) => Ok(()),
                    other => anyhow::bail!("not confirmed: {other:?}"),
                }
            }
        })
        .buffer_unordered(window)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(messages as f64 / secs)
}
