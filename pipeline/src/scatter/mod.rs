//! Scatter-gather over the broker: one request fanned out to several
//! destinations, their replies gathered until a completion rule or the
//! deadline says stop.
//!
//! ```text
//!  gather(request) --publish, reply_to = amq.rabbitmq.reply-to--> destination 1 .. n
//!       ^                                                             |
//!       +-- pending[request id] <-- reply consumer <-- correlation id --+
//! ```
//!
//! * **Replies** come over RabbitMQ's direct reply-to: one long-lived no-ack
//!   consumer per process, on the very channel that publishes the requests
//!   (the broker requires that), re-opened on every new broker link. Each
//!   request has a fresh id; destination `i` is asked with correlation id
//!   `<request id>.<i>`, so a reply names exactly one request and one
//!   destination — two gateway processes, or two requests of one process,
//!   never see each other's replies.
//! * **Pending requests** live in a map keyed by request id. An entry is
//!   removed by a drop guard on every exit path (completion, deadline, error,
//!   a cancelled caller); the map is capped ([`Settings::max_pending`]). A
//!   reply for an entry no longer there is *late*: counted and dropped.
//! * **Completion**: every destination settled, or the caller's rule said so
//!   (min responses, quorum, first acceptable answer), or the deadline; the
//!   result names which ([`CompletedBy`]).
//! * **A circuit breaker per destination** ([`breaker`]): an open destination
//!   is not sent to (its outcome is [`Outcome::Skipped`]); timeouts, error
//!   replies, unroutable and refused publishes count as failures.
//!
//! The core is generic: the request is any bytes, a reply any
//! [`GatherReply`]. What a result *means* (cheapest, fastest, quorum) is the
//! caller's: plain functions over the [`Slot`]s (see `crate::quotes`).

pub mod breaker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::amqp::Broker;
pub use breaker::{Breaker, BreakerConfig, CircuitState, Permit};

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A reply type: how a destination's answer is read, and whether it is an
/// error answer (which counts against the destination's circuit).
pub trait GatherReply: DeserializeOwned + Send + 'static {
    /// `Some(reason)` if the destination answered with an error.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Its name in results, metrics and breakers (a supplier id).
    pub name: String,
    pub exchange: String,
    pub routing_key: String,
}

/// What became of one destination's part of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<R> {
    /// Still waiting (only ever seen by completion rules).
    Waiting,
    /// Answered.
    Reply(R),
    /// Answered with an error, or the request could not be delivered.
    Error(String),
    /// No answer by the deadline.
    Timeout,
    /// Not asked: its circuit is open.
    Skipped,
    /// Asked, but the gather completed before it answered.
    Unanswered,
}

impl<R> Outcome<R> {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Reply(_) => "reply",
            Self::Error(_) => "error",
            Self::Timeout => "timeout",
            Self::Skipped => "skipped",
            Self::Unanswered => "unanswered",
        }
    }
}

/// One destination's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot<R> {
    pub destination: String,
    pub outcome: Outcome<R>,
    /// From the publish to the reply (or the error).
    pub latency: Option<Duration>,
    /// 1 for the first destination that answered, 2 for the second, ...
    pub arrival: Option<usize>,
    /// The destination's circuit when the request was made.
    pub circuit: CircuitState,
}

/// Why a gather stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedBy {
    /// Every destination asked has answered (or failed).
    All,
    /// The caller's minimum number of answers arrived.
    MinResponses,
    /// The caller's quorum agreed.
    Quorum,
    /// The deadline.
    Timeout,
    /// No destination could be asked: every circuit is open.
    AllCircuitsOpen,
}

impl CompletedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::MinResponses => "min_responses",
            Self::Quorum => "quorum",
            Self::Timeout => "timeout",
            Self::AllCircuitsOpen => "all_circuits_open",
        }
    }
}

/// A finished gather: one slot per destination, in the destinations' order.
#[derive(Debug, Clone)]
pub struct Gathered<R> {
    pub slots: Vec<Slot<R>>,
    pub completed_by: CompletedBy,
}

/// Why a gather could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("{0} requests are already waiting for replies; retry shortly")]
    TooManyPending(usize),
    #[error("no broker link is available")]
    Unavailable,
}

/// How the core is named and bounded.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Metric names start with it (`quote` → `quote_late_replies_total`).
    pub metric_prefix: &'static str,
    /// The label naming a destination in metrics (`supplier`).
    pub destination_label: &'static str,
    /// Requests waiting for replies at once, at most.
    pub max_pending: usize,
    pub breaker: BreakerConfig,
}

