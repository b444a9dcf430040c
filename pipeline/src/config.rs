//! Configuration, declared once: every knob is a `clap` argument with its
//! environment variable, its default and its help text, so `--help`, the
//! environment and `docs/configuration.md` (generated from these
//! declarations) cannot disagree.
//!
//! This module holds the option groups every service shares
//! ([`BrokerConfig`], [`RedisConfig`], [`WorkerConfig`]) and the value parsers
//! the services' own groups use. A value that does not parse fails the start
//! with clap's message naming the flag, its variable and what was expected;
//! a combination of values that cannot work is a [`ConfigError`].
//!
//! Secrets (the URLs that carry passwords) are typed: they never appear in
//! `Debug`, in `--help` (their values from the environment are hidden) or in
//! logs.
//!
//! A leaf of the crate: it depends on [`crate::domain`] alone.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use lapin::uri::AMQPUri;
use secrecy::{ExposeSecret, SecretString};

/// A combination of values that cannot work together.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &str, value: &str, reason: impl fmt::Display) -> Self {
        Self {
            var: var.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A positive whole number of milliseconds.
pub fn millis(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 (milliseconds)".into()),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(e) => Err(format!("expected whole milliseconds ({e})")),
    }
}

/// A whole number of milliseconds, zero allowed.
pub fn millis_or_zero(raw: &str) -> Result<Duration, String> {
    raw.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected whole milliseconds ({e})"))
}

/// A positive whole number of seconds.
pub fn secs(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 (seconds)".into()),
        Ok(s) => Ok(Duration::from_secs(s)),
        Err(e) => Err(format!("expected whole seconds ({e})")),
    }
}

/// A listen address such as `127.0.0.1:8080`.
pub fn listen_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim()
        .parse()
        .map_err(|e| format!("expected host:port ({e})"))
}

/// A whole number from `min` up: `at_least::<u16>(1)`.
pub fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
    T::Err: fmt::Display,
{
    move |raw: &str| number(raw, min, None)
}

/// A whole number from `min` to `max`.
pub fn between<T>(
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
    T::Err: fmt::Display,
{
    move |raw: &str| number(raw, min, Some(max))
}

fn number<T>(raw: &str, min: T, max: Option<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
    T::Err: fmt::Display,
{
    let v: T = raw.trim().parse().map_err(|e| format!("{e}"))?;
    match max {
        Some(max) if v < min || v > max => Err(format!("must be from {min} to {max}")),
        None if v < min => Err(format!("must be at least {min}")),
        _ => Ok(v),
    }
}

/// A name that may appear in queue names and Redis keys: letters, digits,
/// `.`, `_` and `-` (empty allowed).
pub fn name_chars(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("only letters, digits, '.', '_' and '-' are allowed".into());
    }
    Ok(raw.to_owned())
}

/// A value parser for a setting that holds a secret (a password in a URL, a
/// signing key): like `parse`, but its error names the setting and the
/// reason, never the value (clap's own message would quote it, and a
/// mistyped secret is still a secret).
pub fn secret<T, F>(parse: F) -> SecretParser<F>
where
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    SecretParser(parse)
}

/// See [`secret`].
#[derive(Clone)]
pub struct SecretParser<F>(F);

impl<T, F> clap::builder::TypedValueParser for SecretParser<F>
where
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map_or_else(|| "a secret setting".to_owned(), ToString::to_string);
        let fail = |reason: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {name} (not shown: it holds a secret): {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let raw = value.to_str().ok_or_else(|| fail("not UTF-8"))?;
        (self.0)(raw).map_err(|reason| fail(&reason))
    }
}

/// The defaults of an option group, as declared, whatever the environment
/// says (tests and other services' harnesses start from them).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    group::<T>(false).expect("every knob has a default")
}

/// An option group as a service would read it from this process's
/// environment (a tool that must see what the stack's services see).
pub fn from_env<T: Args + FromArgMatches>() -> Result<T, clap::Error> {
    group::<T>(true)
}

fn group<T: Args + FromArgMatches>(env: bool) -> Result<T, clap::Error> {
    #[derive(Parser)]
    struct Only<T: Args> {
        #[command(flatten)]
        inner: T,
    }
    let mut command = Only::<T>::command();
    if !env {
        command = command.mut_args(|a| a.env(None));
    }
    let matches = command.try_get_matches_from(["group"])?;
    T::from_arg_matches(&matches)
}

/// The broker cluster's nodes (`RABBITMQ_URLS`). Their URLs carry
/// credentials, so `Debug` shows hosts and ports only.
#[derive(Clone)]
pub struct BrokerNodes(Vec<AMQPUri>);

