//! dashboard: shows the pipeline live.
//!
//! This first version joins the pipeline's topology (declaring it, so orders
//! published before any worker runs are kept) and serves `/`, `/health` and
//! `/metrics` on `DASHBOARD_ADDR` (default `127.0.0.1:8090`).

use pipeline::config::{BrokerConfig, RedisConfig, addr_or};
use pipeline::service::Base;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pipeline::telemetry::init("dashboard")?;
    let addr = addr_or("DASHBOARD_ADDR", "127.0.0.1:8090")?;
    let broker = BrokerConfig::from_env("dashboard")?;
    let redis = RedisConfig::from_env()?;
    let shutdown = pipeline::shutdown::on_signal();
    let base = Base::start("dashboard", addr, broker, &redis, shutdown).await?;
    let router = base.ops_router();
    base.serve(router).await
}
