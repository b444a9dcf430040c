//! order-processor: reserves stock exactly once per order.
//!
//! Consumes `orders.queue` (shared consumer with failover, manual acks,
//! `PREFETCH` deliveries at once), decides each order with one atomic Redis
//! script, publishes `order.created` / `order.rejected` with a confirm, and
//! only then acks. See `ARCHITECTURE.md` for the invariants.
//!
//! Depends on `pipeline` only: no other service crate (it talks to them over
//! the broker).

pub mod config;
pub mod process;

use pipeline::amqp::{Delivery, Disposition, Topology};
use pipeline::service::{Base, ServiceConfig, Worker, WorkerService};

pub use config::ProcessorConfig;
pub use process::{AfterCommit, Handler};

/// A processor: its handler in the one worker shell.
pub type Processor = WorkerService<Handler>;

impl Worker for Handler {
    const NAME: &'static str = "order-processor";
    type Config = ProcessorConfig;
    type Hook = AfterCommit;

    fn service(config: &ProcessorConfig) -> &ServiceConfig {
        &config.service
    }

    fn consume(config: &ProcessorConfig) -> (u16, usize) {
        (config.prefetch, config.worker.batch)
    }

    fn queue(topology: &Topology) -> String {
        topology.orders_queue()
    }

    fn new(
        base: &Base,
        config: ProcessorConfig,
        after_commit: Option<AfterCommit>,
    ) -> anyhow::Result<Self> {
        process::describe_metrics();
        Ok(Handler {
            broker: base.broker.clone(),
            pool: base.pool.clone(),
            keys: base.keys.clone(),
            transient_retry: config.worker.transient_retry,
            shutdown: base.shutdown.clone(),
            after_commit,
            history: config.history.client(),
        })
    }

    fn handle(&self, batch: Vec<Delivery>) -> impl Future<Output = Vec<Disposition>> + Send {
        self.handle_batch(batch)
    }
}
