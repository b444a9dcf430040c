//! What travels on the broker: JSON bodies and the routing keys they use.
//!
//! Every message is persistent, `application/json`, carries a deterministic
//! `message_id` for its effect, the order id as `correlation_id`, and a W3C
//! `traceparent` header (see [`crate::amqp::Outgoing`]).

use serde::{Deserialize, Serialize};

use crate::domain::{OrderId, Quantity, Sku};

/// Routing key of a new order on `orders.direct`.
pub const ROUTE_NEW_ORDER: &str = "order.new";
/// Routing key of the event for a reserved order on `orders.topic`.
pub const ROUTE_ORDER_CREATED: &str = "order.created";
/// Routing key of the event for a rejected order on `orders.topic`.
pub const ROUTE_ORDER_REJECTED: &str = "order.rejected";
/// Routing key of the event for an order the processor parked in `orders.dlq`.
pub const ROUTE_ORDER_PARKED: &str = "order.parked";
/// Routing key of the notifier's event once the customer was told.
pub const ROUTE_ORDER_NOTIFIED: &str = "order.notified";

/// A new order, as the gateway publishes it once the client's request is valid.
///
/// Its `message_id` is the order id: a republished copy (after a confirm timeout
/// and a client retry) is the same order, and the processor treats it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub id: OrderId,
    pub sku: Sku,
    pub qty: Quantity,
    /// When the gateway accepted it, milliseconds since the Unix epoch.
    pub placed_at_ms: u64,
    /// The supplier quote it was placed against, with its price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<crate::domain::QuoteTerms>,
}

/// What the processor decided for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Reserved,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Rejected => "rejected",
        }
    }

    /// The routing key of the event on `orders.topic`.
    pub fn route(self) -> &'static str {
        self.kind().route()
    }

    /// The event's `message_id`: one per order and outcome, so a re-published
    /// event (after a redelivery) is recognisably the same event.
    pub fn event_id(self, order: &OrderId) -> String {
        self.kind().event_id(order)
    }

    /// Its kind on `orders.events`.
    pub fn kind(self) -> EventKind {
        match self {
            Self::Reserved => EventKind::Created,
            Self::Rejected => EventKind::Rejected,
        }
    }
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    OutOfStock,
    UnknownSku,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::UnknownSku => "unknown_sku",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "out_of_stock" => Some(Self::OutOfStock),
            "unknown_sku" => Some(Self::UnknownSku),
            _ => None,
        }
    }
}

/// `order.created` / `order.rejected` on `orders.topic`: the processor's
/// decision, recorded once and re-published unchanged on every redelivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderEvent {
    pub id: OrderId,
    pub sku: Sku,
    pub qty: Quantity,
    pub outcome: Outcome,
    /// Set when `outcome` is `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// When the decision was recorded, milliseconds since the Unix epoch.
    pub decided_at_ms: u64,
}

/// `order.parked` on `orders.topic`: the processor could not decide the order
/// and parked its message for an operator (`replay-dlq` after the fix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderParked {
    pub id: OrderId,
    pub sku: Sku,
    pub qty: Quantity,
    /// `invalid_stock` or `record_mismatch`.
    pub reason: String,
    pub parked_at_ms: u64,
}

/// `order.notified` on `orders.topic`: the notifier recorded the send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderNotified {
    pub id: OrderId,
    pub sku: Sku,
    pub qty: Quantity,
    /// The sink that carried it (`log`, `webhook`).
    pub channel: String,
    pub notified_at_ms: u64,
}

/// The kinds of event `orders.events` holds: every message routed through
/// `orders.direct` (`order.new`) and `orders.topic` (`#`). An event's id is
/// `<order id>:<kind>`, the `message_id` it was published with, so a
/// republished copy is recognisably the same event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Placed,
    Created,
    Rejected,
    Parked,
    Notified,
}

impl EventKind {
    pub const ALL: [Self; 5] = [
        Self::Placed,
        Self::Created,
        Self::Rejected,
        Self::Parked,
        Self::Notified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Created => "created",
            Self::Rejected => "rejected",
            Self::Parked => "parked",
            Self::Notified => "notified",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The routing key the event travels with.
    pub fn route(self) -> &'static str {
        match self {
            Self::Placed => ROUTE_NEW_ORDER,
            Self::Created => ROUTE_ORDER_CREATED,
            Self::Rejected => ROUTE_ORDER_REJECTED,
            Self::Parked => ROUTE_ORDER_PARKED,
            Self::Notified => ROUTE_ORDER_NOTIFIED,
        }
    }

    pub fn from_route(route: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.route() == route)
    }

    /// `<order id>:<kind>`, except a new order, whose `message_id` is its id
    /// (the processor dedupes republished copies by it).
    pub fn message_id(self, order: &OrderId) -> String {
        match self {
            Self::Placed => order.to_string(),
            _ => self.event_id(order),
        }
    }

    /// The event's id in the history: `<order id>:<kind>`.
    pub fn event_id(self, order: &OrderId) -> String {
        format!("{order}:{}", self.as_str())
    }
}

/// Milliseconds since the Unix epoch, the timestamp unit of every record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_round_trip_through_their_routes_and_ids() {
        let id = OrderId::parse("o-1").unwrap();
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_route(kind.route()), Some(kind));
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.event_id(&id), format!("o-1:{}", kind.as_str()));
        }
        assert_eq!(Outcome::Reserved.event_id(&id), "o-1:created");
        assert_eq!(EventKind::Placed.message_id(&id), "o-1");
        assert_eq!(EventKind::from_route("order.other"), None);
    }

    #[test]
    fn order_placed_round_trips_and_refuses_invalid_fields() {
        let json = r#"{"id":"order123","sku":"mag-safe-phone-case","qty":2,"placed_at_ms":1}"#;
        let msg: OrderPlaced = serde_json::from_str(json).unwrap();
        assert_eq!(msg.qty.get(), 2);
        assert_eq!(serde_json::to_string(&msg).unwrap(), json);
        assert!(
            serde_json::from_str::<OrderPlaced>(&json.replace("\"qty\":2", "\"qty\":0")).is_err()
        );
        assert!(
            serde_json::from_str::<OrderPlaced>(
                r#"{"id":"o","sku":"s","qty":1,"placed_at_ms":1,"extra":true}"#
            )
            .is_err()
        );
    }
}
