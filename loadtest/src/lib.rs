//! order-pipeline's load and chaos harness.
//!
//! [`run`] seeds inventory, sends orders over HTTP (closed loop at a
//! concurrency, or open loop at a rate) with a share of client retries reusing
//! the same key, waits for the pipeline to drain, then reads Redis and the
//! queues and builds the [`Ledger`] of `reliability.md`: every order accounted
//! for, invariants checked.

pub mod cost;
pub mod ledger;
pub mod load;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod quotes;

pub use ledger::{Ledger, Report};
pub use load::{HistoryTarget, LoadConfig, run};
