//! A broker connection that survives the loss of a node.
//!
//! [`Broker::connect`] walks `RABBITMQ_URLS` until one node answers, declares the
//! topology and opens a publishing channel in confirm mode: the [`Link`]. The
//! link lives in a `tokio::sync::watch` cell (an async RwLock with change
//! notification): publishers take a cheap clone of the current link without
//! holding any lock across the publish; a background watcher notices a dead link
//! (connection error, closed channel, missed heartbeats), empties the cell, walks
//! the URLs again with jittered exponential backoff (starting at the node after
//! the one that failed), re-declares the topology and swaps the new link in.
//! Callers that find the cell empty wait for the swap, bounded by their deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Topology;
use crate::config::BrokerConfig;
use crate::domain::OrderId;
use crate::messages::EventKind;
use crate::trace::TraceParent;

/// One live connection to one node, with the publishing channel on it.
pub struct Link {
    pub connection: Connection,
    /// Confirm-mode channel for publishing. Consumers open their own channels on
    /// `connection`.
    pub channel: Channel,
    /// `host:port` of the node, for logs and health output.
    pub node: String,
    /// Position of the node in `RABBITMQ_URLS`.
    pub index: usize,
    /// Set when the broker nacked a publish on this channel; see [`Link::retire`].
    retired: AtomicBool,
    opened_at: Instant,
}

impl Link {
    /// Both the connection and the publishing channel are open, and the link
    /// has not been retired.
    pub fn is_open(&self) -> bool {
        !self.retired.load(Ordering::Relaxed)
            && self.connection.status().connected()
            && self.channel.status().connected()
    }

    /// Takes the link out of service so the watcher replaces it.
    ///
    /// Used after a nack: a quorum queue's client state lives in the channel,
    /// and a channel that first published while the queue's leader was being
    /// re-elected (right after a node died) can keep refusing every publish.
    /// A fresh connection and channel start clean.
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("node", &self.node).finish()
    }
}

/// Why a publish did not end in a broker confirm.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no broker node is reachable")]
    Unavailable,
    #[error("the broker did not confirm the message in time")]
    ConfirmTimeout,
    #[error("the broker returned the message as unroutable: {0}")]
    Unroutable(String),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker link failed during the publish")]
    Amqp(#[from] lapin::Error),
}

/// A message to publish: JSON body plus the properties every message carries.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub payload: &'a [u8],
    /// Deterministic for the message's effect, so consumers can deduplicate.
    pub message_id: &'a str,
    /// The order id.
    pub correlation_id: &'a str,
    pub traceparent: &'a TraceParent,
}

/// Cheap to clone; all clones share one link and one watcher.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("link", &*self.inner.link.borrow())
            .finish()
    }
}

struct Inner {
    config: BrokerConfig,
    topology: Topology,
    link: watch::Sender<Option<Arc<Link>>>,
    /// Poked by a publisher that saw the link fail, so the watcher looks now
    /// rather than at its next tick.
    suspect: Notify,
    /// Where the next walk over the URLs starts.
    next_index: AtomicUsize,
    shutdown: CancellationToken,
}

impl Broker {
    /// Connects to the first node that answers, retrying with backoff until one
    /// does or `shutdown` is cancelled, then keeps the link alive in the
    /// background until `shutdown`.
    pub async fn connect(
        config: BrokerConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let topology = Topology::new(config.topology_prefix.clone(), config.delivery_limit)
            .with_expiry(config.queue_expires)
            .with_suppliers(config.suppliers.clone());
        let (link, _) = watch::channel(None);
        let broker = Self {
            inner: Arc::new(Inner {
                config,
                topology,
                link,
                suspect: Notify::new(),
                next_index: AtomicUsize::new(0),
                shutdown,
            }),
        };
        let first = broker
            .connect_any()
            .await
            .ok_or_else(|| anyhow::anyhow!("shut down before any broker node answered"))?;
        broker.install(first);
        tokio::spawn(broker.clone().watch());
        Ok(broker)
    }

    /// How long opening a channel (and declaring or subscribing on it) may
    /// take before the attempt counts as failed: twice the connect timeout,
    /// as for opening a link.
    pub fn setup_timeout(&self) -> Duration {
        self.inner.config.connect_timeout * 2
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The current link, if one is up.
    pub fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.borrow().clone().filter(|l| l.is_open())
    }

