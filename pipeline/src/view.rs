//! The public view of an order, shared by the gateway's and the dashboard's
//! `GET /orders/<id>`.

use std::collections::BTreeMap;

use crate::store::Redis;
use redis::AsyncCommands;
use serde_json::{Map, Value, json};

use crate::domain::OrderId;
use crate::keys::Keys;

/// Status, reason, sku, qty, and every `*_at` field of an `order:<id>` hash as a
/// timestamp in milliseconds.
pub fn order_view(id: &OrderId, fields: &BTreeMap<String, String>) -> Value {
    let mut timestamps = Map::new();
    for (name, value) in fields {
        if let (Some(stage), Ok(ms)) = (name.strip_suffix("_at"), value.parse::<u64>()) {
            timestamps.insert(stage.to_owned(), json!(ms));
        }
    }
    let mut view = json!({
        "id": id.local(),
        "client": id.client(),
        "status": fields.get("status"),
        "sku": fields.get("sku"),
        "qty": fields.get("qty").and_then(|q| q.parse::<u64>().ok()),
        "reason": fields.get("reason"),
        "timestamps_ms": timestamps,
    });
    // A quote-backed order: its supplier and price.
    let terms = [
        "quote_id",
        "supplier",
        "unit_price_minor",
        "total_minor",
        "currency",
        "delivery_days",
    ]
    .map(|f| fields.get(f).map(String::as_str).unwrap_or(""));
    if !terms[0].is_empty()
        && let Ok(terms) = crate::domain::QuoteTerms::from_fields(terms)
    {
        view["quote"] = json!(terms);
    }
    view
}

/// The order's view, or `None` if there is no such order. With
/// `with_notification`, also its notification's status, channel, attempts and
/// last error.
pub async fn load_order(
    pool: &Redis,
    keys: &Keys,
    id: &OrderId,
    with_notification: bool,
) -> anyhow::Result<Option<Value>> {
    let mut conn = pool.connection();
    let fields: BTreeMap<String, String> = conn.hgetall(keys.order(id)).await?;
    // A claimed id whose message was never confirmed is no order (yet).
    if !fields.contains_key("status") {
        return Ok(None);
    }
    let mut view = order_view(id, &fields);
    if with_notification {
        let n: BTreeMap<String, String> = conn.hgetall(keys.notification(id)).await?;
        view["notification"] = if n.is_empty() {
            Value::Null
        } else {
            json!({
                "status": n.get("status"),
                "channel": n.get("channel"),
                "attempts": n.get("attempts").and_then(|a| a.parse::<u64>().ok()),
                "last_error": n.get("last_error"),
                "sent_at_ms": n.get("sent_at").and_then(|a| a.parse::<u64>().ok()),
            })
        };
    }
    Ok(Some(view))
}
