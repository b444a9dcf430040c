//! The figures the dashboard shows, read fresh from Redis and the broker.

use std::collections::{BTreeMap, HashMap};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use pipeline::amqp::Broker;
use pipeline::domain::OrderId;
use pipeline::keys::Keys;
use pipeline::messages::RejectReason;
use pipeline::order::counter;
use pipeline::store::Redis;
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;

use crate::gateway::GatewayClient;
use crate::skus::SkuRegistry;

/// Everything on the page, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    pub orders: Orders,
    /// Units per SKU, sorted by SKU.
    pub inventory: Vec<Stock>,
    pub notifications: Notifications,
    /// Ready messages per queue; `null` when the broker could not be asked.
    pub queues: BTreeMap<&'static str, Option<u32>>,
    pub health: Health,
    /// Each order-history replica of `HISTORY_URLS` (empty: no history).
    pub history: Vec<HistoryReplica>,
    /// The gateway's suppliers (`GATEWAY_URL`); `null` when no gateway is
    /// configured.
    pub suppliers: Option<Suppliers>,
}

/// The gateway's `/suppliers`: each supplier's circuit and figures, or why
/// the gateway did not say.
#[derive(Debug, Clone, Serialize)]
pub struct Suppliers {
    /// The gateway's base URL (`GATEWAY_URL`).
    pub url: String,
    /// `up` when the gateway answered, `unreachable` when it did not.
    pub status: &'static str,
    /// Why it is unreachable, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// In the gateway's `QUOTE_SUPPLIERS` order; empty when unreachable.
    pub suppliers: Vec<SupplierStatus>,
    /// Quote requests waiting for replies; `null` when unreachable.
    pub pending_requests: Option<u64>,
    /// Replies that came after their request had finished; `null` when
    /// unreachable.
    pub late_replies: Option<u64>,
    /// The gateway's reply consumer, `up` or `down`; `null` when unreachable.
    pub reply_consumer: Option<String>,
}

pub use crate::gateway::SupplierStatus;

async fn gateway_suppliers(gateway: Option<&GatewayClient>) -> Option<Suppliers> {
    let gateway = gateway?;
    let url = gateway.url().to_owned();
    Some(match gateway.suppliers().await {
        Ok(report) => Suppliers {
            url,
            status: "up",
            error: None,
            suppliers: report.suppliers,
            pending_requests: Some(report.pending_requests),
            late_replies: Some(report.late_replies),
            reply_consumer: Some(report.reply_consumer),
        },
        Err(e) => Suppliers {
            url,
            status: "unreachable",
            error: Some(e),
            suppliers: Vec::new(),
            pending_requests: None,
            late_replies: None,
            reply_consumer: None,
        },
    })
}

/// One order-history replica as its `/health` describes it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReplica {
    pub url: String,
    /// Its `HISTORY_REPLICA` name, when it answered.
    pub replica: Option<String>,
    /// `active`, `standby`, or `down` (not answering).
    pub role: String,
    pub checkpoint: Option<i64>,
    /// Events on the stream it has not applied yet.
    pub lag_events: Option<u64>,
    /// Why it is down, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn history_replicas(
    client: Option<&pipeline::history::HistoryClient>,
) -> Vec<HistoryReplica> {
    let Some(client) = client else {
        return Vec::new();
    };
    client
        .replicas()
        .await
        .into_iter()
        .map(|r| match r.health {
            Ok(h) => HistoryReplica {
                url: r.url,
                role: if h.status == "ok" {
                    h.role
                } else {
                    "degraded".to_owned()
                },
                replica: Some(h.replica),
                checkpoint: h.checkpoint,
                lag_events: Some(h.lag_events),
                error: None,
            },
            Err(e) => HistoryReplica {
                url: r.url,
                replica: None,
                role: "down".to_owned(),
                checkpoint: None,
                lag_events: None,
                error: Some(e),
            },
        })
        .collect()
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Orders {
    pub accepted: u64,
    pub reserved: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    pub notified: u64,
    /// Orders parked right now (an `inventory:` value that is not an integer).
    pub parked: u64,
    /// Messages that disagreed with their order's record, parked in the DLQ.
    pub anomalies: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stock {
    pub sku: String,
    /// `null` when the value is not an integer (see `invalid_value`).
    pub units: Option<i64>,
    /// The raw value when it is not an integer: orders for this SKU are parked
    /// until an operator fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_value: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Notifications {
    pub sent: u64,
    pub sending: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub redis: bool,
    pub broker: bool,
    /// The node the dashboard is connected to.
    pub broker_node: Option<String>,
    /// New SKUs are reported by Redis (keyspace notifications); `false`:
    /// found by a SCAN every `INVENTORY_RESCAN_SECS`.
    pub inventory_watch: bool,
}

pub use pipeline::amqp::topology::QUEUES;

/// Reads everything; a part that cannot be read (Redis or the broker away)
/// shows as zero/`null` and flips its health flag, never fails the whole (a
/// history replica or the gateway that does not answer is shown as such).
pub async fn collect(
    pool: &Redis,
    keys: &Keys,
    broker: &Broker,
    inventory: &SkuRegistry,
    order_history: Option<&pipeline::history::HistoryClient>,
    gateway: Option<&GatewayClient>,
) -> Snapshot {
    let (redis, queues, history, suppliers) = tokio::join!(
        read_redis(pool, keys, inventory),
        queue_depths(broker),
        history_replicas(order_history),
        gateway_suppliers(gateway)
    );
    let link = broker.current();
    let inventory_watch = inventory.watching();
    let (orders, inventory, notifications, redis_ok) = match redis {
        Ok((o, i, n)) => (o, i, n, true),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "cannot read Redis");
            (
                Orders::default(),
                Vec::new(),
                Notifications::default(),
                false,
            )
        }
    };
    Snapshot {
        at_ms: pipeline::messages::now_ms(),
        orders,
        inventory,
        notifications,
        queues,
        health: Health {
            redis: redis_ok,
            broker: link.is_some(),
            broker_node: link.map(|l| l.node.clone()),
            inventory_watch,
        },
        history,
        suppliers,
    }
}