/// A destination's figures, for health pages and dashboards.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestinationStatus {
    pub name: String,
    pub circuit: &'static str,
    /// Milliseconds until an open circuit lets a probe through.
    pub open_for_ms: Option<u64>,
    /// Calls and failures in the breaker's current window.
    pub window_calls: usize,
    pub window_failures: usize,
    /// Over the last [`RECENT`] calls that had an outcome.
    pub recent_calls: usize,
    pub recent_success_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub replies: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub skipped: u64,
    pub last_error: Option<String>,
}

/// How many recent calls per destination the figures are taken over.
pub const RECENT: usize = 200;

#[derive(Debug)]
struct DestinationState {
    breaker: Breaker,
    /// (success, latency) of the newest calls, newest last.
    recent: std::collections::VecDeque<(bool, Option<Duration>)>,
    replies: u64,
    errors: u64,
    timeouts: u64,
    skipped: u64,
    last_error: Option<String>,
}

struct Arrival {
    index: usize,
    body: Vec<u8>,
    at: Instant,
}

struct Inner {
    broker: Broker,
    settings: Settings,
    names: Names,
    channel: watch::Sender<Option<Channel>>,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Arrival>>>,
    destinations: Mutex<HashMap<String, DestinationState>>,
    late: AtomicU64,
}

/// Metric names, formatted once.
struct Names {
    pending: String,
    late: String,
    replies: String,
    latency: String,
    circuit: String,
}

/// Cheap to clone; clones share one reply consumer and one pending map.
#[derive(Clone)]
pub struct ScatterGather {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ScatterGather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScatterGather")
            .field("pending", &self.pending())
            .finish()
    }
}

/// Removes a request's pending entry however the gather ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.inner.pending.lock().expect("pending map");
        pending.remove(&self.id);
        metrics::gauge!(self.inner.names.pending.clone()).set(pending.len() as f64);
    }
}

impl ScatterGather {
    /// Starts the reply consumer on the broker's current link (and every
    /// later one) until `shutdown`.
    pub fn start(broker: Broker, settings: Settings, shutdown: CancellationToken) -> Self {
        let p = settings.metric_prefix;
        let names = Names {
            pending: format!("{p}_pending_requests"),
            late: format!("{p}_late_replies_total"),
            replies: format!("{p}_supplier_replies_total"),
            latency: format!("{p}_supplier_latency_seconds"),
            circuit: format!("{p}_circuit_state"),
        };
        metrics::gauge!(names.pending.clone()).set(0.0);
        metrics::counter!(names.late.clone()).absolute(0);
        let (channel, _) = watch::channel(None);
        let sg = Self {
            inner: Arc::new(Inner {
                broker,
                settings,
                names,
                channel,
                pending: Mutex::new(HashMap::new()),
                destinations: Mutex::new(HashMap::new()),
                late: AtomicU64::new(0),
            }),
        };
        tokio::spawn(sg.clone().reply_consumer(shutdown));
        sg
    }

