//! Shared building blocks of order-pipeline.
//!
//! Every service (api-gateway, order-processor, notifier, order-history,
//! supplier, dashboard) is a thin binary over its own library, and those
//! libraries meet here: the domain types that make invalid orders
//! unrepresentable, the message schema on the wire, the broker connection with
//! multi-node failover and confirmed publishing, the Redis pool and key schema,
//! supplier quotes and the scatter-gather core, configuration, telemetry and
//! shutdown.

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
