//! The supplier's configuration: its command line and environment.

use std::time::Duration;

use clap::{Parser, Subcommand};
use pipeline::config::{at_least, millis_or_zero};
use pipeline::domain::SupplierId;
use pipeline::service::{ServiceCli, ServiceConfig};
use pipeline::telemetry::LogConfig;

/// supplier: answers quote requests from its catalog.
#[derive(Debug, Parser)]
#[command(name = "supplier", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: SupplierConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the demo catalogs of acme, globex and initech where absent.
    SeedDemo,
}

impl ServiceCli for Cli {
    const LISTEN: (&'static str, &'static str) = ("SUPPLIER_ADDR", "127.0.0.1:8101");
}

#[derive(Debug, Clone, clap::Args)]
pub struct SupplierConfig {
    /// Names the instance, its queue `quotes.<id>` and its catalog
    /// `catalog:<id>`: 1-32 of `[a-z0-9-]`. Required to answer quotes.
    #[arg(id = "SUPPLIER_ID", long = "supplier-id", env = "SUPPLIER_ID", value_parser = parse_id)]
    pub id: Option<SupplierId>,
    #[command(flatten)]
    pub service: ServiceConfig,
    /// Added before every answer (demos, tests); never past a request's
    /// deadline.
    #[arg(id = "SUPPLIER_DELAY_MS", long = "supplier-delay-ms", env = "SUPPLIER_DELAY_MS", default_value = "0", value_parser = millis_or_zero)]
    pub delay: Duration,
    /// The share of requests answered with an error, 0.0 to 1.0.
    #[arg(id = "SUPPLIER_FAILURE_RATE", long = "supplier-failure-rate", env = "SUPPLIER_FAILURE_RATE", default_value = "0.0", value_parser = share)]
    pub failure_rate: f64,
    /// Quote requests handled at once (AMQP prefetch).
    #[arg(id = "SUPPLIER_PREFETCH", long = "supplier-prefetch", env = "SUPPLIER_PREFETCH", default_value = "64", value_parser = at_least::<u16>(1))]
    pub prefetch: u16,
    /// `1`: write the demo catalog at start-up if `catalog:<id>` does not
    /// exist.
    #[arg(id = "SUPPLIER_DEMO_CATALOG", long = "supplier-demo-catalog", env = "SUPPLIER_DEMO_CATALOG", default_value = "0",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub demo_catalog: bool,
}

fn parse_id(raw: &str) -> Result<SupplierId, String> {
    SupplierId::parse(raw.trim()).map_err(|e| e.reason)
}

fn share(raw: &str) -> Result<f64, String> {
    let v: f64 = raw.trim().parse().map_err(|e| format!("{e}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err("must be a share from 0.0 to 1.0".into());
    }
    Ok(v)
}
