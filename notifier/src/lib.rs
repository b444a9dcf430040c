//! notifier: notifies the customer once per reserved order.
//!
//! Consumes `notifier.queue` (shared consumer with failover, manual acks,
//! `PREFETCH` at once); for each `order.created` event claims the
//! notification, sends it through the configured sink, and only then records
//! it as sent. See `notify.rs` for the flow and `ARCHITECTURE.md` for the
//! invariants.

pub mod config;
pub mod notify;
pub mod sink;

use std::net::SocketAddr;

use anyhow::Context;
use pipeline::amqp::ConsumeOptions;
use pipeline::service::Base;
use pipeline::shutdown::CancellationToken;

pub use config::{NotifierConfig, SinkConfig};
pub use notify::{AfterSend, Handler};
pub use sink::{Notification, Sink, Webhook};

/// A notifier that is connected and bound, ready to run.
pub struct Notifier {
    base: Base,
    handler: Handler,
    prefetch: u16,
    batch: usize,
}

impl Notifier {
    pub async fn build(
        config: NotifierConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::build_with(config, shutdown, None).await
    }

    /// Like [`Notifier::build`], with a hook between send and record.
    pub async fn build_with(
        config: NotifierConfig,
        shutdown: CancellationToken,
        after_send: Option<AfterSend>,
    ) -> anyhow::Result<Self> {
        let sink = match &config.sink {
            SinkConfig::Log => Sink::Log,
            SinkConfig::Webhook {
                url,
                timeout,
                tries,
            } => Sink::Webhook(Webhook::new(url.clone(), *timeout, *tries)?),
        };
        let base = Base::start(
            "notifier",
            config.addr,
            config.broker.clone(),
            &config.redis,
            config.http.clone(),
            shutdown.clone(),
        )
        .await
        .context("starting notifier (NOTIFIER_ADDR)")?;
        let handler = Handler {
            broker: base.broker.clone(),
            history: config.history.clone(),
            pool: base.pool.clone(),
            keys: base.keys.clone(),
            sink,
            claim: config.claim,
            transient_retry: config.transient_retry,
            shutdown,
            after_send,
        };
        Ok(Self {
            base,
            handler,
            prefetch: config.prefetch,
            batch: config.batch,
        })
    }

    pub fn broker(&self) -> &pipeline::amqp::Broker {
        &self.base.broker
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// Consumes and serves until shutdown; in-flight notifications finish and
    /// are settled before the broker link closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let options = ConsumeOptions {
            queue: self.base.broker.topology().notifier_queue(),
            prefetch: self.prefetch,
            batch: self.batch,
            tag: format!("notifier-{}", std::process::id()),
        };
        let handler = self.handler;
        self.base
            .run_worker(options, move |batch| {
                let handler = handler.clone();
                async move { handler.handle_batch(batch).await }
            })
            .await
    }
}
