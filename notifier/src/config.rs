//! The notifier's configuration, read from the environment at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use pipeline::config::{
    BrokerConfig, ConfigError, RedisConfig, addr_or, millis_or, parse_or, var_or,
};

#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// `NOTIFIER_ADDR`: `/health` and `/metrics`.
    pub addr: SocketAddr,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// `HTTP_*`: the listener's timeouts and connection cap.
    pub http: pipeline::http::Limits,
    /// `PREFETCH`: deliveries handled at once.
    pub prefetch: u16,
    /// `WORKER_BATCH`: deliveries handed to the handler at once (and acked
    /// with one `multiple` ack).
    pub batch: usize,
    /// `TRANSIENT_RETRY_MS`: how long a Redis failure is retried before the
    /// delivery is put back on the queue.
    pub transient_retry: Duration,
    pub sink: SinkConfig,
    /// `NOTIFY_CLAIM_MS`: how long one instance holds a notification while
    /// sending it; a crashed holder's claim expires after this.
    pub claim: Duration,
    /// `HISTORY_URLS`, `HISTORY_TIMEOUT_MS`: asked whether an order without
    /// any Redis record was notified long ago (`None`: no history).
    pub history: Option<pipeline::history::HistoryClient>,
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    Log,
    Webhook {
        url: String,
        timeout: Duration,
        tries: u32,
    },
}

impl NotifierConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let prefetch: u16 = parse_or("PREFETCH", 64)?;
        if prefetch == 0 {
            return Err(ConfigError::new("PREFETCH", "0", "must be at least 1"));
        }
        let sink = match var_or("NOTIFY_SINK", "log").as_str() {
            "log" => SinkConfig::Log,
            "webhook" => {
                let url = var_or("WEBHOOK_URL", "");
                if !url.starts_with("http://") {
                    return Err(ConfigError::new(
                        "WEBHOOK_URL",
                        &url,
                        "NOTIFY_SINK=webhook needs an http:// URL (for HTTPS, put a TLS-terminating proxy in front)",
                    ));
                }
                let tries: u32 = parse_or("WEBHOOK_TRIES", 4)?;
                if tries == 0 {
                    return Err(ConfigError::new("WEBHOOK_TRIES", "0", "must be at least 1"));
                }
                SinkConfig::Webhook {
                    url,
                    timeout: millis_or("WEBHOOK_TIMEOUT_MS", 5_000)?,
                    tries,
                }
            }
            other => {
                return Err(ConfigError::new(
                    "NOTIFY_SINK",
                    other,
                    "expected \"log\" or \"webhook\"",
                ));
            }
        };
        let claim = millis_or("NOTIFY_CLAIM_MS", 60_000)?;
        if let SinkConfig::Webhook { timeout, tries, .. } = &sink {
            // Every try may take the timeout plus up to 2 s of backoff.
            let worst = (*timeout + Duration::from_secs(2)) * *tries;
            if claim <= worst {
                return Err(ConfigError::new(
                    "NOTIFY_CLAIM_MS",
                    &claim.as_millis().to_string(),
                    format!(
                        "must exceed the longest send, (WEBHOOK_TIMEOUT_MS + 2000) x WEBHOOK_TRIES = {} ms, or a slow send could be repeated by another instance",
                        worst.as_millis()
                    ),
                ));
            }
        }
        Ok(Self {
            addr: addr_or("NOTIFIER_ADDR", "127.0.0.1:9102")?,
            broker: BrokerConfig::from_env("notifier")?,
            redis: RedisConfig::from_env()?,
            http: pipeline::config::http_limits_from_env()?,
            prefetch,
            batch: pipeline::config::worker_batch()?,
            transient_retry: millis_or("TRANSIENT_RETRY_MS", 10_000)?,
            sink,
            claim,
            history: pipeline::history::HistoryClient::from_env()?,
        })
    }
}
