//! `order-processor replay-dlq`: moves parked messages from `orders.dlq` back
//! to `orders.queue`, once the cause (a bad inventory value, a long outage) is
//! fixed.
//!
//! Each message is re-published to `orders.direct` with its body, `message_id`,
//! `correlation_id` and `traceparent`, and removed from the DLQ only after the
//! broker confirmed the copy: a crash in between leaves it in both places,
//! which the processor's decide-once script makes harmless.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use pipeline::amqp::{Broker, Outgoing};
use pipeline::messages::ROUTE_NEW_ORDER;
use pipeline::trace::TraceParent;
use tokio::time::Instant;

/// Moves up to `limit` messages (all when `None`); returns how many moved.
pub async fn replay_dlq(broker: &Broker, limit: Option<u64>) -> anyhow::Result<u64> {
    let topology = broker.topology().clone();
    let (dlq, exchange) = (topology.orders_dlq(), topology.orders_exchange());
    let link = broker
        .link_until(Instant::now() + std::time::Duration::from_secs(30))
        .await?;
    let channel = link.connection.create_channel().await?;
    let mut moved = 0;
    while limit.is_none_or(|l| moved < l) {
        let Some(msg) = channel
            .basic_get(dlq.clone().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let props = &msg.delivery.properties;
        let message_id = props
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let correlation_id = props
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| message_id.clone());
        let trace = pipeline::amqp::header(&msg.delivery, "traceparent")
            .and_then(|h| TraceParent::parse(&h))
            .unwrap_or_else(TraceParent::generate);
        let out = Outgoing {
            exchange: &exchange,
            routing_key: ROUTE_NEW_ORDER,
            payload: &msg.delivery.data,
            message_id: &message_id,
            correlation_id: &correlation_id,
            traceparent: &trace,
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        if let Err(e) = broker.publish(&out, deadline).await {
            let _ = msg
                .delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
            return Err(anyhow::Error::from(e).context(format!("re-publishing {message_id:?}")));
        }
        msg.delivery.acker.ack(BasicAckOptions::default()).await?;
        tracing::info!(%message_id, "moved from the DLQ back to the orders queue");
        moved += 1;
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(moved)
}
