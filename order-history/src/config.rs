//! The history's configuration, read from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use pipeline::config::{
    BrokerConfig, ConfigError, RedisConfig, addr_or, millis_or, parse_or, secs_or, var_or,
};

/// The database `make up` creates (a development credential, like RabbitMQ's
/// guest/guest; set `DATABASE_URL` anywhere else).
pub const DEFAULT_DATABASE_URL: &str =
    "postgres://order_pipeline:order_pipeline@127.0.0.1:5433/order_pipeline";

#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// `HISTORY_ADDR`: the HTTP API, `/health`, `/metrics`.
    pub addr: SocketAddr,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// `HTTP_*`: the listener's timeouts and connection cap.
    pub http: pipeline::http::Limits,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `HISTORY_SCHEMA`: the PostgreSQL schema holding the tables.
    pub schema: String,
    /// `HISTORY_REPLICA`: this replica's name on `/health` and the broker.
    pub replica: String,
    /// `HISTORY_BATCH`: the most events applied in one transaction.
    pub batch: usize,
    /// `HISTORY_LOCK_POLL_MS`: how often a standby tries to become active
    /// (and so, about the longest a failover waits on it).
    pub lock_poll: Duration,
    /// `ORDER_RETENTION_SECS`: how long a finished order's Redis records
    /// outlive their arrival in the history.
    pub retention: Duration,
    /// `DATABASE_POOL_SIZE`: sessions for the HTTP reads.
    pub pool_size: usize,
    /// `DATABASE_TIMEOUT_MS`: connecting, and waiting for a pooled session.
    pub db_timeout: Duration,
}

impl HistoryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let batch: usize = parse_or("HISTORY_BATCH", 500)?;
        if !(1..=10_000).contains(&batch) {
            return Err(ConfigError::new(
                "HISTORY_BATCH",
                &batch.to_string(),
                "must be from 1 to 10000",
            ));
        }
        let pool_size: usize = parse_or("DATABASE_POOL_SIZE", 8)?;
        if pool_size == 0 {
            return Err(ConfigError::new(
                "DATABASE_POOL_SIZE",
                "0",
                "must be at least 1",
            ));
        }
        let replica = var_or("HISTORY_REPLICA", &default_replica_name());
        if replica.is_empty()
            || replica.len() > 64
            || !replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError::new(
                "HISTORY_REPLICA",
                &replica,
                "use 1-64 of letters, digits, '.', '_' and '-'",
            ));
        }
        let database_url = var_or("DATABASE_URL", DEFAULT_DATABASE_URL);
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "(hidden)",
                "expected postgres://user:password@host:port/database",
            ));
        }
        Ok(Self {
            addr: addr_or("HISTORY_ADDR", "127.0.0.1:8095")?,
            broker: BrokerConfig::from_env(&format!("order-history-{replica}"))?,
            redis: RedisConfig::from_env()?,
            http: pipeline::config::http_limits_from_env()?,
            database_url,
            schema: var_or("HISTORY_SCHEMA", "order_history"),
            replica,
            batch,
            lock_poll: millis_or("HISTORY_LOCK_POLL_MS", 500)?,
            retention: secs_or("ORDER_RETENTION_SECS", 86_400)?,
            pool_size,
            db_timeout: millis_or("DATABASE_TIMEOUT_MS", 3_000)?,
        })
    }
}

/// `<host>-<pid>`: unique per process on a machine.
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
