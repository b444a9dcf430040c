//! Configuration from the environment (12-factor), shared by every service.
//!
//! Each knob is read once at start-up; a value that does not parse fails the start
//! with a message naming the variable, the value and what was expected.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &str, value: &str, reason: impl Display) -> Self {
        Self {
            var: var.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Reads `name`, or `default` when it is unset or empty.
pub fn var_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => default.to_owned(),
    }
}

/// Reads and parses `name`, or returns `default` when it is unset or empty.
pub fn parse_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e| ConfigError::new(name, &v, e))
        }
        _ => Ok(default),
    }
}

/// Reads a positive whole number of milliseconds.
pub fn millis_or(name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
    let ms: u64 = parse_or(name, default_ms)?;
    if ms == 0 {
        return Err(ConfigError::new(
            name,
            "0",
            "must be at least 1 (milliseconds)",
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// Reads a positive whole number of seconds.
pub fn secs_or(name: &str, default_s: u64) -> Result<Duration, ConfigError> {
    let s: u64 = parse_or(name, default_s)?;
    if s == 0 {
        return Err(ConfigError::new(name, "0", "must be at least 1 (seconds)"));
    }
    Ok(Duration::from_secs(s))
}

/// Where the broker cluster is and how to talk to it.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The cluster's nodes, tried in order and rotated on failure.
    pub urls: Vec<AMQPUri>,
    /// AMQP heartbeat: a silent link is declared dead after about twice this.
    pub heartbeat: Duration,
    /// How long one TCP+AMQP handshake to one node may take.
    pub connect_timeout: Duration,
    /// How long a publish may wait for the broker's confirm.
    pub confirm_timeout: Duration,
    /// Upper bound of the reconnect backoff between rounds over all nodes.
    pub max_backoff: Duration,
    /// Prefixed to every exchange and queue name (isolates tests and tenants).
    pub topology_prefix: String,
    /// `x-delivery-limit` of the work queues: deliveries before a message is
    /// dead-lettered.
    pub delivery_limit: u32,
    /// `QUEUE_EXPIRES_SECS`: if set, queues are declared with `x-expires` and
    /// vanish after this long unused. For throwaway environments (the tests);
    /// leave unset in production.
    pub queue_expires: Option<Duration>,
    /// Shown in the broker's connection list.
    pub connection_name: String,
    /// Suppliers whose quote queues this service declares (see
    /// [`crate::amqp::Topology::with_suppliers`]); set by the gateway and
    /// the supplier, empty elsewhere.
    pub suppliers: Vec<crate::domain::SupplierId>,
}

pub const DEFAULT_RABBITMQ_URLS: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl BrokerConfig {
    pub fn from_env(connection_name: &str) -> Result<Self, ConfigError> {
        let raw = var_or("RABBITMQ_URLS", DEFAULT_RABBITMQ_URLS);
        Ok(Self {
            urls: parse_urls("RABBITMQ_URLS", &raw)?,
            heartbeat: secs_or("AMQP_HEARTBEAT_SECS", 5)?,
            connect_timeout: millis_or("AMQP_CONNECT_TIMEOUT_MS", 3_000)?,
            confirm_timeout: millis_or("PUBLISH_CONFIRM_TIMEOUT_MS", 5_000)?,
            max_backoff: millis_or("AMQP_MAX_BACKOFF_MS", 5_000)?,
            topology_prefix: topology_prefix_from_env()?,
            delivery_limit: parse_or("DELIVERY_LIMIT", 5)?,
            queue_expires: match parse_or::<u64>("QUEUE_EXPIRES_SECS", 0)? {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            connection_name: connection_name.to_owned(),
            suppliers: Vec::new(),
        })
    }
}

/// `TOPOLOGY_PREFIX`: letters, digits, `.`, `_`, `-` only.
fn topology_prefix_from_env() -> Result<String, ConfigError> {
    let prefix = var_or("TOPOLOGY_PREFIX", "");
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ConfigError::new(
            "TOPOLOGY_PREFIX",
            &prefix,
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(prefix)
}

/// Parses a comma-separated list of AMQP URLs.
pub fn parse_urls(var: &str, raw: &str) -> Result<Vec<AMQPUri>, ConfigError> {
    let urls = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<AMQPUri>()
                .map_err(|e| ConfigError::new(var, s, format!("not an AMQP URL: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::new(var, raw, "no URL given"));
    }
    Ok(urls)
}

/// Where Redis is and how long to wait for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub url: String,
    /// `REDIS_TIMEOUT_MS`: bounds opening the connection, so a dead Redis
    /// turns into an error instead of a hang.
    pub timeout: Duration,
    /// `REDIS_RESPONSE_TIMEOUT_MS`: the longest wait for one reply. Generous on
    /// purpose: a reply taken as lost after a script ran makes the caller retry
    /// (harmlessly, every script recognises its own retry), but a short stall
    /// should not turn into errors at all.
    pub response_timeout: Duration,
    /// Prefixed to every key (isolates tests and tenants).
    pub key_prefix: String,
}

impl RedisConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = var_or("REDIS_URL", "redis://127.0.0.1:6379");
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            return Err(ConfigError::new(
                "REDIS_URL",
                &url,
                "expected redis://host:port[/db]",
            ));
        }
        Ok(Self {
            url,
            timeout: millis_or("REDIS_TIMEOUT_MS", 2_000)?,
            response_timeout: millis_or("REDIS_RESPONSE_TIMEOUT_MS", 5_000)?,
            key_prefix: var_or("REDIS_KEY_PREFIX", ""),
        })
    }
}

/// `WORKER_BATCH`: the most deliveries a worker (order-processor, notifier)
/// hands its handler at once, and the most finished ones it holds back for
/// one batched ack (default 32; see [`crate::amqp::consume`]).
pub fn worker_batch() -> Result<usize, ConfigError> {
    let batch: usize = parse_or("WORKER_BATCH", 32)?;
    if batch == 0 || batch > 1024 {
        return Err(ConfigError::new(
            "WORKER_BATCH",
            &batch.to_string(),
            "must be between 1 and 1024",
        ));
    }
    Ok(batch)
}

/// The listener limits every service shares (see [`crate::http::Limits`]):
/// `HTTP_HEADER_TIMEOUT_MS` (10 s), `HTTP_BODY_TIMEOUT_MS` (10 s),
/// `HTTP_IDLE_TIMEOUT_MS` (30 s), `HTTP_MAX_CONNECTIONS` (1024).
pub fn http_limits_from_env() -> Result<crate::http::Limits, ConfigError> {
    let max_connections: usize = parse_or("HTTP_MAX_CONNECTIONS", 1024)?;
    if max_connections == 0 {
        return Err(ConfigError::new(
            "HTTP_MAX_CONNECTIONS",
            "0",
            "must be at least 1",
        ));
    }
    Ok(crate::http::Limits {
        header_timeout: millis_or("HTTP_HEADER_TIMEOUT_MS", 10_000)?,
        body_timeout: millis_or("HTTP_BODY_TIMEOUT_MS", 10_000)?,
        idle_timeout: millis_or("HTTP_IDLE_TIMEOUT_MS", 30_000)?,
        max_connections,
    })
}

/// Reads a listen address such as `127.0.0.1:8080`.
pub fn addr_or(name: &str, default: &str) -> Result<std::net::SocketAddr, ConfigError> {
    let raw = var_or(name, default);
    raw.parse()
        .map_err(|e| ConfigError::new(name, &raw, format!("expected host:port ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_comma_separated_url_list_and_skips_blanks() {
        let urls = parse_urls(
            "RABBITMQ_URLS",
            "amqp://guest:guest@127.0.0.1:5672/%2f, amqp://127.0.0.1:5673/%2f,",
        )
        .unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(urls[1].authority.port, 5673);
    }

    #[test]
    fn a_bad_url_names_the_variable() {
        let err = parse_urls("RABBITMQ_URLS", "http://nope").unwrap_err();
        assert!(err.to_string().contains("RABBITMQ_URLS"), "{err}");
        let err = parse_urls("RABBITMQ_URLS", " , ").unwrap_err();
        assert!(err.to_string().contains("no URL"), "{err}");
    }
}
