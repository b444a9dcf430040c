//! notifier: notifies the customer once per reserved order.
//!
//! Consumes `notifier.queue` (shared consumer with failover, manual acks,
//! `PREFETCH` at once); for each `order.created` event claims the
//! notification, sends it through the configured sink, and only then records
//! it as sent. See `notify.rs` for the flow and `ARCHITECTURE.md` for the
//! invariants.
//!
//! Depends on `pipeline` only: no other service crate (it talks to them over
//! the broker).

pub mod config;
pub mod notify;
pub mod signature;
pub mod sink;

use pipeline::amqp::{Delivery, Disposition, Topology};
use pipeline::service::{Base, ServiceConfig, Worker, WorkerService};

pub use config::{NotifierConfig, SinkConfig, SinkKind};
pub use notify::{AfterSend, Handler};
pub use sink::{Notification, Sink, Webhook};

/// A notifier: its handler in the one worker shell.
pub type Notifier = WorkerService<Handler>;

impl Worker for Handler {
    const NAME: &'static str = "notifier";
    type Config = NotifierConfig;
    type Hook = AfterSend;

    fn service(config: &NotifierConfig) -> &ServiceConfig {
        &config.service
    }

    fn consume(config: &NotifierConfig) -> (u16, usize) {
        (config.prefetch, config.worker.batch)
    }

    fn queue(topology: &Topology) -> String {
        topology.notifier_queue()
    }

    fn new(
        base: &Base,
        config: NotifierConfig,
        after_send: Option<AfterSend>,
    ) -> anyhow::Result<Self> {
        notify::describe_metrics();
        let sink = match config.sink.kind {
            SinkKind::Log => Sink::Log,
            SinkKind::Webhook => Sink::Webhook(Webhook::new(
                config.sink.url.clone().unwrap_or_default(),
                config.sink.timeout,
                config.sink.tries,
                config
                    .sink
                    .secrets
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("a webhook sink needs WEBHOOK_SECRETS"))?,
            )?),
        };
        Ok(Handler {
            broker: base.broker.clone(),
            history: config.history.client(),
            pool: base.pool.clone(),
            keys: base.keys.clone(),
            sink,
            claim: config.claim,
            transient_retry: config.worker.transient_retry,
            shutdown: base.shutdown.clone(),
            after_send,
        })
    }

    fn handle(&self, batch: Vec<Delivery>) -> impl Future<Output = Vec<Disposition>> + Send {
        self.handle_batch(batch)
    }
}
