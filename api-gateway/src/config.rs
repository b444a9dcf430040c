//! The gateway's configuration: its command line and environment.

use std::time::Duration;

use clap::Parser;
use pipeline::config::{ConfigError, at_least, millis};
use pipeline::history::HistoryClientConfig;
use pipeline::service::{ServiceCli, ServiceConfig};
use pipeline::telemetry::LogConfig;

use crate::idempotency::Lifetimes;

/// api-gateway: takes orders (idempotently) and quote requests over HTTP.
#[derive(Debug, Parser)]
#[command(name = "api-gateway", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: GatewayConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Client keys: create, list, revoke (in DATABASE_URL's KEYS_SCHEMA).
    Keys {
        #[command(subcommand)]
        command: clients::KeysCommand,
    },
}

impl ServiceCli for Cli {
    const LISTEN: (&'static str, &'static str) = ("GATEWAY_ADDR", "127.0.0.1:8080");

    fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate()
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    #[command(flatten)]
    pub service: ServiceConfig,
    /// The longest a `POST /orders` waits for its publish confirm before it
    /// answers 503.
    #[arg(id = "REQUEST_TIMEOUT_MS", long = "request-timeout-ms", env = "REQUEST_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub request_timeout: Duration,
    #[command(flatten)]
    pub lifetimes: Lifetimes,
    /// Who may call: the client keys and how fresh this gateway keeps them.
    #[command(flatten)]
    pub keys: clients::KeysConfig,
    /// The rates of keys that name none.
    #[command(flatten)]
    pub rates: clients::DefaultRates,
    /// The largest `qty` one order may ask for.
    #[arg(id = "MAX_QTY", long = "max-qty", env = "MAX_QTY", default_value = "1000", value_parser = at_least::<u32>(1))]
    pub max_qty: u32,
    /// Asked for an order whose Redis record has expired, and for an id
    /// that may have been used before.
    #[command(flatten)]
    pub history: HistoryClientConfig,
    #[command(flatten)]
    pub quotes: crate::quotes::QuotesConfig,
}

impl GatewayConfig {
    /// What no single value can say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (lease, request_timeout) = (self.lifetimes.lease, self.request_timeout);
        if lease <= request_timeout {
            return Err(ConfigError::new(
                "IDEMPOTENCY_LEASE_SECS",
                &lease.as_secs().to_string(),
                format!(
                    "the in-flight lease must outlast REQUEST_TIMEOUT_MS ({} ms), or a slow request could be processed twice",
                    request_timeout.as_millis()
                ),
            ));
        }
        let idle = self.service.http.idle_timeout;
        if idle <= request_timeout {
            return Err(ConfigError::new(
                "HTTP_IDLE_TIMEOUT_MS",
                &idle.as_millis().to_string(),
                format!(
                    "must exceed REQUEST_TIMEOUT_MS ({} ms): a request waiting for its confirm moves no bytes",
                    request_timeout.as_millis()
                ),
            ));
        }
        self.quotes.validate()
    }
}
