//! api-gateway: the pipeline's front door.
//!
//! Validates `POST /orders`, accepts each order exactly once per idempotency key,
//! and answers 202 only after the broker confirmed the message. Answers
//! `GET /quotes/{sku}` by asking every supplier at once ([`quotes`], over
//! `quotes::scatter`). See `ARCHITECTURE.md` for the invariants.
//!
//! Depends on `pipeline` and `quotes` only: no other service crate (it talks
//! to them over the broker and HTTP).

pub mod config;
pub mod error;
pub mod idempotency;
pub mod quotes;
pub mod routes;
pub mod startup;

pub use config::GatewayConfig;
pub use quotes::QuotesConfig;
pub use startup::Application;
