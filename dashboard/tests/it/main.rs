//! The dashboard against the whole pipeline, run in this process on the real
//! Redis and RabbitMQ cluster.

mod browser;
mod helpers;
mod metrics;
