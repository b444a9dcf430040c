//! Exchanges, queues and bindings, declared idempotently by every service at
//! start-up and after every reconnect, so a message published before its consumer
//! ever ran is kept rather than dropped.
//!
//! ```text
//! orders.direct --order.new------> orders.queue    (quorum) --dead letters--> orders.dlx --> orders.dlq
//! orders.topic  --order.created--> notifier.queue  (quorum) --dead letters--> orders.dlx --> notifier.dlq
//! orders.topic  --order.rejected-> orders.rejected (quorum, the newest REJECTED_KEEP only)
//! orders.direct --order.new------> orders.events   (stream: every order's whole life,
//! orders.topic  --#--------------> orders.events    read by order-history)
//!
//! quotes.direct --<supplier id>--> quotes.<supplier id> (quorum, one per supplier;
//!                                  replies go back over direct reply-to)
//! ```
//!
//! The quote queues are declared for the suppliers a service names
//! ([`Topology::with_suppliers`]: the gateway its `QUOTE_SUPPLIERS`, a
//! supplier itself). A quote request carries a per-message TTL (the time left
//! to its deadline); a queue holds at most [`QUOTE_QUEUE_MAX`] requests and
//! refuses more (the gateway sees a refused publish: a failure of that
//! supplier).
//!
//! `orders.events` is a stream queue: consumers read it from any offset and it
//! keeps every event for [`EVENTS_MAX_AGE`] (or up to [`EVENTS_MAX_BYTES`]),
//! whoever has read it. It holds placed (`order.new`), `order.created`,
//! `order.rejected`, `order.parked` and `order.notified`; the last two are
//! routed nowhere else.
//!
//! `orders.rejected` exists so that a rejection event, published with
//! `mandatory` like every message, always has somewhere to go: an unroutable
//! publish is a failure. It keeps a bounded audit trail (`x-max-length`, oldest
//! dropped first) for whoever wants to react to rejections.
//!
//! Work queues are quorum queues with `x-delivery-limit` and at-least-once
//! dead-lettering (which needs `x-overflow=reject-publish`): a message that keeps
//! failing is parked in its DLQ, never dropped.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::domain::SupplierId;
use crate::messages::{ROUTE_NEW_ORDER, ROUTE_ORDER_CREATED, ROUTE_ORDER_REJECTED};

/// The queues' unprefixed names.
pub const ORDERS_QUEUE: &str = "orders.queue";
pub const NOTIFIER_QUEUE: &str = "notifier.queue";
pub const ORDERS_DLQ: &str = "orders.dlq";
pub const NOTIFIER_DLQ: &str = "notifier.dlq";
pub const REJECTED_QUEUE: &str = "orders.rejected";
/// The stream of every order event (not in [`QUEUES`]: it has no depth, only
/// offsets, and is never drained).
pub const EVENTS_STREAM: &str = "orders.events";

/// How long `orders.events` keeps events (`x-max-age`); a `rebuild` of the
/// history restores what the stream still holds.
pub const EVENTS_MAX_AGE: &str = "30D";
/// The most `orders.events` keeps on disk per node (`x-max-length-bytes`).
pub const EVENTS_MAX_BYTES: i64 = 10_000_000_000;
/// Segment size of `orders.events`: retention drops whole segments.
pub const EVENTS_SEGMENT_BYTES: i64 = 100_000_000;

/// Every queue of the topology, unprefixed: what the dashboard shows depths
/// of, and what tests and the load tool inspect.
pub const QUEUES: [&str; 5] = [
    ORDERS_QUEUE,
    NOTIFIER_QUEUE,
    ORDERS_DLQ,
    NOTIFIER_DLQ,
    REJECTED_QUEUE,
];

/// The most quote requests one supplier's queue holds (`x-max-length`,
/// `reject-publish` beyond).
pub const QUOTE_QUEUE_MAX: i64 = 10_000;

/// How many rejection events `orders.rejected` keeps.
pub const REJECTED_KEEP: i64 = 100_000;

/// The names of the pipeline's broker objects, all carrying one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
    expires: Option<std::time::Duration>,
    suppliers: Vec<SupplierId>,
}

