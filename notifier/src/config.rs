//! The notifier's configuration: its command line and environment.

use std::time::Duration;

use clap::{Parser, Subcommand};
use pipeline::config::{ConfigError, WorkerConfig, at_least, millis, secret};
use pipeline::history::HistoryClientConfig;
use pipeline::service::{ServiceCli, ServiceConfig};
use pipeline::telemetry::LogConfig;

use crate::signature::WebhookSecrets;

/// notifier: tells the customer once per reserved order.
#[derive(Debug, Parser)]
#[command(name = "notifier", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: NotifierConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Move parked notifications from notifier.dlq back to notifier.queue
    /// (after fixing what parked them).
    ReplayDlq(pipeline::amqp::replay::ReplayArgs),
    /// Print a fresh signing secret for WEBHOOK_SECRETS (`whsec_` and 256
    /// random bits in base64), alone on stdout.
    NewWebhookSecret,
}

impl ServiceCli for Cli {
    const LISTEN: (&'static str, &'static str) = ("NOTIFIER_ADDR", "127.0.0.1:9102");

    fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate()
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct NotifierConfig {
    #[command(flatten)]
    pub service: ServiceConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Deliveries of notifier.queue in flight at once (AMQP prefetch).
    #[arg(id = "PREFETCH", long = "prefetch", env = "PREFETCH", default_value = "64", value_parser = at_least::<u16>(1))]
    pub prefetch: u16,
    #[command(flatten)]
    pub sink: SinkConfig,
    /// How long one instance holds a notification while sending it; a
    /// crashed holder's claim expires after this. Must exceed the longest
    /// send, (WEBHOOK_TIMEOUT_MS + 2000) x WEBHOOK_TRIES.
    #[arg(id = "NOTIFY_CLAIM_MS", long = "notify-claim-ms", env = "NOTIFY_CLAIM_MS", default_value = "60000", value_parser = millis)]
    pub claim: Duration,
    /// Asked whether an order without any Redis record was notified long ago.
    #[command(flatten)]
    pub history: HistoryClientConfig,
}

/// Where notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// A log line per notification.
    Log,
    /// An HTTP POST per notification to `WEBHOOK_URL`.
    Webhook,
}

/// Where notifications go and, for a webhook, how it is called.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkConfig {
    /// `log` or `webhook`.
    #[arg(
        id = "NOTIFY_SINK",
        long = "notify-sink",
        env = "NOTIFY_SINK",
        default_value = "log",
        value_enum
    )]
    pub kind: SinkKind,
    /// The receiver, an `http://` URL (for HTTPS, put a TLS-terminating
    /// proxy in front); required with `NOTIFY_SINK=webhook`.
    #[arg(id = "WEBHOOK_URL", long = "webhook-url", env = "WEBHOOK_URL")]
    pub url: Option<String>,
    /// Bounds one webhook call.
    #[arg(id = "WEBHOOK_TIMEOUT_MS", long = "webhook-timeout-ms", env = "WEBHOOK_TIMEOUT_MS", default_value = "5000", value_parser = millis)]
    pub timeout: Duration,
    /// Calls per notification at most (timeouts and 5xx are retried with
    /// backoff; a 4xx is not).
    #[arg(id = "WEBHOOK_TRIES", long = "webhook-tries", env = "WEBHOOK_TRIES", default_value = "4", value_parser = at_least::<u32>(1))]
    pub tries: u32,
    /// The keys webhook calls are signed with (Standard Webhooks): one
    /// `whsec_<base64>` secret, or two, comma-separated, while rotating (the
    /// new one first; every call then carries both signatures). Required
    /// with `NOTIFY_SINK=webhook`.
    #[arg(id = "WEBHOOK_SECRETS", long = "webhook-secrets", env = "WEBHOOK_SECRETS", hide_env_values = true, value_parser = secret(WebhookSecrets::parse))]
    pub secrets: Option<WebhookSecrets>,
}

impl SinkConfig {
    /// A log line per notification.
    pub fn log() -> Self {
        pipeline::config::defaults()
    }

    /// A webhook at `url`, its calls signed with `secrets`.
    pub fn webhook(url: String, timeout: Duration, tries: u32, secrets: WebhookSecrets) -> Self {
        Self {
            kind: SinkKind::Webhook,
            url: Some(url),
            timeout,
            tries,
            secrets: Some(secrets),
        }
    }
}

impl NotifierConfig {
    /// What no single value can say: a webhook sink has an http:// URL, and
    /// a claim outlasts the longest send.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sink.kind != SinkKind::Webhook {
            return Ok(());
        }
        let url = self.sink.url.as_deref().unwrap_or("");
        if !url.starts_with("http://") {
            return Err(ConfigError::new(
                "WEBHOOK_URL",
                url,
                "NOTIFY_SINK=webhook needs an http:// URL (for HTTPS, put a TLS-terminating proxy in front)",
            ));
        }
        if self.sink.secrets.is_none() {
            return Err(ConfigError::new(
                "WEBHOOK_SECRETS",
                "",
                "NOTIFY_SINK=webhook needs a signing secret (whsec_<base64>, e.g. from `notifier new-webhook-secret`), so receivers can tell our calls from forgeries",
            ));
        }
        // Every try may take the timeout plus up to 2 s of backoff.
        let worst = (self.sink.timeout + Duration::from_secs(2)) * self.sink.tries;
        if self.claim <= worst {
            return Err(ConfigError::new(
                "NOTIFY_CLAIM_MS",
                &self.claim.as_millis().to_string(),
                format!(
                    "must exceed the longest send, (WEBHOOK_TIMEOUT_MS + 2000) x WEBHOOK_TRIES = {} ms, or a slow send could be repeated by another instance",
                    worst.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(std::iter::once("notifier").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.validate().map_err(|e| e.to_string())?;
        Ok(cli)
    }

    #[test]
    fn a_webhook_sink_needs_a_signing_secret() {
        let hook = [
            "--notify-sink",
            "webhook",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
        ];
        let err = parse(&hook).unwrap_err();
        assert!(err.contains("WEBHOOK_SECRETS"), "{err}");
        let secret = WebhookSecrets::generate();
        let cli = parse(&[&hook[..], &["--webhook-secrets", &secret]].concat()).unwrap();
        let debug = format!("{:?}", cli.config.sink);
        assert!(!debug.contains(&secret[6..]), "{debug}");
        // A malformed secret is refused by name, without echoing it.
        let err =
            parse(&[&hook[..], &["--webhook-secrets", "whsec_c2hvcnQ="]].concat()).unwrap_err();
        assert!(
            err.contains("--webhook-secrets") && err.contains("at least 16"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ"), "{err}");
    }
}
