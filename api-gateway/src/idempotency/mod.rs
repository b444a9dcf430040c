//! Idempotent intake: the state machine lives with the order record in the
//! shared crate (`pipeline::order::intake`), so the gateway, the processor and
//! the tests share one definition of what a claimed, accepted or conflicting
//! order is.

pub use pipeline::order::intake::{Claim, Intake, IntakeRequest, Lifetimes, Store, StoredResponse};