impl BrokerNodes {
    /// A comma-separated list of AMQP URLs; blanks are skipped.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let urls = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<AMQPUri>()
                    .map_err(|e| format!("not an AMQP URL: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err("no URL given".into());
        }
        Ok(Self(urls))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Node `index`, with its credentials: for connecting, never for logs.
    pub fn get(&self, index: usize) -> &AMQPUri {
        &self.0[index]
    }
}

impl std::ops::Index<usize> for BrokerNodes {
    type Output = AMQPUri;
    fn index(&self, index: usize) -> &AMQPUri {
        self.get(index)
    }
}

impl fmt::Debug for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|u| format!("{}:{}", u.authority.host, u.authority.port)),
            )
            .finish()
    }
}

pub const DEFAULT_RABBITMQ_URLS: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Where the broker cluster is and how to talk to it.
#[derive(Clone, Debug, Args)]
pub struct BrokerConfig {
    /// The broker cluster's nodes, comma-separated AMQP URLs, tried in order
    /// and rotated on failure.
    #[arg(id = "RABBITMQ_URLS", long = "rabbitmq-urls", env = "RABBITMQ_URLS", default_value = DEFAULT_RABBITMQ_URLS,
          value_parser = secret(BrokerNodes::parse), hide_env_values = true)]
    pub urls: BrokerNodes,
    /// AMQP heartbeat in seconds: a silent link is declared dead after about
    /// twice this.
    #[arg(id = "AMQP_HEARTBEAT_SECS", long = "amqp-heartbeat-secs", env = "AMQP_HEARTBEAT_SECS", default_value = "5", value_parser = secs)]
    pub heartbeat: Duration,
    /// How long one TCP+AMQP handshake to one node may take.
    #[arg(id = "AMQP_CONNECT_TIMEOUT_MS", long = "amqp-connect-timeout-ms", env = "AMQP_CONNECT_TIMEOUT_MS", default_value = "3000", value_parser = millis)]
    pub connect_timeout: Duration,
    /// How long a publish may wait for the broker's confirm.
    #[arg(id = "PUBLISH_CONFIRM_TIMEOUT_MS", long = "publish-confirm-timeout-ms", env = "PUBLISH_CONFIRM_TIMEOUT_MS", default_value = "5000", value_parser = millis)]
    pub confirm_timeout: Duration,
    /// Upper bound of the reconnect backoff between rounds over all nodes.
    #[arg(id = "AMQP_MAX_BACKOFF_MS", long = "amqp-max-backoff-ms", env = "AMQP_MAX_BACKOFF_MS", default_value = "5000", value_parser = millis)]
    pub max_backoff: Duration,
    /// Prefixed to every exchange and queue name (isolates tests and
    /// tenants): letters, digits, '.', '_' and '-'.
    #[arg(id = "TOPOLOGY_PREFIX", long = "topology-prefix", env = "TOPOLOGY_PREFIX", default_value = "", value_parser = name_chars)]
    pub topology_prefix: String,
    /// `x-delivery-limit` of the work queues: deliveries of one message
    /// before it is dead-lettered.
    #[arg(id = "DELIVERY_LIMIT", long = "delivery-limit", env = "DELIVERY_LIMIT", default_value = "5", value_parser = at_least::<u32>(1))]
    pub delivery_limit: u32,
    /// If set (seconds), queues are declared with `x-expires` and vanish
    /// after this long unused. For throwaway environments (the tests); leave
    /// unset in production.
    #[arg(id = "QUEUE_EXPIRES_SECS", long = "queue-expires-secs", env = "QUEUE_EXPIRES_SECS", value_parser = secs)]
    pub queue_expires: Option<Duration>,
    /// Shown in the broker's connection list (the service's name).
    #[arg(skip)]
    pub connection_name: String,
    /// Suppliers whose quote queues this service declares (see
    /// [`crate::amqp::Topology::with_suppliers`]); set by the gateway and
    /// the supplier, empty elsewhere.
    #[arg(skip)]
    pub suppliers: Vec<crate::domain::SupplierId>,
}

impl BrokerConfig {
    /// The same settings under another connection name.
    pub fn named(mut self, connection_name: &str) -> Self {
        self.connection_name = connection_name.to_owned();
        self
    }
}

/// A Redis URL (`redis://[:password@]host:port[/db]`); it may carry a
/// password, so it is a secret.
#[derive(Clone, Debug)]
pub struct RedisUrl(SecretString);

impl RedisUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if !(raw.starts_with("redis://")
            || raw.starts_with("rediss://")
            || raw.starts_with("unix://"))
        {
            return Err("expected redis://host:port[/db]".into());
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }

    /// The URL with its password: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Where Redis is and how long to wait for it.
