//! notifier: notifies the customer once per reserved order.
//!
//! This first version joins the pipeline's topology (declaring it, so orders
//! published before any worker runs are kept) and serves `/`, `/health` and
//! `/metrics` on `NOTIFIER_ADDR` (default `127.0.0.1:9102`).

use pipeline::config::{BrokerConfig, RedisConfig, addr_or};
use pipeline::service::Base;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pipeline::telemetry::init("notifier")?;
    let addr = addr_or("NOTIFIER_ADDR", "127.0.0.1:9102")?;
    let broker = BrokerConfig::from_env("notifier")?;
    let redis = RedisConfig::from_env()?;
    let shutdown = pipeline::shutdown::on_signal();
    let base = Base::start("notifier", addr, broker, &redis, shutdown).await?;
    let router = base.ops_router();
    base.serve(router).await
}
