//! Integration tests of the api-gateway against real Redis and RabbitMQ.

mod faults;
mod failover;
mod helpers;
mod intake;
mod validation;
