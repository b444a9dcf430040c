//! Typed contracts between our own services over HTTP: what one service
//! answers and another reads back. The server serialises these types and the
//! client deserialises into them, so a renamed field fails to compile
//! instead of turning into a silent `null`.

use serde::{Deserialize, Serialize};

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