    /// Requests waiting for replies now.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().expect("pending map").len()
    }

    /// Replies that arrived after their request had finished, so far.
    pub fn late_replies(&self) -> u64 {
        self.inner.late.load(Ordering::Relaxed)
    }

    /// Whether the reply consumer is up (the gather can run).
    pub fn ready(&self) -> bool {
        self.inner
            .channel
            .borrow()
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// Each known destination's circuit and figures, in `names` order
    /// (a destination never asked shows as closed with no figures).
    pub fn status(&self, names: &[String]) -> Vec<DestinationStatus> {
        let now = Instant::now();
        let mut all = self.inner.destinations.lock().expect("destinations");
        names
            .iter()
            .map(|name| {
                let d = self.destination(&mut all, name);
                let (window_calls, window_failures) = d.breaker.window();
                let outcomes: Vec<_> = d.recent.iter().collect();
                let ok = outcomes.iter().filter(|(s, _)| *s).count();
                let mut latencies: Vec<f64> = outcomes
                    .iter()
                    .filter_map(|(_, l)| l.map(|l| l.as_secs_f64() * 1000.0))
                    .collect();
                latencies.sort_by(f64::total_cmp);
                DestinationStatus {
                    name: name.clone(),
                    circuit: d.breaker.state(now).as_str(),
                    open_for_ms: d
                        .breaker
                        .open_until()
                        .filter(|until| *until > now)
                        .map(|until| (until - now).as_millis() as u64),
                    window_calls,
                    window_failures,
                    recent_calls: outcomes.len(),
                    recent_success_rate: (!outcomes.is_empty())
                        .then(|| ok as f64 / outcomes.len() as f64),
                    latency_p50_ms: percentile(&latencies, 0.50),
                    latency_p99_ms: percentile(&latencies, 0.99),
                    replies: d.replies,
                    errors: d.errors,
                    timeouts: d.timeouts,
                    skipped: d.skipped,
                    last_error: d.last_error.clone(),
                }
            })
            .collect()
    }

    fn destination<'m>(
        &self,
        all: &'m mut HashMap<String, DestinationState>,
        name: &str,
    ) -> &'m mut DestinationState {
        all.entry(name.to_owned())
            .or_insert_with(|| DestinationState {
                breaker: Breaker::new(self.inner.settings.breaker),
                recent: std::collections::VecDeque::with_capacity(RECENT),
                replies: 0,
                errors: 0,
                timeouts: 0,
                skipped: 0,
                last_error: None,
            })
    }

    /// Sends `payload` to every destination whose circuit lets it through
    /// and gathers the replies until `done` says stop (given the slots so
    /// far, it returns why), every destination asked has settled, or
    /// `deadline`. `check` judges each reply as it arrives (given its
    /// destination): an `Err` makes it an error outcome, counted against the
    /// destination's circuit.
    ///
    /// Each request carries `expiration` (the time left) so the broker drops
    /// it once it could no longer be answered in time; the body should carry
    /// the deadline too, for the destination to check.
    pub async fn gather<R, C, F>(
        &self,
        payload: &[u8],
        destinations: &[Destination],
        deadline: Instant,
        check: C,
        mut done: F,
    ) -> Result<Gathered<R>, GatherError>
    where
        R: GatherReply,
        C: Fn(&str, &R) -> Result<(), String>,
        F: FnMut(&[Slot<R>]) -> Option<CompletedBy>,
    {
        let inner = &*self.inner;
        let now = Instant::now();
        // Who may be asked.
        let (mut slots, permits) = {
            let mut all = inner.destinations.lock().expect("destinations");
            let mut slots = Vec::with_capacity(destinations.len());
            let mut permits = Vec::with_capacity(destinations.len());
            for d in destinations {
                let state = self.destination(&mut all, &d.name);
                let circuit = state.breaker.state(now);
                let permit = state.breaker.acquire(now);
                if permit.is_none() {
                    state.skipped += 1;
                }
                metrics::gauge!(inner.names.circuit.clone(), inner.settings.destination_label => d.name.clone())
                    .set(state.breaker.state(now).gauge());
                slots.push(Slot {
                    destination: d.name.clone(),
                    outcome: if permit.is_some() {
                        Outcome::Waiting
                    } else {
                        Outcome::Skipped
                    },
                    latency: None,
                    arrival: None,
                    circuit,
                });
                permits.push(permit);
            }
            (slots, permits)
        };
        // Every permit taken is handed back below, whatever happens.
        let mut settle = Settle {
            sg: self,
            names: destinations.iter().map(|d| d.name.clone()).collect(),
            permits,
        };
        if settle.permits.iter().all(Option::is_none) {
            return Ok(Gathered {
                slots,
                completed_by: CompletedBy::AllCircuitsOpen,
            });
        }

        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _guard = {
            let mut pending = inner.pending.lock().expect("pending map");
            if pending.len() >= inner.settings.max_pending {
                return Err(GatherError::TooManyPending(pending.len()));
            }
            pending.insert(id.clone(), tx);
            metrics::gauge!(inner.names.pending.clone()).set(pending.len() as f64);
            PendingGuard {
                inner,
                id: id.clone(),
            }
        };

        let channel = match self.channel_until(deadline).await {
            Some(c) => c,
            None => return Err(GatherError::Unavailable),
        };
        let sent_at = Instant::now();
        let expiration = deadline
            .saturating_duration_since(sent_at)
            .as_millis()
            .max(1)
            .to_string();
        let mut confirms = FuturesUnordered::new();
        for (i, d) in destinations.iter().enumerate() {
            if settle.permits[i].is_none() {
                continue;
            }
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(1)
                .with_message_id(id.clone().into())
                .with_correlation_id(format!("{id}.{i}").into())
                .with_reply_to(REPLY_TO.into())
                .with_expiration(expiration.clone().into())
                .with_timestamp(crate::messages::now_ms() / 1000);
            let publish = channel.basic_publish(
                d.exchange.as_str().into(),
                d.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            );
            match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => confirms.push(async move { (i, confirm.await) }),
                Ok(Err(e)) => {
                    slots[i].outcome = Outcome::Error(format!("could not publish: {e}"));
                    slots[i].latency = Some(sent_at.elapsed());
                }
                Err(_) => {
                    slots[i].outcome = Outcome::Error("could not publish in time".into());
                    slots[i].latency = Some(sent_at.elapsed());
                }
            }
        }

        let mut arrivals = 0;
        let completed_by = loop {
            let settled = slots.iter().all(|s| !matches!(s.outcome, Outcome::Waiting));
            match done(&slots) {
                // "min_responses" means stopping early; with every answer
                // in, it is simply all.
                Some(CompletedBy::MinResponses) if settled => break CompletedBy::All,
                Some(reason) => break reason,
                None if settled => break CompletedBy::All,
                None => {}
            }
            tokio::select! {
                Some(arrival) = rx.recv() => {
                    let Some(slot) = slots.get_mut(arrival.index) else {
                        self.count_late();
                        continue;
                    };
                    if !matches!(slot.outcome, Outcome::Waiting) {
                        // A second answer from one destination (a redelivered
                        // request answered twice), or one after a failed publish.
                        self.count_late();
                        continue;
                    }
                    arrivals += 1;
                    slot.arrival = Some(arrivals);
                    slot.latency = Some(arrival.at.saturating_duration_since(sent_at));
                    slot.outcome = match serde_json::from_slice::<R>(&arrival.body) {
                        Ok(reply) => match reply.failure() {
                            Some(reason) => Outcome::Error(reason),
                            None => match check(&slot.destination, &reply) {
                                Ok(()) => Outcome::Reply(reply),
                                Err(reason) => Outcome::Error(reason),
                            },
                        },
                        Err(e) => Outcome::Error(format!("unreadable reply: {e}")),
                    };
                }
                Some((i, confirmed)) = confirms.next(), if !confirms.is_empty() => {
                    let failed = match confirmed {
                        Ok(Confirmation::Ack(Some(returned))) => {
                            Some(format!("unroutable: {}", returned.reply_text))
                        }
                        Ok(Confirmation::Nack(_)) => Some("the broker refused the request".into()),
                        Ok(_) => None,
                        Err(e) => Some(format!("the broker link failed: {e}")),
                    };
                    if let Some(reason) = failed
                        && matches!(slots[i].outcome, Outcome::Waiting)
                    {
                        slots[i].outcome = Outcome::Error(reason);
                        slots[i].latency = Some(sent_at.elapsed());
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    for slot in &mut slots {
                        if matches!(slot.outcome, Outcome::Waiting) {
                            slot.outcome = Outcome::Timeout;
                        }
                    }
                    break CompletedBy::Timeout;
                }
            }
        };
        for slot in &mut slots {
            if matches!(slot.outcome, Outcome::Waiting) {
                slot.outcome = Outcome::Unanswered;
            }
        }
        settle.finish(&slots);
        Ok(Gathered {
            slots,
            completed_by,
        })
    }

    fn count_late(&self) {
        self.inner.late.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(self.inner.names.late.clone()).increment(1);
    }

    /// The reply channel, waiting for one until `deadline`.
    async fn channel_until(&self, deadline: Instant) -> Option<Channel> {
        let mut rx = self.inner.channel.subscribe();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected()));
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }

    /// Keeps one direct reply-to consumer on a publishing channel of the
    /// current broker link, re-opening both on every new link.
    async fn reply_consumer(self, shutdown: CancellationToken) {
        let mut links = self.inner.broker.subscribe();
        loop {
            let link = tokio::select! {
                () = shutdown.cancelled() => break,
                link = links.wait_for(|l| l.as_ref().is_some_and(|l| l.is_open())) => match link {
                    Ok(link) => link.clone().expect("wait_for checked the link"),
                    Err(_) => break,
                },
            };
            let setup = async {
                let channel = link.connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                let consumer = channel
                    .basic_consume(
                        REPLY_TO.into(),
                        "scatter-gather-replies".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((channel, consumer))
            };
            let (channel, mut consumer) = match tokio::time::timeout(
                self.inner.broker.setup_timeout(),
                setup,
            )
            .await
            {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    tracing::warn!(node = %link.node, error = %e, "could not open the reply channel");
                    self.retry_pause(&shutdown).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(node = %link.node, "opening the reply channel timed out");
                    self.retry_pause(&shutdown).await;
                    continue;
                }
            };
            tracing::info!(node = %link.node, "scatter-gather reply consumer up");
            self.inner.channel.send_replace(Some(channel.clone()));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        self.inner.channel.send_replace(None);
                        let _ = tokio::time::timeout(
                            self.inner.broker.setup_timeout(),
                            channel.close(200, "shutdown".into()),
                        )
                        .await;
                        return;
                    }
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => self.dispatch(delivery),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reply consumer failed");
                            break;
                        }
                        None => {
                            tracing::warn!("reply consumer cancelled");
                            break;
                        }
                    },
                }
            }
            self.inner.channel.send_replace(None);
            self.inner.broker.report_failure();
            self.retry_pause(&shutdown).await;
        }
        self.inner.channel.send_replace(None);
    }

    async fn retry_pause(&self, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }

    fn dispatch(&self, delivery: lapin::message::Delivery) {
        let at = Instant::now();
        let routed = delivery.properties.correlation_id().as_ref().and_then(|c| {
            let (id, index) = c.as_str().rsplit_once('.')?;
            Some((id.to_owned(), index.parse::<usize>().ok()?))
        });
        let Some((id, index)) = routed else {
            self.count_late();
            return;
        };
        let tx = self
            .inner
            .pending
            .lock()
            .expect("pending map")
            .get(&id)
            .cloned();
        let delivered = tx.is_some_and(|tx| {
            tx.send(Arrival {
                index,
                body: delivery.data,
                at,
            })
            .is_ok()
        });
        if !delivered {
            self.count_late();
        }
    }
}

