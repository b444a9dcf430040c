//! notifier against the real Redis and RabbitMQ cluster and a local webhook
//! receiver.

mod helpers;
mod notifying;
mod pipeline;
