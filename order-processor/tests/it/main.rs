//! order-processor against the real Redis and RabbitMQ cluster.

mod faults;
mod helpers;
mod processing;
