//! The gateway's HTTP surface, one module per concern.

pub mod orders;
pub mod quotes;
