//! dashboard: what an operator watches.
//!
//! A sampler reads the pipeline's figures (Redis counters, inventory from a SKU
//! registry kept current by keyspace notifications,
//! notification tallies, queue depths by passive declare, the order-history
//! replicas' health, the gateway's suppliers) every
//! `SAMPLE_INTERVAL_MS` and keeps `HISTORY_SECS` of them. `GET /` is a live page
//! fed by server-sent events from that sampler; `GET /metrics` reads fresh
//! figures as JSON or Prometheus text.
//!
//! Depends on `pipeline` only: no other service crate (it reads Redis, the
//! broker and the services' HTTP answers, typed by `pipeline::api`).

pub mod config;
pub mod gateway;
pub mod prometheus;
pub mod skus;
pub mod snapshot;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use pipeline::amqp::Broker;
use pipeline::domain::OrderId;
use pipeline::http::Problem;
use pipeline::keys::Keys;
use pipeline::service::Base;
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis;
use serde::Serialize;

use tokio::sync::watch;

pub use config::DashboardConfig;
use snapshot::Snapshot;

const PAGE: &str = include_str!("page.html");
/// Orders listed on the page.
const RECENT: isize = 20;
/// Anomalies listed on the page.
const ANOMALIES: isize = 5;

/// One point of the throughput history: cumulative counters at a moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub accepted: u64,
    pub reserved: u64,
    pub rejected: u64,
    pub notified: u64,
}

/// What every page gets each tick.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    pub snapshot: Snapshot,
    pub recent: Vec<serde_json::Value>,
    /// The newest messages parked for disagreeing with their order's record.
    pub anomalies: Vec<serde_json::Value>,
    pub point: Point,
    pub low_stock: i64,
}

#[derive(Clone)]
struct AppState {
    pool: Redis,
    keys: Keys,
    broker: Broker,
    updates: watch::Receiver<Option<Arc<Update>>>,
    history: Arc<Mutex<VecDeque<Point>>>,
    inventory: Arc<skus::SkuRegistry>,
    order_history: Option<pipeline::history::HistoryClient>,
    gateway: Option<gateway::GatewayClient>,
    /// One permit per open live page (`SSE_MAX_CLIENTS`).
    sse_clients: Arc<tokio::sync::Semaphore>,
    /// How often an idle live page gets a keep-alive comment: well inside the
    /// listener's idle timeout.
    keep_alive: std::time::Duration,
}

impl AppState {
    /// Every figure of the page, read now.
    async fn snapshot(&self) -> Snapshot {
        snapshot::collect(
            &self.pool,
            &self.keys,
            &self.broker,
            &self.inventory,
            self.order_history.as_ref(),
            self.gateway.as_ref(),
        )
        .await
    }
}

/// The help texts (`# HELP`) of the dashboard process's own metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "dashboard_inventory_scans_total",
        "Full SCANs for the inventory keys that filled the SKU registry (at start, after a \
         lost subscription, or every INVENTORY_RESCAN_SECS without notifications)."
    );
    metrics::describe_counter!(
        "sse_clients_refused_total",
        "Live pages refused with 503 because SSE_MAX_CLIENTS were already open."
    );
}

pub struct Dashboard {
    base: Base,
    config: DashboardConfig,
}

