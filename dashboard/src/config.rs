//! The dashboard's configuration: its command line and environment.

use std::time::Duration;

use clap::Parser;
use pipeline::config::{at_least, millis, secs};
use pipeline::history::HistoryClientConfig;
use pipeline::service::{ServiceCli, ServiceConfig};
use pipeline::telemetry::LogConfig;

use crate::gateway::GatewayConfig;

/// dashboard: the live page of the pipeline, and its metrics.
#[derive(Debug, Parser)]
#[command(name = "dashboard", version)]
pub struct Cli {
    #[command(flatten)]
    pub config: DashboardConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

impl ServiceCli for Cli {
    const LISTEN: (&'static str, &'static str) = ("DASHBOARD_ADDR", "127.0.0.1:8090");
}

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardConfig {
    #[command(flatten)]
    pub service: ServiceConfig,
    /// How often figures are read and pushed to pages.
    #[arg(id = "SAMPLE_INTERVAL_MS", long = "sample-interval-ms", env = "SAMPLE_INTERVAL_MS", default_value = "1000", value_parser = millis)]
    pub sample_interval: Duration,
    /// How much throughput history the page can show.
    #[arg(id = "HISTORY_SECS", long = "history-secs", env = "HISTORY_SECS", default_value = "600", value_parser = secs)]
    pub history: Duration,
    /// Stock at or below this is highlighted.
    #[arg(
        id = "LOW_STOCK",
        long = "low-stock",
        env = "LOW_STOCK",
        default_value = "10",
        allow_negative_numbers = true
    )]
    pub low_stock: i64,
    /// Only where Redis refuses to turn on keyspace notifications: how often
    /// the `inventory:*` keys are looked for again with SCAN (a new SKU shows
    /// up within this). Otherwise new SKUs are reported by Redis and show up
    /// at the next sample.
    #[arg(id = "INVENTORY_RESCAN_SECS", long = "inventory-rescan-secs", env = "INVENTORY_RESCAN_SECS", default_value = "30", value_parser = secs)]
    pub inventory_rescan: Duration,
    /// Live pages served at once.
    #[arg(id = "SSE_MAX_CLIENTS", long = "sse-max-clients", env = "SSE_MAX_CLIENTS", default_value = "64", value_parser = at_least::<usize>(1))]
    pub sse_max_clients: usize,
    /// The order-history replicas whose role and lag the page shows, and
    /// where an expired order is looked up.
    #[command(flatten)]
    pub order_history: HistoryClientConfig,
    /// The gateway whose `/suppliers` the Suppliers panel shows.
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// The client keys: every view but `/health` needs the admin key.
    #[command(flatten)]
    pub keys: clients::KeysConfig,
}
