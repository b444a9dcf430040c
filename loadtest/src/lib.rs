//! order-pipeline's load and chaos harness.
//!
//! [`run`] seeds inventory, sends orders over HTTP (closed loop at a
//! concurrency, or open loop at a rate) with a share of client retries reusing
//! the same key, waits for the pipeline to drain, then reads Redis and the
//! queues and builds the [`Ledger`] of `reliability.md`: every order accounted
//! for, invariants checked.
//!
//! Depends on the services' libraries only for the shared facts they own
//! (keys, statuses, the history schema); it drives the stack over HTTP and
//! the broker like any client.

pub mod cost;
pub mod ledger;
pub mod load;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod quotes;

pub use ledger::{Ledger, Report};
pub use load::{HistoryTarget, LoadConfig, run};