#[derive(Clone, Debug, Args)]
pub struct RedisConfig {
    /// The Redis server.
    #[arg(id = "REDIS_URL", long = "redis-url", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379",
          value_parser = secret(RedisUrl::parse), hide_env_values = true)]
    pub url: RedisUrl,
    /// Bounds opening the connection, so a dead Redis turns into an error
    /// instead of a hang.
    #[arg(id = "REDIS_TIMEOUT_MS", long = "redis-timeout-ms", env = "REDIS_TIMEOUT_MS", default_value = "2000", value_parser = millis)]
    pub timeout: Duration,
    /// The longest wait for one reply. Generous on purpose: a reply taken as
    /// lost after a script ran makes the caller retry (harmlessly, every
    /// script recognises its own retry), but a short stall should not turn
    /// into errors at all.
    #[arg(id = "REDIS_RESPONSE_TIMEOUT_MS", long = "redis-response-timeout-ms", env = "REDIS_RESPONSE_TIMEOUT_MS", default_value = "5000", value_parser = millis)]
    pub response_timeout: Duration,
    /// Prefixed to every key (isolates tests and tenants).
    #[arg(
        id = "REDIS_KEY_PREFIX",
        long = "redis-key-prefix",
        env = "REDIS_KEY_PREFIX",
        default_value = ""
    )]
    pub key_prefix: String,
}

/// How a worker (order-processor, notifier) takes deliveries.
#[derive(Clone, Debug, Args)]
pub struct WorkerConfig {
    /// The most deliveries handed to the handler at once, and the most
    /// finished ones held back for one batched (`multiple`) ack.
    #[arg(id = "WORKER_BATCH", long = "worker-batch", env = "WORKER_BATCH", default_value = "32", value_parser = between::<usize>(1, 1024))]
    pub batch: usize,
    /// How long one delivery keeps retrying a transient failure (Redis down,
    /// no publish confirm) before it is put back on the queue, which counts
    /// against `DELIVERY_LIMIT`.
    #[arg(id = "TRANSIENT_RETRY_MS", long = "transient-retry-ms", env = "TRANSIENT_RETRY_MS", default_value = "10000", value_parser = millis)]
    pub transient_retry: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_comma_separated_url_list_and_skips_blanks() {
        let urls =
            BrokerNodes::parse("amqp://guest:guest@127.0.0.1:5672/%2f, amqp://127.0.0.1:5673/%2f,")
                .unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(urls.get(1).authority.port, 5673);
    }

    #[test]
    fn a_bad_url_is_refused_with_the_reason() {
        let err = BrokerNodes::parse("http://nope").unwrap_err();
        assert!(err.contains("not an AMQP URL"), "{err}");
        let err = BrokerNodes::parse(" , ").unwrap_err();
        assert!(err.contains("no URL"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let nodes = BrokerNodes::parse("amqp://user:hunter2@10.0.0.1:5672/%2f").unwrap();
        let redis = RedisUrl::parse("redis://:hunter2@10.0.0.1:6379").unwrap();
        let shown = format!("{nodes:?} {redis:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.1:5672"), "{shown}");
    }

    #[test]
    fn defaults_ignore_the_environment() {
        let broker: BrokerConfig = defaults();
        assert_eq!(broker.heartbeat, Duration::from_secs(5));
        assert_eq!(broker.delivery_limit, 5);
        assert!(broker.queue_expires.is_none());
        let worker: WorkerConfig = defaults();
        assert_eq!(worker.batch, 32);
    }

    #[test]
    fn parsers_name_what_they_expect() {
        assert!(millis("0").unwrap_err().contains("at least 1"));
        assert_eq!(millis_or_zero("0").unwrap(), Duration::ZERO);
        assert!(secs("x").unwrap_err().contains("whole seconds"));
        assert!(between::<usize>(1, 1024)("2000").is_err());
        assert!(at_least::<u16>(1)("0").is_err());
        assert!(name_chars("a b").is_err());
        assert!(listen_addr("nope").is_err());
    }

    #[test]
    fn a_bad_secret_setting_is_named_but_never_echoed() {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            redis: RedisConfig,
            #[command(flatten)]
            broker: BrokerConfig,
        }
        for args in [
            ["--redis-url", "mysql://root:hunter2@10.0.0.1:6379"],
            ["--rabbitmq-urls", "http://guest:hunter2@10.0.0.1:5672"],
        ] {
            let err = Only::try_parse_from(std::iter::once("x").chain(args))
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(args[0]), "{err}");
            assert!(
                err.contains("expected") || err.contains("not an AMQP URL"),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
