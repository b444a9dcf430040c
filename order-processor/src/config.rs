//! The processor's configuration: its command line and environment.

use clap::{Parser, Subcommand};
use pipeline::config::{WorkerConfig, at_least};
use pipeline::history::HistoryClientConfig;
use pipeline::service::{ServiceCli, ServiceConfig};
use pipeline::telemetry::LogConfig;

/// order-processor: reserves stock exactly once per order.
#[derive(Debug, Parser)]
#[command(name = "order-processor", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: ProcessorConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Move parked messages from orders.dlq back to orders.queue (after
    /// fixing what parked them).
    ReplayDlq(pipeline::amqp::replay::ReplayArgs),
}

impl ServiceCli for Cli {
    const LISTEN: (&'static str, &'static str) = ("PROCESSOR_ADDR", "127.0.0.1:9101");
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProcessorConfig {
    #[command(flatten)]
    pub service: ServiceConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Deliveries of orders.queue in flight at once (AMQP prefetch).
    #[arg(id = "PREFETCH", long = "prefetch", env = "PREFETCH", default_value = "128", value_parser = at_least::<u16>(1))]
    pub prefetch: u16,
    /// Asked whether an order without a Redis record was decided long ago.
    #[command(flatten)]
    pub history: HistoryClientConfig,
}
