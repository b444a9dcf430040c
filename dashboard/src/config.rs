//! The dashboard's configuration, read from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use pipeline::config::{
    BrokerConfig, ConfigError, RedisConfig, addr_or, millis_or, parse_or, secs_or,
};

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// `DASHBOARD_ADDR`.
    pub addr: SocketAddr,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// `HTTP_*`: the listener's timeouts and connection cap.
    pub http: pipeline::http::Limits,
    /// `SAMPLE_INTERVAL_MS`: how often figures are read and pushed to pages.
    pub sample_interval: Duration,
    /// `HISTORY_SECS`: how much throughput history the page can show.
    pub history: Duration,
    /// `LOW_STOCK`: stock at or below this is highlighted.
    pub low_stock: i64,
    /// `INVENTORY_RESCAN_SECS`: only where Redis refuses to turn on keyspace
    /// notifications: how often the `inventory:*` keys are looked for again
    /// with SCAN (a new SKU shows up within this). Otherwise new SKUs are
    /// reported by Redis and show up at the next sample.
    pub inventory_rescan: Duration,
    /// `SSE_MAX_CLIENTS`: live pages served at once.
    pub sse_max_clients: usize,
    /// `HISTORY_URLS`, `HISTORY_TIMEOUT_MS`: the order-history replicas whose
    /// role and lag the page shows, and where an expired order is looked up.
    pub order_history: Option<pipeline::history::HistoryClient>,
    /// `GATEWAY_URL`, `GATEWAY_TIMEOUT_MS`: the gateway whose `/suppliers`
    /// (each supplier's circuit, success rate, latency) the Suppliers panel
    /// shows; `None` (`GATEWAY_URL` empty or `none`): no panel.
    pub gateway: Option<crate::gateway::GatewayClient>,
}

impl DashboardConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            addr: addr_or("DASHBOARD_ADDR", "127.0.0.1:8090")?,
            broker: BrokerConfig::from_env("dashboard")?,
            redis: RedisConfig::from_env()?,
            http: pipeline::config::http_limits_from_env()?,
            sample_interval: millis_or("SAMPLE_INTERVAL_MS", 1_000)?,
            history: secs_or("HISTORY_SECS", 600)?,
            low_stock: parse_or("LOW_STOCK", 10)?,
            inventory_rescan: secs_or("INVENTORY_RESCAN_SECS", 30)?,
            sse_max_clients: match parse_or("SSE_MAX_CLIENTS", 64)? {
                0 => {
                    return Err(ConfigError::new(
                        "SSE_MAX_CLIENTS",
                        "0",
                        "must be at least 1",
                    ));
                }
                n => n,
            },
            order_history: pipeline::history::HistoryClient::from_env()?,
            gateway: crate::gateway::GatewayClient::from_env()?,
        })
    }
}
