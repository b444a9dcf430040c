//! The Redis connection every service shares.
//!
//! One multiplexed connection per process ([`Redis`], cheap to clone): every
//! task's commands are pipelined onto it, so there is no checkout, no pool of
//! idle sockets and no health-check `PING` in front of each command (a pool's
//! recycle check was half of all round trips per order). The socket has
//! `TCP_NODELAY` set, so a small command is sent at once instead of waiting
//! for the previous one's ACK, and `TCP_USER_TIMEOUT` (the reply timeout), so
//! a connection to a host that vanished fails and is re-made.
//!
//! Every wait is bounded: connecting times out (`REDIS_TIMEOUT_MS`), and so
//! does every reply (`REDIS_RESPONSE_TIMEOUT_MS`, default 5 s rather than the
//! client library's 500 ms: a script that ran during a short Redis stall must
//! not be taken as failed). A dead Redis is an error a handler can turn into a
//! 503, never a request that hangs. The connection is made on first use; when
//! it breaks, the command in flight fails and the next one reconnects (the
//! library's connection manager), so a restarted Redis is picked up without
//! restarting the service. A caller dropped mid-command does not desync it.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;

use crate::config::RedisConfig;

/// The shared Redis connection; clones share it.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
}

impl Redis {
    /// A handle to run commands on (`&mut conn`); it shares the one connection.
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }
}

/// Sets up the connection; it is opened lazily, on first use.
pub fn connect(cfg: &RedisConfig) -> anyhow::Result<Redis> {
    let info = redis::IntoConnectionInfo::into_connection_info(cfg.url.expose())?;
    let tcp = TcpSettings::default().set_nodelay(true);
    // A half-open socket (the host or the network gone without a FIN) would
    // otherwise time every command out for as long as the kernel keeps
    // retransmitting (~15 minutes): with TCP_USER_TIMEOUT unacknowledged
    // data fails the connection, and the next command reconnects. (Redis
    // stalling is not this: the kernel still ACKs.)
    #[cfg(target_os = "linux")]
    let tcp = tcp.set_user_timeout(cfg.response_timeout);
    let info = info.set_tcp_settings(tcp);
    let client = redis::Client::open(info)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.timeout))
        .set_response_timeout(Some(cfg.response_timeout))
        // One connection attempt per failure (bounded by the timeout above);
        // the next command after a failed attempt tries again.
        .set_number_of_retries(0);
    let manager = ConnectionManager::new_lazy_with_config(client, config)?;
    Ok(Redis { manager })
}

/// `PING`, for health checks.
pub async fn ping(redis: &Redis) -> anyhow::Result<()> {
    let mut conn = redis.connection();
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}
