//! The supplier's configuration, read from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use pipeline::config::{BrokerConfig, ConfigError, RedisConfig, addr_or, parse_or, var_or};
use pipeline::domain::SupplierId;

#[derive(Debug, Clone)]
pub struct SupplierConfig {
    /// `SUPPLIER_ID` (required): names the instance, its queue
    /// `quotes.<id>` and its catalog `catalog:<id>`.
    pub id: SupplierId,
    /// `SUPPLIER_ADDR`: `/health`, `/metrics`.
    pub addr: SocketAddr,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    pub http: pipeline::http::Limits,
    /// `SUPPLIER_DELAY_MS`: added before every answer (demos, tests); never
    /// past a request's deadline.
    pub delay: Duration,
    /// `SUPPLIER_FAILURE_RATE`: the share of requests answered with an error,
    /// 0.0 to 1.0.
    pub failure_rate: f64,
    /// `SUPPLIER_PREFETCH`: requests handled at once.
    pub prefetch: u16,
    /// `SUPPLIER_DEMO_CATALOG=1`: write the demo catalog at start-up if
    /// `catalog:<id>` does not exist.
    pub demo_catalog: bool,
}

impl SupplierConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let raw = var_or("SUPPLIER_ID", "");
        let id =
            SupplierId::parse(&raw).map_err(|e| ConfigError::new("SUPPLIER_ID", &raw, e.reason))?;
        let failure_rate: f64 = parse_or("SUPPLIER_FAILURE_RATE", 0.0)?;
        if !(0.0..=1.0).contains(&failure_rate) {
            return Err(ConfigError::new(
                "SUPPLIER_FAILURE_RATE",
                &failure_rate.to_string(),
                "must be a share from 0.0 to 1.0",
            ));
        }
        let prefetch: u16 = parse_or("SUPPLIER_PREFETCH", 64)?;
        if prefetch == 0 {
            return Err(ConfigError::new(
                "SUPPLIER_PREFETCH",
                "0",
                "must be at least 1",
            ));
        }
        let demo = var_or("SUPPLIER_DEMO_CATALOG", "0");
        let demo_catalog = match demo.as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" | "" => false,
            other => {
                return Err(ConfigError::new(
                    "SUPPLIER_DEMO_CATALOG",
                    other,
                    "expected 1 or 0",
                ));
            }
        };
        let mut broker = BrokerConfig::from_env(&format!("supplier-{id}"))?;
        broker.suppliers = vec![id.clone()];
        Ok(Self {
            addr: addr_or("SUPPLIER_ADDR", "127.0.0.1:8101")?,
            broker,
            redis: RedisConfig::from_env()?,
            http: pipeline::config::http_limits_from_env()?,
            delay: Duration::from_millis(parse_or("SUPPLIER_DELAY_MS", 0)?),
            failure_rate,
            prefetch,
            demo_catalog,
            id,
        })
    }
}