impl Dashboard {
    pub async fn build(
        config: DashboardConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let base = Base::start("dashboard", &config.service, shutdown).await?;
        describe_metrics();
        Ok(Self { base, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(None);
        let capacity = (self.config.history.as_millis()
            / self.config.sample_interval.as_millis().max(1)) as usize;
        let history = Arc::new(Mutex::new(VecDeque::with_capacity(capacity + 1)));
        let state = AppState {
            pool: self.base.pool.clone(),
            keys: self.base.keys.clone(),
            broker: self.base.broker.clone(),
            updates: rx,
            history: history.clone(),
            inventory: skus::SkuRegistry::new(self.config.inventory_rescan),
            order_history: self.config.order_history.client(),
            gateway: self.config.gateway.client(),
            sse_clients: Arc::new(tokio::sync::Semaphore::new(self.config.sse_max_clients)),
            keep_alive: (self.config.service.http.idle_timeout / 3)
                .min(std::time::Duration::from_secs(15)),
        };
        state.inventory.spawn_watcher(
            &self.config.service.redis,
            state.pool.clone(),
            state.keys.clone(),
            self.base.shutdown.clone(),
        );
        let sampler = tokio::spawn(sample(
            state.clone(),
            tx,
            self.config.clone(),
            capacity,
            self.base.shutdown.clone(),
        ));
        // Every view needs the admin key (Basic or Bearer); `/health` is open.
        let keys = clients::Keys::start(&self.config.keys, self.base.shutdown.clone())?;
        let router = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/metrics", get(metrics))
            .route("/events", get(events))
            .route("/orders/{id}", get(order))
            .route_layer(axum::middleware::from_fn_with_state(
                keys,
                clients::require_operator,
            ))
            .with_state(state)
            .merge(self.base.health_router());
        self.base
            .serve_then(router, async {
                let _ = sampler.await;
            })
            .await
    }
}

/// Reads the figures every interval and hands them to every open page.
async fn sample(
    state: AppState,
    tx: watch::Sender<Option<Arc<Update>>>,
    config: DashboardConfig,
    capacity: usize,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = state.snapshot().await;
        let recent = snapshot::recent_orders(&state.pool, &state.keys, RECENT)
            .await
            .unwrap_or_default();
        let anomalies = snapshot::recent_anomalies(&state.pool, &state.keys, ANOMALIES)
            .await
            .unwrap_or_default();
        let point = Point {
            at_ms: snapshot.at_ms,
            accepted: snapshot.orders.accepted,
            reserved: snapshot.orders.reserved,
            rejected: snapshot.orders.rejected,
            notified: snapshot.orders.notified,
        };
        {
            let mut history = state.history.lock().expect("history lock");
            history.push_back(point);
            while history.len() > capacity {
                history.pop_front();
            }
        }
        tx.send_replace(Some(Arc::new(Update {
            snapshot,
            recent,
            anomalies,
            point,
            low_stock: config.low_stock,
        })));
    }
}

/// `GET /metrics`: JSON, or Prometheus text when `Accept` asks for
/// `text/plain` or OpenMetrics (with the dashboard process's own counters
/// after the pipeline's figures).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshot().await;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/plain") || accept.contains("application/openmetrics-text") {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            // The pipeline's figures, then this process's own counters
            // (its HTTP requests, inventory scans, refused SSE clients).
            prometheus::render(&snapshot) + &pipeline::telemetry::prometheus().render(),
        )
            .into_response()
    } else {
        Json(snapshot).into_response()
    }
}

/// `GET /events`: server-sent events. First `history` (the stored points),
/// then an `update` per sample. At most `SSE_MAX_CLIENTS` at once; one more
/// is answered 503. A page that stops reading is closed by the listener's
/// idle timeout once its socket buffer is full.
async fn events(State(state): State<AppState>) -> Response {
    let Ok(permit) = state.sse_clients.clone().try_acquire_owned() else {
        metrics::counter!("sse_clients_refused_total").increment(1);
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-live-pages",
            "Too many live pages",
        )
        .detail("the dashboard serves SSE_MAX_CLIENTS live pages at once; retry shortly")
        .retry_after(std::time::Duration::from_secs(5))
        .into_response();
    };
    live(state, permit).into_response()
}

fn live(
    state: AppState,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let history: Vec<Point> = state
        .history
        .lock()
        .expect("history lock")
        .iter()
        .copied()
        .collect();
    let first = Event::default()
        .event("history")
        .json_data(&history)
        .unwrap_or_default();
    let mut rx = state.updates.clone();
    rx.mark_changed();
    let updates = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.changed().await.ok()?;
        let update = rx.borrow_and_update().clone();
        let event = match update {
            Some(u) => Event::default()
                .event("update")
                .json_data(&*u)
                .unwrap_or_default(),
            None => Event::default().comment("waiting for the first sample"),
        };
        Some((Ok(event), (rx, permit)))
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([Ok(first)]), updates);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(state.keep_alive))
}

/// `GET /orders/{id}`: the order's journey, with its notification; `id`
/// is qualified (`<client>/<id>`, the slash encoded as `%2F` in the path,
/// or the bare id of the client `default`).
async fn order(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    let id = match OrderId::parse_qualified(&raw) {
        Ok(id) => id,
        Err(e) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
            )
            .detail(e.to_string())
            .field(e.field)
            .into_response();
        }
    };
    let found = match pipeline::view::load_order(&state.pool, &state.keys, &id, true).await {
        // A finished order's records expire; the history keeps it.
        Ok(None) => match &state.order_history {
            Some(history) => Ok(history
                .order(&id)
                .await
                .ok()
                .flatten()
                .map(|order| serde_json::to_value(order).expect("an order view serializes"))),
            None => Ok(None),
        },
        other => other,
    };
    match found {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
            .detail(format!("no order with id {id}"))
            .into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot read the order");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Store unavailable",
            )
            .retry_after(std::time::Duration::from_secs(1))
            .into_response()
        }
    }
}
