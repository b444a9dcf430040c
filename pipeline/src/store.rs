//! The Redis connection pool.
//!
//! Every wait is bounded: a pool checkout, a new connection and a recycle each
//! time out (`REDIS_TIMEOUT_MS`), and so does every reply
//! (`REDIS_RESPONSE_TIMEOUT_MS`, default 5 s rather than the client library's
//! 500 ms: a script that ran during a short Redis stall must not be taken as
//! failed). A dead Redis is an error a handler can turn into a 503, never a
//! request that hangs. The pooled connections are multiplexed, so a caller
//! that is dropped mid-command does not desync them.

use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::config::RedisConfig;

/// Makes and checks pooled connections with the configured timeouts.
pub struct Manager {
    client: redis::Client,
    config: AsyncConnectionConfig,
    pings: AtomicUsize,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<redis::RedisError> {
        let n = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = redis::cmd("PING").arg(&n).query_async(conn).await?;
        if echoed == n {
            Ok(())
        } else {
            Err(managed::RecycleError::message("unexpected PING reply"))
        }
    }
}

/// A pool of multiplexed Redis connections.
pub type Pool = managed::Pool<Manager>;
/// A connection checked out of the [`Pool`]; `&mut *conn` runs commands.
pub type Connection = managed::Object<Manager>;

/// Builds the pool; connections are made lazily, on first use.
pub fn create_pool(cfg: &RedisConfig) -> anyhow::Result<Pool> {
    let client = redis::Client::open(cfg.url.as_str())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.timeout))
        .set_response_timeout(Some(cfg.response_timeout));
    let manager = Manager {
        client,
        config,
        pings: AtomicUsize::new(0),
    };
    Ok(Pool::builder(manager)
        .max_size(cfg.pool_size)
        .runtime(deadpool::Runtime::Tokio1)
        .timeouts(managed::Timeouts {
            wait: Some(cfg.timeout),
            create: Some(cfg.timeout),
            recycle: Some(cfg.timeout),
        })
        .build()?)
}

/// `PING`, for health checks.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut *conn).await?;
    Ok(())
}