/// Hands every permit back to its breaker with the call's outcome, and
/// keeps the figures (also when the gather is dropped half-way: then the
/// outcomes are unknown and the permits are released).
struct Settle<'a> {
    sg: &'a ScatterGather,
    names: Vec<String>,
    permits: Vec<Option<Permit>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reply,
    Error,
    Timeout,
    Skipped,
    Unknown,
}

fn outcome_kind<R>(outcome: &Outcome<R>) -> Kind {
    match outcome {
        Outcome::Reply(_) => Kind::Reply,
        Outcome::Error(_) => Kind::Error,
        Outcome::Timeout => Kind::Timeout,
        Outcome::Skipped => Kind::Skipped,
        Outcome::Waiting | Outcome::Unanswered => Kind::Unknown,
    }
}

impl<R> Outcome<R> {
    fn error_text(&self) -> Option<String> {
        match self {
            Self::Error(e) => Some(e.clone()),
            Self::Timeout => Some("no reply by the deadline".into()),
            _ => None,
        }
    }
}

impl Settle<'_> {
    fn finish<R>(&mut self, slots: &[Slot<R>]) {
        let inner = &*self.sg.inner;
        let now = Instant::now();
        let mut all = inner.destinations.lock().expect("destinations");
        for (i, slot) in slots.iter().enumerate() {
            let Some(permit) = self.permits[i].take() else {
                continue;
            };
            let (kind, latency) = (outcome_kind(&slot.outcome), slot.latency);
            let d = self.sg.destination(&mut all, &slot.destination);
            let label = inner.settings.destination_label;
            let outcome = match kind {
                Kind::Reply => "reply",
                Kind::Error => "error",
                Kind::Timeout => "timeout",
                Kind::Skipped | Kind::Unknown => "unanswered",
            };
            metrics::counter!(inner.names.replies.clone(), label => slot.destination.clone(), "outcome" => outcome)
                .increment(1);
            match kind {
                Kind::Reply | Kind::Error | Kind::Timeout => {
                    let success = kind == Kind::Reply;
                    d.breaker.record(permit, success, now);
                    if d.recent.len() == RECENT {
                        d.recent.pop_front();
                    }
                    d.recent.push_back((success, latency));
                    match kind {
                        Kind::Reply => d.replies += 1,
                        Kind::Error => d.errors += 1,
                        _ => d.timeouts += 1,
                    }
                    if let Some(e) = slot.outcome.error_text() {
                        d.last_error = Some(e);
                    }
                    if kind == Kind::Reply
                        && let Some(l) = latency
                    {
                        metrics::histogram!(inner.names.latency.clone(), label => slot.destination.clone())
                            .record(l.as_secs_f64());
                    }
                }
                Kind::Skipped | Kind::Unknown => d.breaker.release(permit),
            }
            metrics::gauge!(inner.names.circuit.clone(), label => slot.destination.clone())
                .set(d.breaker.state(now).gauge());
        }
    }
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        // A gather dropped mid-way (its caller went away): the outcomes are
        // unknown, the permits go back.
        if self.permits.iter().all(Option::is_none) {
            return;
        }
        let mut all = self.sg.inner.destinations.lock().expect("destinations");
        for (name, permit) in self.names.iter().zip(&mut self.permits) {
            if let Some(permit) = permit.take() {
                self.sg.destination(&mut all, name).breaker.release(permit);
            }
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_latencies() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(51.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
    }
}