async fn read_redis(
    pool: &Redis,
    keys: &Keys,
    registry: &SkuRegistry,
) -> anyhow::Result<(Orders, Vec<Stock>, Notifications)> {
    let mut conn = pool.connection();
    let c: HashMap<String, i64> = conn.hgetall(keys.counters()).await?;
    let get = |name: &str| c.get(name).copied().unwrap_or(0).max(0) as u64;
    let orders = Orders {
        accepted: get(counter::ACCEPTED),
        reserved: get(counter::RESERVED),
        rejected: get(counter::REJECTED),
        rejected_by_reason: [RejectReason::OutOfStock, RejectReason::UnknownSku]
            .into_iter()
            .map(|r| (r.as_str(), get(counter::rejected_for(r))))
            .collect(),
        notified: get(counter::NOTIFIED),
        parked: get(counter::PARKED),
        anomalies: get(counter::ANOMALIES),
    };
    let notifications = Notifications {
        sent: get(counter::NOTIFIED),
        sending: get(counter::NOTIFICATIONS_SENDING),
        failed: get(counter::NOTIFICATIONS_FAILED),
    };

    // The inventory keys (the registry), then their values by MGET.
    let inventory_keys = registry.list(pool, keys).await?;
    let mut inventory = Vec::with_capacity(inventory_keys.len());
    for chunk in inventory_keys.chunks(500) {
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(chunk).query_async(&mut conn).await?;
        for (key, value) in chunk.iter().zip(values) {
            let Some(value) = value else {
                registry.forget(key); // deleted since it was registered
                continue;
            };
            let Some(sku) = keys.sku_of(key) else {
                continue;
            };
            // A value that is not an integer is shown as such, never left
            // out: it is why that SKU's orders are parked.
            let units = pipeline::order::stock_units(&value);
            inventory.push(Stock {
                sku: sku.to_owned(),
                units,
                invalid_value: units.is_none().then_some(value),
            });
        }
    }
    Ok((orders, inventory, notifications))
}

async fn queue_depths(broker: &Broker) -> BTreeMap<&'static str, Option<u32>> {
    let mut depths: BTreeMap<&'static str, Option<u32>> =
        QUEUES.iter().map(|q| (*q, None)).collect();
    let Some(link) = broker.current() else {
        return depths;
    };
    let Ok(channel) = link.connection.create_channel().await else {
        return depths;
    };
    for q in QUEUES {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(
                broker.topology().queue(q).into(),
                passive,
                FieldTable::default(),
            )
            .await
        {
            Ok(state) => {
                depths.insert(q, Some(state.message_count()));
            }
            // A failed passive declare closes the channel; the rest stay null.
            Err(_) => break,
        }
    }
    let _ = channel.close(200, "done".into()).await;
    depths
}

/// The newest messages that disagreed with their order's record, newest
/// first, as `reserve.lua` described them.
pub async fn recent_anomalies(pool: &Redis, keys: &Keys, n: isize) -> anyhow::Result<Vec<Value>> {
    let mut conn = pool.connection();
    let raw: Vec<String> = conn.lrange(keys.anomalies(), 0, n - 1).await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

/// The newest orders, newest first, with their state.
pub async fn recent_orders(pool: &Redis, keys: &Keys, n: isize) -> anyhow::Result<Vec<Value>> {
    let mut conn = pool.connection();
    let ids: Vec<OrderId> = conn
        .lrange::<_, Vec<String>>(keys.recent_orders(), 0, n - 1)
        .await?
        .iter()
        .filter_map(|id| OrderId::parse_qualified(id).ok())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Every order hash in one pipelined round trip.
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hgetall(keys.order(id));
    }
    let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(&mut conn).await?;
    Ok(ids
        .iter()
        .zip(hashes)
        .filter(|(_, fields)| !fields.is_empty())
        .map(|(id, fields)| pipeline::view::order_view(id, &fields))
        .collect())
}
