//! The processor's configuration, read from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use pipeline::config::{BrokerConfig, ConfigError, RedisConfig, addr_or, millis_or, parse_or};

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// `PROCESSOR_ADDR`: `/health` and `/metrics`.
    pub addr: SocketAddr,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// `HTTP_*`: the listener's timeouts and connection cap.
    pub http: pipeline::http::Limits,
    /// `PREFETCH`: deliveries processed at once.
    pub prefetch: u16,
    /// `WORKER_BATCH`: deliveries handed to the handler at once (and acked
    /// with one `multiple` ack).
    pub batch: usize,
    /// `TRANSIENT_RETRY_MS`: how long one delivery keeps retrying a transient
    /// failure (Redis down, no publish confirm) before it is put back on the
    /// queue, which counts against `DELIVERY_LIMIT`.
    pub transient_retry: Duration,
    /// `HISTORY_URLS`, `HISTORY_TIMEOUT_MS`: asked whether an order without a
    /// Redis record was decided long ago (`None`: no history).
    pub history: Option<pipeline::history::HistoryClient>,
}

impl ProcessorConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let prefetch: u16 = parse_or("PREFETCH", 128)?;
        if prefetch == 0 {
            return Err(ConfigError::new("PREFETCH", "0", "must be at least 1"));
        }
        Ok(Self {
            addr: addr_or("PROCESSOR_ADDR", "127.0.0.1:9101")?,
            broker: BrokerConfig::from_env("order-processor")?,
            redis: RedisConfig::from_env()?,
            http: pipeline::config::http_limits_from_env()?,
            prefetch,
            batch: pipeline::config::worker_batch()?,
            transient_retry: millis_or("TRANSIENT_RETRY_MS", 10_000)?,
            history: pipeline::history::HistoryClient::from_env()?,
        })
    }
}
