//! Integration tests of the api-gateway against real Redis and RabbitMQ.

mod failover;
mod faults;
mod helpers;
mod intake;
mod validation;
