//! notifier against the real Redis and RabbitMQ cluster and a local webhook
//! receiver.

mod helpers;
mod identity;
mod notifying;
mod pipeline;
mod signatures;
