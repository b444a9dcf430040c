//! The Redis connection pool.
//!
//! Every wait is bounded: a pool checkout, a new connection and a recycle each
//! time out (`REDIS_TIMEOUT_MS`), so a dead Redis is an error a handler can turn
//! into a 503, never a request that hangs. The pooled connections are
//! multiplexed, so a caller that is dropped mid-command does not desync them.

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::config::RedisConfig;

pub use deadpool_redis::Connection;

/// Builds the pool; connections are made lazily, on first use.
pub fn create_pool(cfg: &RedisConfig) -> anyhow::Result<Pool> {
    let mut pool_cfg = PoolConfig::new(cfg.pool_size);
    pool_cfg.timeouts = Timeouts {
        wait: Some(cfg.timeout),
        create: Some(cfg.timeout),
        recycle: Some(cfg.timeout),
    };
    let mut config = Config::from_url(cfg.url.clone());
    config.pool = Some(pool_cfg);
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

/// `PING`, for health checks.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut *conn).await?;
    Ok(())
}
