//! `replay-dlq`: moves parked messages from a DLQ back to the work queue they
//! came from, once the cause (a bad inventory value, a webhook outage) is
//! fixed. Both workers offer it (`order-processor replay-dlq`,
//! `notifier replay-dlq`; `make replay-dlq QUEUE=orders|notifier`).
//!
//! Each message is re-published straight to its work queue (the default
//! exchange, so no other binding sees a second copy) with its body,
//! `message_id`, `correlation_id` and `traceparent`, and removed from the DLQ
//! only after the broker confirmed the copy: a crash in between leaves it in
//! both places, which the consumers' decide-once and send-once scripts make
//! harmless.
//!
//! A message that is still poison comes straight back to the DLQ. One run
//! moves at most the messages that were parked when it started, so it never
//! chases its own tail.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::time::Instant;

use super::{Broker, Outgoing, header};
use crate::trace::TraceParent;

/// Which DLQ to empty, and into which work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// `orders.dlq` -> `orders.queue`.
    Orders,
    /// `notifier.dlq` -> `notifier.queue`.
    Notifications,
}

impl Parked {
    /// `orders` or `notifier`, as `make replay-dlq QUEUE=...` names them.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "orders" | "orders.dlq" => Some(Self::Orders),
            "notifier" | "notifier.dlq" | "notifications" => Some(Self::Notifications),
            _ => None,
        }
    }

    fn queues(self, broker: &Broker) -> (String, String) {
        let t = broker.topology();
        match self {
            Self::Orders => (t.orders_dlq(), t.orders_queue()),
            Self::Notifications => (t.notifier_dlq(), t.notifier_queue()),
        }
    }
}

/// Moves up to `limit` messages (all that were parked at the start when
/// `None`); returns how many moved.
pub async fn replay_dlq(
    broker: &Broker,
    parked: Parked,
    limit: Option<u64>,
) -> anyhow::Result<u64> {
    let (dlq, target) = parked.queues(broker);
    let link = broker
        .link_until(Instant::now() + std::time::Duration::from_secs(30))
        .await?;
    let channel = link.connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let waiting = u64::from(
        channel
            .queue_declare(dlq.clone().into(), passive, FieldTable::default())
            .await?
            .message_count(),
    );
    let budget = limit.map_or(waiting, |l| l.min(waiting));
    let mut moved = 0;
    while moved < budget {
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
        let trace = header(&msg.delivery, "traceparent")
            .and_then(|h| TraceParent::parse(&h))
            .unwrap_or_else(TraceParent::generate);
        let out = Outgoing {
            exchange: "",
            routing_key: &target,
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
        tracing::info!(%message_id, from = %dlq, to = %target, "moved a parked message back");
        moved += 1;
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(moved)
}

/// `replay-dlq`: the subcommand both workers offer.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Move at most this many messages (default: every message parked now).
    #[arg(long, value_parser = crate::config::at_least::<u64>(1))]
    pub limit: Option<u64>,
}

/// Runs `replay-dlq`: connects, moves, prints what it did.
pub async fn run_command(
    config: crate::config::BrokerConfig,
    parked: Parked,
    args: &ReplayArgs,
) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal();
    let broker = Broker::connect(config, shutdown).await?;
    let (dlq, target) = parked.queues(&broker);
    let moved = replay_dlq(&broker, parked, args.limit).await;
    broker.close().await;
    println!("moved {} message(s) from {dlq} back to {target}", moved?);
    Ok(())
}
