//! order-processor: reserves stock exactly once per order.
//!
//! This first version joins the pipeline's topology (declaring it, so orders
//! published before any worker runs are kept) and serves `/`, `/health` and
//! `/metrics` on `PROCESSOR_ADDR` (default `127.0.0.1:9101`).

use pipeline::config::{BrokerConfig, RedisConfig, addr_or};
use pipeline::service::Base;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pipeline::telemetry::init("order-processor")?;
    let addr = addr_or("PROCESSOR_ADDR", "127.0.0.1:9101")?;
    let broker = BrokerConfig::from_env("order-processor")?;
    let redis = RedisConfig::from_env()?;
    let shutdown = pipeline::shutdown::on_signal();
    let base = Base::start("order-processor", addr, broker, &redis, shutdown).await?;
    let router = base.ops_router();
    base.serve(router).await
}
