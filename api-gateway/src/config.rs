//! The gateway's configuration, read from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use pipeline::config::{
    BrokerConfig, ConfigError, RedisConfig, addr_or, millis_or, parse_or, secs_or,
};

use crate::idempotency::Lifetimes;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_ADDR`; port 0 picks a free port (tests).
    pub addr: SocketAddr,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// `HTTP_*`: the listener's timeouts and connection cap.
    pub http: pipeline::http::Limits,
    /// `REQUEST_TIMEOUT_MS`: the most a `POST /orders` waits for a broker link and
    /// its confirm before answering 503.
    pub request_timeout: Duration,
    /// `IDEMPOTENCY_LEASE_SECS` / `IDEMPOTENCY_TTL_SECS`.
    pub lifetimes: Lifetimes,
    /// `MAX_QTY`: the largest quantity one order may ask for.
    pub max_qty: u32,
    /// `HISTORY_URLS`, `HISTORY_TIMEOUT_MS`: where `GET /orders/<id>` looks
    /// once an order's Redis record has expired (`None`: nowhere).
    pub history: Option<pipeline::history::HistoryClient>,
    /// `QUOTE_*`: the suppliers `GET /quotes/{sku}` asks, and how.
    pub quotes: crate::quotes::QuotesConfig,
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let request_timeout = millis_or("REQUEST_TIMEOUT_MS", 10_000)?;
        let lease = secs_or("IDEMPOTENCY_LEASE_SECS", 30)?;
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
        let max_qty: u32 = parse_or("MAX_QTY", 1000)?;
        if max_qty == 0 {
            return Err(ConfigError::new("MAX_QTY", "0", "must be at least 1"));
        }
        let http = pipeline::config::http_limits_from_env()?;
        if http.idle_timeout <= request_timeout {
            return Err(ConfigError::new(
                "HTTP_IDLE_TIMEOUT_MS",
                &http.idle_timeout.as_millis().to_string(),
                format!(
                    "must exceed REQUEST_TIMEOUT_MS ({} ms): a request waiting for its confirm moves no bytes",
                    request_timeout.as_millis()
                ),
            ));
        }
        Ok(Self {
            addr: addr_or("GATEWAY_ADDR", "127.0.0.1:8080")?,
            broker: BrokerConfig::from_env("api-gateway")?,
            quotes: crate::quotes::QuotesConfig::from_env()?,
            redis: RedisConfig::from_env()?,
            http,
            request_timeout,
            lifetimes: Lifetimes {
                lease,
                done: secs_or("IDEMPOTENCY_TTL_SECS", 86_400)?,
            },
            max_qty,
            history: pipeline::history::HistoryClient::from_env()?,
        })
    }
}
