//! Supplier quotes: one quote request fanned out to several suppliers over
//! the broker and their replies gathered ([`scatter`], with a circuit
//! breaker per supplier), and what the gathered replies amount to
//! ([`strategy`]: all, fastest, cheapest, quorum).
//!
//! Owns: the scatter-gather core, the breaker, the quote request and reply
//! messages, the strategies. Used by `api-gateway` (asks) and `supplier`
//! (answers). Depends on the platform (`pipeline`) only; it must not depend
//! on any service, and nothing in `pipeline` may depend on it.

pub mod scatter;
pub mod strategy;

pub use strategy::*;