impl Topology {
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Self {
            prefix: prefix.into(),
            delivery_limit,
            expires: None,
            suppliers: Vec::new(),
        }
    }

    /// Also declares the quote queues of these suppliers.
    pub fn with_suppliers(mut self, suppliers: Vec<SupplierId>) -> Self {
        self.suppliers = suppliers;
        self
    }

    /// Direct exchange of quote requests, routed by supplier id.
    pub fn quotes_exchange(&self) -> String {
        self.name("quotes.direct")
    }

    /// The queue supplier `id` consumes quote requests from.
    pub fn supplier_queue(&self, id: &SupplierId) -> String {
        self.name(&format!("quotes.{id}"))
    }

    /// Queues vanish after `expires` unused (`x-expires`); for throwaway setups.
    pub fn with_expiry(mut self, expires: Option<std::time::Duration>) -> Self {
        self.expires = expires;
        self
    }

    /// What every name starts with (`TOPOLOGY_PREFIX`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// Direct exchange the gateway publishes new orders to.
    pub fn orders_exchange(&self) -> String {
        self.name("orders.direct")
    }

    /// Topic exchange the processor publishes `order.created`/`order.rejected` to.
    pub fn events_exchange(&self) -> String {
        self.name("orders.topic")
    }

    /// Dead-letter exchange of both work queues.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("orders.dlx")
    }

    pub fn orders_queue(&self) -> String {
        self.name(ORDERS_QUEUE)
    }

    pub fn notifier_queue(&self) -> String {
        self.name(NOTIFIER_QUEUE)
    }

    pub fn orders_dlq(&self) -> String {
        self.name(ORDERS_DLQ)
    }

    pub fn notifier_dlq(&self) -> String {
        self.name(NOTIFIER_DLQ)
    }

    pub fn rejected_queue(&self) -> String {
        self.name(REJECTED_QUEUE)
    }

    /// The event stream `orders.events`.
    pub fn events_stream(&self) -> String {
        self.name(EVENTS_STREAM)
    }

    /// `queue` (one of [`QUEUES`]) with this topology's prefix.
    pub fn queue(&self, queue: &str) -> String {
        self.name(queue)
    }

    /// Declares everything; safe to run any number of times.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (self.orders_exchange(), ExchangeKind::Direct),
            (self.quotes_exchange(), ExchangeKind::Direct),
            (self.events_exchange(), ExchangeKind::Topic),
            (self.dead_letter_exchange(), ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }

        let work = [
            (
                self.orders_queue(),
                self.orders_exchange(),
                ROUTE_NEW_ORDER,
                self.orders_dlq(),
            ),
            (
                self.notifier_queue(),
                self.events_exchange(),
                ROUTE_ORDER_CREATED,
                self.notifier_dlq(),
            ),
        ];
        for (queue, exchange, route, dlq) in work {
            // The DLQ first, so a message dead-lettered right away has a home.
            self.declare_queue(channel, &dlq, self.quorum_args())
                .await?;
            self.bind(channel, &dlq, &self.dead_letter_exchange(), &dlq)
                .await?;
            self.declare_queue(channel, &queue, self.work_queue_args(&dlq))
                .await?;
            self.bind(channel, &queue, &exchange, route).await?;
        }
        let mut trail = self.quorum_args();
        trail.insert("x-max-length".into(), AMQPValue::LongLongInt(REJECTED_KEEP));
        trail.insert(
            "x-overflow".into(),
            AMQPValue::LongString("drop-head".into()),
        );
        self.declare_queue(channel, &self.rejected_queue(), trail)
            .await?;
        self.bind(
            channel,
            &self.rejected_queue(),
            &self.events_exchange(),
            ROUTE_ORDER_REJECTED,
        )
        .await?;
        let stream = self.events_stream();
        self.declare_queue(channel, &stream, self.stream_args())
            .await?;
        self.bind(channel, &stream, &self.orders_exchange(), ROUTE_NEW_ORDER)
            .await?;
        self.bind(channel, &stream, &self.events_exchange(), "#")
            .await?;
        for supplier in &self.suppliers {
            let queue = self.supplier_queue(supplier);
            let mut args = self.quorum_args();
            args.insert(
                "x-max-length".into(),
                AMQPValue::LongLongInt(QUOTE_QUEUE_MAX),
            );
            args.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
            self.declare_queue(channel, &queue, args).await?;
            self.bind(channel, &queue, &self.quotes_exchange(), supplier.as_str())
                .await?;
        }
        Ok(())
    }

    /// A stream cannot expire (`x-expires`); a throwaway topology gets a small
    /// one instead, and its owner deletes it.
    fn stream_args(&self) -> FieldTable {
        let (max_bytes, segment) = if self.expires.is_some() {
            (200_000_000, 10_000_000)
        } else {
            (EVENTS_MAX_BYTES, EVENTS_SEGMENT_BYTES)
        };
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        args.insert(
            "x-max-age".into(),
            AMQPValue::LongString(EVENTS_MAX_AGE.into()),
        );
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(max_bytes),
        );
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(segment),
        );
        args
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        args: FieldTable,
    ) -> lapin::Result<()> {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel.queue_declare(name.into(), options, args).await?;
        Ok(())
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> lapin::Result<()> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    fn work_queue_args(&self, dlq: &str) -> FieldTable {
        let mut args = self.quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dlq.into()),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        args
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if let Some(expires) = self.expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(expires.as_millis() as i64),
            );
        }
        args
    }
}
