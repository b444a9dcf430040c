//! Integration tests of the api-gateway against real Redis and RabbitMQ.

mod auth;
mod failover;
mod faults;
mod hardening;
mod helpers;
mod identity;
mod intake;
mod scoping;
mod validation;
