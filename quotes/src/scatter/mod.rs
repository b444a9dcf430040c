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
//!   is not sent to (its outcome is [`Fate::Skipped`]); timeouts, error
//!   replies, unroutable and refused publishes count as failures.
//!
//! The core is generic: the request is any bytes, a reply any
//! [`GatherReply`]. What a result *means* (cheapest, fastest, quorum) is the
//! caller's: plain functions over the [`Slot`]s (see [`crate::strategy`]).

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

pub use breaker::{Breaker, BreakerConfig, Permit};
use pipeline::amqp::Broker;
pub use pipeline::api::{CircuitState, DestinationStatus};

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

impl Destination {
    /// Where a quote request for supplier `id` is published.
    pub fn supplier(
        topology: &pipeline::amqp::Topology,
        id: &pipeline::domain::SupplierId,
    ) -> Self {
        Self {
            name: id.as_str().to_owned(),
            exchange: topology.quotes_exchange(),
            routing_key: id.as_str().to_owned(),
        }
    }
}

/// What became of one destination's part of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate<R> {
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

impl<R> Fate<R> {
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
    pub outcome: Fate<R>,
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
    /// A destination's silence counts against its circuit only when it had
    /// at least this long to answer (a caller's short deadline is not the
    /// destination's fault).
    pub blame_timeouts_from: Duration,
    pub breaker: BreakerConfig,
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

impl Names {
    fn new(p: &str) -> Self {
        Self {
            pending: format!("{p}_pending_requests"),
            late: format!("{p}_late_replies_total"),
            replies: format!("{p}_supplier_replies_total"),
            latency: format!("{p}_supplier_latency_seconds"),
            circuit: format!("{p}_circuit_state"),
        }
    }
}

/// The help texts (`# HELP`) of the gather's metrics, named with
/// `settings.metric_prefix` and labelled with `settings.destination_label`.
/// [`ScatterGather::start`] calls it.
pub fn describe_metrics(settings: &Settings) {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    let names = Names::new(settings.metric_prefix);
    let d = settings.destination_label;
    describe_gauge!(names.pending.clone(), "Requests waiting for replies now.");
    describe_counter!(
        names.late.clone(),
        "Replies dropped because their request had finished (or a second reply from one \
         destination)."
    );
    describe_counter!(
        names.replies.clone(),
        format!(
            "Calls to each {d}, by {d} and outcome (reply, error, timeout, unanswered, \
             skipped: circuit open)."
        )
    );
    describe_histogram!(
        names.latency.clone(),
        Unit::Seconds,
        format!("Time from publishing a request to a {d}'s accepted reply, by {d}.")
    );
    describe_gauge!(
        names.circuit.clone(),
        format!("Each {d}'s circuit breaker, by {d}: 0 closed, 1 half-open, 2 open.")
    );
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
struct PendingGuard {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for PendingGuard {
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
        describe_metrics(&settings);
        let names = Names::new(settings.metric_prefix);
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
                    circuit: d.breaker.state(now),
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
    /// `timeout` has passed. `check` judges each reply as it arrives (given its
    /// destination): an `Err` makes it an error outcome, counted against the
    /// destination's circuit.
    ///
    /// Each request carries `expiration` (the time left) so the broker drops
    /// it once it could no longer be answered in time; the body should carry
    /// the deadline too, for the destination to check.
    ///
    /// What counts against a destination's circuit is what the destination
    /// did: an error answer, an unroutable or refused request, or silence
    /// for at least [`Settings::blame_timeouts_from`]. A deadline shorter
    /// than that (the caller's choice), a publish that could not be made,
    /// or a reply channel lost with its broker link count neither way. A
    /// half-open probe the gather no longer waits for (it completed early)
    /// is still awaited to its deadline in the background, so its outcome
    /// decides the circuit.
    #[tracing::instrument(
        name = "gather",
        skip_all,
        fields(destinations = destinations.len(), timeout_ms = timeout.as_millis() as u64)
    )]
    pub async fn gather<R, C, F>(
        &self,
        payload: &[u8],
        destinations: &[Destination],
        timeout: Duration,
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
        let deadline = now + timeout;
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
                    metrics::counter!(inner.names.replies.clone(), inner.settings.destination_label => d.name.clone(), "outcome" => "skipped")
                        .increment(1);
                }
                metrics::gauge!(inner.names.circuit.clone(), inner.settings.destination_label => d.name.clone())
                    .set(state.breaker.state(now).gauge());
                slots.push(Slot {
                    destination: d.name.clone(),
                    outcome: if permit.is_some() {
                        Fate::Waiting
                    } else {
                        Fate::Skipped
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
            blameless: vec![false; destinations.len()],
        };
        if settle.permits.iter().all(Option::is_none) {
            return Ok(Gathered {
                slots,
                completed_by: CompletedBy::AllCircuitsOpen,
            });
        }

        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let guard = {
            let mut pending = inner.pending.lock().expect("pending map");
            if pending.len() >= inner.settings.max_pending {
                return Err(GatherError::TooManyPending(pending.len()));
            }
            pending.insert(id.clone(), tx);
            metrics::gauge!(inner.names.pending.clone()).set(pending.len() as f64);
            PendingGuard {
                inner: self.inner.clone(),
                id: id.clone(),
            }
        };

        let mut channels = inner.channel.subscribe();
        let Some(channel) = self.channel_until(deadline).await else {
            return Err(GatherError::Unavailable);
        };
        let sent_at = Instant::now();
        let left = deadline.saturating_duration_since(sent_at);
        // Silence is the destination's fault only if the caller gave it
        // long enough, and waiting for a reply channel did not eat half.
        let from = inner.settings.blame_timeouts_from;
        let blame_timeouts = timeout >= from && left >= from / 2;
        let expiration = left.as_millis().max(1).to_string();
        // Every message carries a W3C traceparent; one trace per gather.
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            lapin::types::AMQPValue::LongString(
                pipeline::trace::TraceParent::generate()
                    .header_value()
                    .into(),
            ),
        );
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
                .with_headers(headers.clone())
                .with_timestamp(pipeline::messages::now_ms() / 1000);
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
            let failed = match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => {
                    confirms.push(async move { (i, confirm.await) });
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(destination = %d.name, error = %pipeline::telemetry::chain(&e), "could not publish a request");
                    "could not send the request (broker link)"
                }
                Err(_) => "could not send the request in time",
            };
            slots[i].outcome = Fate::Error(failed.into());
            slots[i].latency = Some(sent_at.elapsed());
            settle.blameless[i] = true;
        }

