//! The platform of order-pipeline: what every service stands on.
//!
//! Owns the domain types that make invalid orders unrepresentable
//! (`domain`), the message schema on the wire (`messages`), the Redis key
//! schema (`keys`), the order record and its scripts (`order`), the broker
//! connection with multi-node failover, confirmed publishing and the one
//! batched worker (`amqp`), the shared Redis connection (`store`), the
//! configuration groups and parsers every binary shares (`config`), the
//! typed HTTP contracts between our own services (`api`) and the history's
//! client (`history`), the listener and ops routes (`http`), telemetry,
//! trace context, shutdown, and the one service shell (`service`).
//!
//! Must not depend on any service crate, nor on `quotes` (supplier quotes
//! are a feature built on this platform, not part of it).

pub mod amqp;
pub mod api;
pub mod config;
pub mod domain;
pub mod history;
pub mod http;
pub mod keys;
pub mod messages;
pub mod order;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod view;