    /// Observe link swaps (consumers re-subscribe on every new link).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Link>>> {
        self.inner.link.subscribe()
    }

    /// Waits for an open link until `deadline`.
    pub async fn link_until(&self, deadline: Instant) -> Result<Arc<Link>, PublishError> {
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let mut rx = self.inner.link.subscribe();
        let wait = rx.wait_for(|l| l.as_ref().is_some_and(|l| l.is_open()));
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(link)) => Ok(link.clone().expect("wait_for checked the link")),
            _ => Err(PublishError::Unavailable),
        }
    }

    /// Publishes one event of order `id`: a placed order to `orders.direct`,
    /// every later event to `orders.topic`, each with its kind's routing key
    /// and `message_id` and the order id as `correlation_id` (see
    /// [`Broker::publish`]).
    pub async fn publish_event(
        &self,
        kind: EventKind,
        id: &OrderId,
        payload: &[u8],
        trace: &TraceParent,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let exchange = match kind {
            EventKind::Placed => self.topology().orders_exchange(),
            _ => self.topology().events_exchange(),
        };
        let message_id = kind.message_id(id);
        let msg = Outgoing {
            exchange: &exchange,
            routing_key: kind.route(),
            payload,
            message_id: &message_id,
            correlation_id: id.as_str(),
            traceparent: trace,
        };
        self.publish(&msg, deadline).await
    }

    /// Publishes persistently with `mandatory` and waits for the broker's
    /// confirm, until `deadline` at the latest (and never longer than the
    /// configured confirm timeout). `Ok` means the broker has the message in a
    /// queue; anything else is an error, including an unroutable return.
    pub async fn publish(&self, msg: &Outgoing<'_>, deadline: Instant) -> Result<(), PublishError> {
        let started = Instant::now();
        let result = self.publish_inner(msg, deadline).await;
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(PublishError::Unavailable) => "unavailable",
            Err(PublishError::ConfirmTimeout) => "timeout",
            Err(PublishError::Unroutable(_)) => "unroutable",
            Err(PublishError::Nacked) => "nacked",
            Err(PublishError::Amqp(_)) => "link_error",
        };
        metrics::histogram!("broker_publish_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn publish_inner(
        &self,
        msg: &Outgoing<'_>,
        deadline: Instant,
    ) -> Result<(), PublishError> {
        let link = self.link_until(deadline).await?;
        let confirm_deadline = deadline.min(Instant::now() + self.inner.config.confirm_timeout);
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(msg.traceparent.header_value().into()),
        );
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(msg.message_id.into())
            .with_correlation_id(msg.correlation_id.into())
            .with_timestamp(crate::messages::now_ms() / 1000)
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        // Sending is bounded by the same deadline as the confirm: on a link
        // that just died the send itself may never complete.
        let send = link.channel.basic_publish(
            msg.exchange.into(),
            msg.routing_key.into(),
            options,
            msg.payload,
            properties,
        );
        let confirm = match tokio::time::timeout_at(confirm_deadline, send).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => {
                self.inner.suspect.notify_one();
                return Err(e.into());
            }
            Err(_) => {
                self.inner.suspect.notify_one();
                return Err(PublishError::ConfirmTimeout);
            }
        };
        match tokio::time::timeout_at(confirm_deadline, confirm).await {
            Err(_) => Err(PublishError::ConfirmTimeout),
            Ok(Err(e)) => {
                self.inner.suspect.notify_one();
                Err(e.into())
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                Err(PublishError::Unroutable(returned.reply_text.to_string()))
            }
            Ok(Ok(Confirmation::Nack(_))) => {
                link.retire();
                self.inner.suspect.notify_one();
                Err(PublishError::Nacked)
            }
            Ok(Ok(Confirmation::NotRequested)) => {
                unreachable!("the publishing channel is always in confirm mode")
            }
        }
    }

    /// Tells the watcher a link looked broken, so it checks now.
    pub fn report_failure(&self) {
        self.inner.suspect.notify_one();
    }

    /// Closes the link cleanly (after the HTTP server has drained).
    pub async fn close(&self) {
        let link = self.inner.link.send_replace(None);
        if let Some(link) = link {
            // Bounded: closing a link whose peer is already gone may never
            // get an answer, and shutdown must not hang on it.
            let close = async {
                let _ = link.channel.close(200, "shutdown".into()).await;
                let _ = link.connection.close(200, "shutdown".into()).await;
            };
            if tokio::time::timeout(self.setup_timeout(), close)
                .await
                .is_err()
            {
                tracing::warn!(node = %link.node, "broker did not answer the close; dropping the link");
            } else {
                tracing::info!(node = %link.node, "broker connection closed");
            }
        }
    }

    fn install(&self, link: Arc<Link>) {
        tracing::info!(node = %link.node, "broker link up");
        metrics::gauge!("broker_connected").set(1.0);
        self.inner.next_index.store(link.index, Ordering::Relaxed);
        self.inner.link.send_replace(Some(link));
    }

    /// The background watcher: waits for the link to fail, then replaces it.
    async fn watch(self) {
        loop {
            let Some(link) = self.inner.link.borrow().clone() else {
                return;
            };
            let shutdown = self.inner.shutdown.clone();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.until_broken(&link) => {}
            }
            tracing::warn!(node = %link.node, "broker link lost, failing over");
            metrics::gauge!("broker_connected").set(0.0);
            metrics::counter!("broker_reconnects_total").increment(1);
            self.inner.link.send_replace(None);
            // Start the next walk at the node after the one that failed.
            let n = self.inner.config.urls.len();
            self.inner
                .next_index
                .store((link.index + 1) % n, Ordering::Relaxed);
            // A link that failed at once (a nack while a queue leader is being
            // elected) is not replaced in a tight loop.
            if link.opened_at.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            drop(link);
            match self.connect_any().await {
                Some(new) => self.install(new),
                None => return,
            }
        }
    }

    /// Resolves once the link is no longer usable.
    async fn until_broken(&self, link: &Link) {
        let mut events = link.connection.events_listener();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Event::Error(e)) => {
                        tracing::warn!(node = %link.node, error = %crate::telemetry::chain(&e), "broker connection error");
                        if !link.is_open() {
                            return;
                        }
                    }
                    None => return,
                    Some(_) => {}
                },
                () = self.inner.suspect.notified() => if !link.is_open() { return },
                _ = tick.tick() => if !link.is_open() { return },
            }
        }
    }

    /// Walks the URLs from `next_index` until a node answers, with jittered
    /// exponential backoff between rounds. `None` once shutdown is requested.
    async fn connect_any(&self) -> Option<Arc<Link>> {
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.inner.config.max_backoff)
            .without_max_times();
        let round = || async {
            let n = self.inner.config.urls.len();
            let start = self.inner.next_index.load(Ordering::Relaxed);
            let mut last_error = None;
            for k in 0..n {
                let index = (start + k) % n;
                match self.open_link(index).await {
                    Ok(link) => return Ok(Arc::new(link)),
                    Err(e) => {
                        tracing::warn!(node = %node_label(self.inner.config.urls.get(index)), error = %crate::telemetry::chain(e.as_ref()), "broker node did not answer");
                        last_error = Some(e);
                    }
                }
            }
            Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no broker URL configured")))
        };
        let retrying = round.retry(backoff).sleep(tokio::time::sleep).notify(
            |e, delay| tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), ?delay, "no broker node answered, retrying"),
        );
        tokio::select! {
            () = self.inner.shutdown.cancelled() => None,
            res = retrying => res.ok(),
        }
    }

    async fn open_link(&self, index: usize) -> anyhow::Result<Link> {
        let config = &self.inner.config;
        let mut uri = config.urls.get(index).clone();
        uri.query.heartbeat = Some(config.heartbeat.as_secs().clamp(1, u64::from(u16::MAX)) as u16);
        uri.query.connection_timeout = Some(config.connect_timeout.as_millis() as u64);
        let node = node_label(&uri);
        let properties = ConnectionProperties::default()
            .with_connection_name(config.connection_name.clone().into());
        let open = async {
            let connection = Connection::connect_uri(uri, properties).await?;
            let channel = connection.create_channel().await?;
            self.inner.topology.declare(&channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(Link {
                connection,
                channel,
                node: node.clone(),
                index,
                retired: AtomicBool::new(false),
                opened_at: Instant::now(),
            })
        };
        // Handshake plus topology; bounded so a blackholed node is skipped.
        tokio::time::timeout(self.setup_timeout(), open)
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting to {node}"))?
            .map_err(|e| anyhow::anyhow!("{node}: {e}"))
    }
}

fn node_label(uri: &AMQPUri) -> String {
    format!("{}:{}", uri.authority.host, uri.authority.port)
}
