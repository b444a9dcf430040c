//! Each service's settings for a test, in one place: port 0, the test's own
//! topology and key prefix, the test listener limits, short timeouts, no
//! history unless a test asks for one. A test changes what it is about and
//! keeps the rest.

use std::time::Duration;

use pipeline::config::WorkerConfig;
use pipeline::domain::SupplierId;
use pipeline::history::HistoryClientConfig;

use crate::{database_url, history_schema, service_config};

fn worker() -> WorkerConfig {
    WorkerConfig {
        batch: 32,
        transient_retry: Duration::from_secs(10),
    }
}

/// An order-processor.
pub fn processor(prefix: &str) -> order_processor::ProcessorConfig {
    order_processor::ProcessorConfig {
        service: service_config(prefix, "order-processor-test"),
        worker: worker(),
        prefetch: 32,
        history: HistoryClientConfig::none(),
    }
}

/// A notifier sending through `sink`.
pub fn notifier(prefix: &str, sink: notifier::SinkConfig) -> notifier::NotifierConfig {
    notifier::NotifierConfig {
        service: service_config(prefix, "notifier-test"),
        worker: worker(),
        prefetch: 64,
        sink,
        claim: Duration::from_secs(30),
        history: HistoryClientConfig::none(),
    }
}

/// An api-gateway asking no suppliers.
pub fn gateway(prefix: &str) -> api_gateway::GatewayConfig {
    api_gateway::GatewayConfig {
        service: service_config(prefix, "api-gateway-test"),
        request_timeout: Duration::from_secs(5),
        lifetimes: api_gateway::idempotency::Lifetimes {
            lease: Duration::from_secs(30),
            done: Duration::from_secs(600),
        },
        max_qty: 1000,
        history: HistoryClientConfig::none(),
        quotes: api_gateway::QuotesConfig::with_suppliers(Vec::new()),
        keys: crate::keys_config(prefix),
        rates: pipeline::config::defaults(),
    }
}

/// An order-history replica named `replica`, over the test's own schema.
pub fn history(prefix: &str, replica: &str) -> order_history::HistoryConfig {
    order_history::HistoryConfig {
        service: service_config(prefix, &format!("order-history-{replica}")),
        database_url: database_url().into(),
        keys: crate::keys_config(prefix).cache,
        schema: history_schema(prefix),
        replica: replica.to_owned(),
        batch: 100,
        lock_poll: Duration::from_millis(100),
        retention: Duration::from_secs(3600),
        pool_size: 4,
        db_timeout: Duration::from_secs(3),
    }
}

/// A supplier `id` that answers at once, never fails and seeds nothing.
pub fn supplier(prefix: &str, id: &SupplierId) -> supplier::SupplierConfig {
    supplier::SupplierConfig {
        id: Some(id.clone()),
        service: service_config(prefix, &format!("supplier-{id}-test")),
        delay: Duration::ZERO,
        failure_rate: 0.0,
        prefetch: 64,
        demo_catalog: false,
    }
}
