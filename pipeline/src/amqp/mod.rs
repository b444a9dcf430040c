//! The broker layer: topology, a connection that fails over across the cluster's
//! nodes, and publishing that only reports success once the broker confirmed.

mod broker;
mod consumer;
pub mod replay;
pub mod settle;
pub mod topology;

pub use broker::{Broker, Link, Outgoing, PublishError};
pub use consumer::{
    ConsumeOptions, Disposition, consume, each, header, isolated, previous_deliveries,
};
pub use lapin::message::Delivery;
pub use topology::{REJECTED_KEEP, Topology};