        let mut arrivals = 0;
        let completed_by = loop {
            let settled = slots.iter().all(|s| !matches!(s.outcome, Fate::Waiting));
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
                    if !matches!(slot.outcome, Fate::Waiting) {
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
                            Some(reason) => Fate::Error(reason),
                            None => match check(&slot.destination, &reply) {
                                Ok(()) => Fate::Reply(reply),
                                Err(reason) => Fate::Error(reason),
                            },
                        },
                        Err(e) => {
                            tracing::warn!(destination = %slot.destination, error = %pipeline::telemetry::chain(&e), "unreadable reply");
                            Fate::Error("unreadable reply".into())
                        }
                    };
                }
                Some((i, confirmed)) = confirms.next(), if !confirms.is_empty() => {
                    let failed = match confirmed {
                        Ok(Confirmation::Ack(Some(_))) => {
                            Some(("unroutable: no queue for this destination", false))
                        }
                        Ok(Confirmation::Nack(_)) => {
                            Some(("the broker refused the request (queue full?)", false))
                        }
                        Ok(_) => None,
                        Err(_) => Some(("the broker link failed", true)),
                    };
                    if let Some((reason, blameless)) = failed
                        && matches!(slots[i].outcome, Fate::Waiting)
                    {
                        slots[i].outcome = Fate::Error(reason.into());
                        slots[i].latency = Some(sent_at.elapsed());
                        settle.blameless[i] = blameless;
                    }
                }
                changed = channels.changed() => {
                    let same = changed.is_ok() && channel.status().connected();
                    if !same {
                        // The reply channel went with its broker link: no
                        // reply can reach this request any more.
                        for (i, slot) in slots.iter_mut().enumerate() {
                            if matches!(slot.outcome, Fate::Waiting) {
                                slot.outcome = Fate::Error("the broker link was lost before the reply".into());
                                settle.blameless[i] = true;
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    for (i, slot) in slots.iter_mut().enumerate() {
                        if matches!(slot.outcome, Fate::Waiting) {
                            slot.outcome = Fate::Timeout;
                            settle.blameless[i] = !blame_timeouts;
                        }
                    }
                    break CompletedBy::Timeout;
                }
            }
        };
        // Probes still out are awaited in the background; every other
        // destination still waited for is unanswered.
        let mut probes = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            if matches!(slot.outcome, Fate::Waiting) {
                slot.outcome = Fate::Unanswered;
                if let Some(permit) = settle.permits[i].take_if(|p| p.is_probe()) {
                    probes.push(Probe {
                        index: i,
                        name: slot.destination.clone(),
                        permit,
                    });
                }
            }
        }
        settle.finish(&slots);
        if !probes.is_empty() {
            tokio::spawn(self.clone().await_probes::<R>(
                probes,
                rx,
                guard,
                (sent_at, deadline),
                blame_timeouts,
            ));
        }
        Ok(Gathered {
            slots,
            completed_by,
        })
    }

    /// Waits for the replies of half-open probes a gather stopped waiting
    /// for, until their deadline, and records their outcomes.
    async fn await_probes<R: GatherReply>(
        self,
        mut probes: Vec<Probe>,
        mut rx: mpsc::UnboundedReceiver<Arrival>,
        guard: PendingGuard,
        (sent_at, deadline): (Instant, Instant),
        blame_timeouts: bool,
    ) {
        let _pending = guard;
        while !probes.is_empty() {
            tokio::select! {
                Some(arrival) = rx.recv() => {
                    let Some(at) = probes.iter().position(|p| p.index == arrival.index) else {
                        self.count_late();
                        continue;
                    };
                    let probe = probes.swap_remove(at);
                    let kind = match serde_json::from_slice::<R>(&arrival.body) {
                        Ok(reply) if reply.failure().is_none() => Kind::Reply,
                        _ => Kind::Error,
                    };
                    let latency = arrival.at.saturating_duration_since(sent_at);
                    self.record(&probe.name, probe.permit, kind, Some(latency), None, false);
                }
                () = tokio::time::sleep_until(deadline) => {
                    for probe in probes.drain(..) {
                        self.record(&probe.name, probe.permit, Kind::Timeout, None, None, !blame_timeouts);
                    }
                }
            }
        }
    }

    /// Hands one permit back with its call's outcome and keeps the figures.
    fn record(
        &self,
        name: &str,
        permit: Permit,
        kind: Kind,
        latency: Option<Duration>,
        error: Option<String>,
        blameless: bool,
    ) {
        let inner = &*self.inner;
        let now = Instant::now();
        let label = inner.settings.destination_label;
        let mut all = inner.destinations.lock().expect("destinations");
        let d = self.destination(&mut all, name);
        let outcome = match kind {
            Kind::Reply => "reply",
            Kind::Error => "error",
            Kind::Timeout => "timeout",
            Kind::Unknown => "unanswered",
        };
        metrics::counter!(inner.names.replies.clone(), label => name.to_owned(), "outcome" => outcome)
            .increment(1);
        match kind {
            Kind::Reply | Kind::Error | Kind::Timeout => {
                let success = kind == Kind::Reply;
                if blameless {
                    d.breaker.release(permit);
                } else {
                    d.breaker.record(permit, success, now);
                }
                if d.recent.len() == RECENT {
                    d.recent.pop_front();
                }
                d.recent.push_back((success, latency));
                match kind {
                    Kind::Reply => d.replies += 1,
                    Kind::Error => d.errors += 1,
                    _ => d.timeouts += 1,
                }
                if !success {
                    d.last_error = Some(error.unwrap_or_else(|| match kind {
                        Kind::Timeout => "no reply by the deadline".into(),
                        _ => "error reply".into(),
                    }));
                }
                if success && let Some(l) = latency {
                    metrics::histogram!(inner.names.latency.clone(), label => name.to_owned())
                        .record(l.as_secs_f64());
                }
            }
            Kind::Unknown => d.breaker.release(permit),
        }
        metrics::gauge!(inner.names.circuit.clone(), label => name.to_owned())
            .set(d.breaker.state(now).gauge());
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
                    tracing::warn!(node = %link.node, error = %pipeline::telemetry::chain(&e), "could not open the reply channel");
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
                            tracing::warn!(error = %pipeline::telemetry::chain(&e), "reply consumer failed");
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

/// A half-open probe still out when its gather completed.
struct Probe {
    index: usize,
    name: String,
    permit: Permit,
}

/// Hands every permit back to its breaker with the call's outcome (also when
/// the gather is dropped half-way: then the outcomes are unknown and the
/// permits are released).
struct Settle<'a> {
    sg: &'a ScatterGather,
    names: Vec<String>,
    permits: Vec<Option<Permit>>,
    /// Outcomes that are not the destination's doing (see `gather`).
    blameless: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reply,
    Error,
    Timeout,
    Unknown,
}

fn outcome_kind<R>(outcome: &Fate<R>) -> Kind {
    match outcome {
        Fate::Reply(_) => Kind::Reply,
        Fate::Error(_) => Kind::Error,
        Fate::Timeout => Kind::Timeout,
        Fate::Skipped | Fate::Waiting | Fate::Unanswered => Kind::Unknown,
    }
}

impl Settle<'_> {
    fn finish<R>(&mut self, slots: &[Slot<R>]) {
        for (i, slot) in slots.iter().enumerate() {
            let Some(permit) = self.permits[i].take() else {
                continue;
            };
            let error = match &slot.outcome {
                Fate::Error(e) => Some(e.clone()),
                _ => None,
            };
            self.sg.record(
                &slot.destination,
                permit,
                outcome_kind(&slot.outcome),
                slot.latency,
                error,
                self.blameless[i],
            );
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
