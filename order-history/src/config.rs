//! The history's configuration: its command line and environment.

use std::time::Duration;

use clap::{Parser, Subcommand};
use pipeline::config::{at_least, between, millis, secret, secs};
use pipeline::service::{ServiceCli, ServiceConfig};
use pipeline::telemetry::LogConfig;
use secrecy::SecretString;

pub use pgdb::DEFAULT_DATABASE_URL;

/// order-history: every order event kept in PostgreSQL, and an API over it.
#[derive(Debug, Parser)]
#[command(name = "order-history", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: HistoryConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Empty the history and re-apply orders.events from its first event.
    Rebuild,
}

impl ServiceCli for Cli {
    const LISTEN: (&'static str, &'static str) = ("HISTORY_ADDR", "127.0.0.1:8095");
}

#[derive(Debug, Clone, clap::Args)]
pub struct HistoryConfig {
    #[command(flatten)]
    pub service: ServiceConfig,
    /// The PostgreSQL database (`postgres://user:password@host:port/db`).
    #[arg(id = "DATABASE_URL", long = "database-url", env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL,
          value_parser = secret(pgdb::database_url), hide_env_values = true)]
    pub database_url: SecretString,
    /// The client keys (in the same database): the API needs the admin key.
    #[command(flatten)]
    pub keys: clients::KeyCache,
    /// The PostgreSQL schema holding the tables.
    #[arg(
        id = "HISTORY_SCHEMA",
        long = "history-schema",
        env = "HISTORY_SCHEMA",
        default_value = "order_history"
    )]
    pub schema: String,
    /// This replica's name on `/health` and the broker: 1-64 of letters,
    /// digits, '.', '_' and '-'; empty: the host name and process id.
    #[arg(id = "HISTORY_REPLICA", long = "history-replica", env = "HISTORY_REPLICA", default_value = "", value_parser = replica_name)]
    pub replica: String,
    /// The most events applied in one transaction.
    #[arg(id = "HISTORY_BATCH", long = "history-batch", env = "HISTORY_BATCH", default_value = "500", value_parser = between::<usize>(1, 10_000))]
    pub batch: usize,
    /// How often a standby tries to become active (and so, about the
    /// longest a failover waits on it).
    #[arg(id = "HISTORY_LOCK_POLL_MS", long = "history-lock-poll-ms", env = "HISTORY_LOCK_POLL_MS", default_value = "500", value_parser = millis)]
    pub lock_poll: Duration,
    /// How long a finished order's Redis records outlive their arrival in
    /// the history.
    #[arg(id = "ORDER_RETENTION_SECS", long = "order-retention-secs", env = "ORDER_RETENTION_SECS", default_value = "86400", value_parser = secs)]
    pub retention: Duration,
    /// Sessions for the HTTP reads.
    #[arg(id = "DATABASE_POOL_SIZE", long = "database-pool-size", env = "DATABASE_POOL_SIZE", default_value = "8", value_parser = at_least::<usize>(1))]
    pub pool_size: usize,
    /// Connecting, and waiting for a pooled session.
    #[arg(id = "DATABASE_TIMEOUT_MS", long = "database-timeout-ms", env = "DATABASE_TIMEOUT_MS", default_value = "3000", value_parser = millis)]
    pub db_timeout: Duration,
}

impl HistoryConfig {
    /// The broker settings, under this replica's connection name.
    pub fn broker(&self) -> pipeline::config::BrokerConfig {
        let name = format!("order-history-{}", self.replica);
        self.service.broker.clone().named(&name)
    }
}

fn replica_name(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(default_replica_name());
    }
    if raw.len() > 64
        || !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("use 1-64 of letters, digits, '.', '_' and '-'".into());
    }
    Ok(raw.to_owned())
}

fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "history".into());
    format!("{host}-{}", std::process::id())
}
