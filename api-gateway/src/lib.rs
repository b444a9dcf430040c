//! api-gateway: the pipeline's front door.
//!
//! Validates `POST /orders`, accepts each order exactly once per idempotency key,
//! and answers 202 only after the broker confirmed the message. Answers
//! `GET /quotes/{sku}` by asking every supplier at once ([`quotes`], over
//! `quotes::scatter`). See `ARCHITECTURE.md` for the invariants.
//!
//! Depends on `pipeline` and `quotes` only: no other service crate (it talks
//! to them over the broker and HTTP).

pub mod access;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod quotes;
pub mod routes;
pub mod startup;

pub use config::GatewayConfig;
pub use quotes::QuotesConfig;
pub use startup::Application;

/// The help texts (`# HELP`) of the metrics the gateway records: order
/// intake (`routes::orders`) and quote requests (`crate::quotes`). The
/// gather's own `quote_*` metrics are described by `quotes::scatter`.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};

    describe_counter!(
        "orders_accepted_total",
        "Orders accepted: published with the broker's confirm and answered 202 (not replays)."
    );
    describe_counter!(
        "idempotency_replays_total",
        "Order requests answered as an earlier acceptance (same idempotency key, or same \
         order id and payload)."
    );
    describe_counter!(
        "idempotency_conflicts_total",
        "Order requests refused because their idempotency key or order id is held by a \
         request in flight."
    );
    describe_counter!(
        "idempotency_mismatches_total",
        "Order requests refused because their idempotency key was used for another payload."
    );
    describe_counter!(
        "order_id_conflicts_total",
        "Order requests refused because their order id names an order with another payload."
    );
    describe_counter!(
        "invalid_quotes_total",
        "Order requests refused because their quote cannot back the order (unknown, expired, \
         for another sku or qty, or backing another order)."
    );
    describe_counter!(
        "retired_id_lookups_total",
        "Order requests whose id may name a retired order, looked up in the history."
    );
    describe_counter!(
        "quote_requests_total",
        "Quote requests gathered, by strategy (all, fastest, cheapest, quorum) and \
         completed_by (all, min_responses, quorum, timeout, all_circuits_open)."
    );
    describe_histogram!(
        "quote_request_duration_seconds",
        Unit::Seconds,
        "Time to gather and judge the suppliers' replies to a quote request, by strategy."
    );
}
