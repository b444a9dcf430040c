//! order-processor: reserves stock exactly once per order.
//!
//! Consumes `orders.queue` (shared consumer with failover, manual acks,
//! `PREFETCH` deliveries at once), decides each order with one atomic Redis
//! script, publishes `order.created` / `order.rejected` with a confirm, and
//! only then acks. See `ARCHITECTURE.md` for the invariants.

pub mod config;
pub mod process;

use std::net::SocketAddr;

use anyhow::Context;
use pipeline::amqp::ConsumeOptions;
use pipeline::service::Base;
use pipeline::shutdown::CancellationToken;

pub use config::ProcessorConfig;
pub use process::{AfterCommit, Handler};

/// A processor that is connected and bound, ready to run.
pub struct Processor {
    base: Base,
    handler: Handler,
    prefetch: u16,
    batch: usize,
}

impl Processor {
    pub async fn build(
        config: ProcessorConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::build_with(config, shutdown, None).await
    }

    /// Like [`Processor::build`], with a hook between commit and publish.
    pub async fn build_with(
        config: ProcessorConfig,
        shutdown: CancellationToken,
        after_commit: Option<AfterCommit>,
    ) -> anyhow::Result<Self> {
        let base = Base::start(
            "order-processor",
            config.addr,
            config.broker.clone(),
            &config.redis,
            config.http.clone(),
            shutdown.clone(),
        )
        .await
        .context("starting order-processor (PROCESSOR_ADDR)")?;
        let handler = Handler {
            broker: base.broker.clone(),
            pool: base.pool.clone(),
            keys: base.keys.clone(),
            transient_retry: config.transient_retry,
            shutdown,
            after_commit,
            history: config.history.clone(),
        };
        Ok(Self {
            base,
            handler,
            prefetch: config.prefetch,
            batch: config.batch,
        })
    }

    /// The processor's broker handle (tests break its link on purpose).
    pub fn broker(&self) -> &pipeline::amqp::Broker {
        &self.base.broker
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// Consumes and serves until shutdown; in-flight deliveries finish and are
    /// acked before the broker link closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let options = ConsumeOptions {
            queue: self.base.broker.topology().orders_queue(),
            prefetch: self.prefetch,
            batch: self.batch,
            tag: format!("order-processor-{}", std::process::id()),
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
