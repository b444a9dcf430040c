//! Typed contracts between our own services over HTTP: what one service
//! answers and another reads back. The server serialises these types and the
//! client deserialises into them, so a renamed field fails to compile
//! instead of turning into a silent `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{OrderId, QuoteTerms};
use crate::order::OrderStatus;

/// The gateway's `GET /suppliers`: each supplier's circuit and figures as
/// that gateway process sees them (what the dashboard's Suppliers panel
/// shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuppliersReport {
    /// In the gateway's `QUOTE_SUPPLIERS` order.
    pub suppliers: Vec<DestinationStatus>,
    /// Quote requests waiting for replies now.
    pub pending_requests: u64,
    /// Replies that arrived after their request had finished, so far.
    pub late_replies: u64,
    /// `up` or `down`: whether the gateway's reply consumer runs.
    pub reply_consumer: String,
}

/// A destination's figures, for health pages and dashboards (the gateway's
/// `GET /suppliers` writes them, the dashboard reads them back).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DestinationStatus {
    pub name: String,
    pub circuit: CircuitState,
    /// Milliseconds until an open circuit lets a probe through.
    pub open_for_ms: Option<u64>,
    /// Calls and failures in the breaker's current window.
    pub window_calls: usize,
    pub window_failures: usize,
    /// Over the most recent calls that had an outcome (at most 200).
    pub recent_calls: usize,
    pub recent_success_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub replies: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub skipped: u64,
    pub last_error: Option<String>,
}

/// The state as shown to operators (`closed`, `open`, `half_open` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the circuit-state gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// An order as the history keeps it: an entry of `GET /orders` and, with its
/// quote and events, the answer of `GET /orders/{id}` (what the gateway and
/// the dashboard serve once the order's Redis record has expired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryOrder {
    /// The qualified id (`<client>/<id>`, or the bare id of `default`).
    pub id: OrderId,
    /// The client the order belongs to.
    #[serde(default = "default_client")]
    pub client: String,
    pub status: OrderStatus,
    pub sku: String,
    pub qty: u32,
    pub reason: Option<String>,
    /// Stage (`accepted`, `reserved`, ...) to ms since the epoch.
    pub timestamps_ms: BTreeMap<String, i64>,
    /// Always `history`: where this view came from.
    pub source: String,
    /// A quote-backed order's supplier and price (its placed event's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<QuoteTerms>,
    /// The order's events in stream order (only for `GET /orders/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<HistoryEvent>>,
}

fn default_client() -> String {
    crate::domain::ClientId::DEFAULT.to_owned()
}

impl HistoryOrder {
    /// The order as its own client sees it: its own id, no qualifier.
    pub fn client_view(&self) -> serde_json::Value {
        let mut view = serde_json::to_value(self).expect("an order serialises");
        view["id"] = serde_json::Value::from(self.id.local());
        view
    }
}

/// One event of an order's timeline in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// `<order id>:<kind>`.
    pub id: String,
    pub kind: String,
    /// Its offset on the `orders.events` stream.
    pub offset: i64,
    pub at_ms: i64,
    pub reason: Option<String>,
    pub trace_id: Option<String>,
}

/// The history's `GET /orders`: newest first, one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryOrderPage {
    pub orders: Vec<HistoryOrder>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A history replica's `GET /health`: whether it can answer, its role, and
/// how far behind the stream it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryHealth {
    pub service: String,
    /// `ok`, or `degraded` when PostgreSQL does not answer (then HTTP 503).
    pub status: String,
    /// Its `HISTORY_REPLICA` name.
    pub replica: String,
    /// `active` (applies the stream) or `standby`.
    pub role: String,
    /// The last stream offset applied, if any.
    pub checkpoint: Option<i64>,
    /// The last offset seen on the stream, if any.
    pub tail: Option<i64>,
    /// Events on the stream not applied yet.
    pub lag_events: u64,
    /// Events applied by this process.
    pub applied: u64,
    /// How often this process became the active replica.
    pub became_active: u64,
    pub active_since_ms: Option<u64>,
    pub components: HistoryComponents,
}

/// What a history replica depends on, each `up` or `down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryComponents {
    pub postgres: String,
    pub broker: BrokerComponent,
}

/// The broker as a service sees it: `up` with the node it is connected to,
/// or `down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerComponent {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}
