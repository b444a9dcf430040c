//! The history's HTTP API: orders (filtered, newest first, keyset pages), one
//! order with its timeline, per-status stats, health with role and lag.
//! Every replica serves it (a standby reads the same database).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pipeline::api::{
    BrokerComponent, HistoryComponents, HistoryEvent, HistoryHealth, HistoryOrder, HistoryOrderPage,
};
use pipeline::domain::QuoteTerms;
use pipeline::domain::{OrderId, Sku};
use pipeline::http::Problem;
use pipeline::messages::EventKind;
use pipeline::order::OrderStatus;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

use crate::db::Pool;
use crate::replica::State as ReplicaState;

/// The most orders one page holds, and the default.
pub const MAX_LIMIT: i64 = 1000;
pub const DEFAULT_LIMIT: i64 = 100;

#[derive(Clone)]
pub struct Api {
    /// Who may read the history.
    pub access: clients::Keys,
    pub pool: Pool,
    pub replica: String,
    pub state: Arc<ReplicaState>,
    pub broker: pipeline::amqp::Broker,
}

/// Every route but `/health` needs the admin key (an operator's, or the
/// internal key the other services send as HISTORY_API_KEY).
pub fn router(api: Api) -> Router {
    let access = api.access.clone();
    Router::new()
        .route("/", get(root))
        .route("/orders", get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/stats", get(stats))
        .route("/metrics", get(pipeline::http::prometheus_metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            (access, clients::Scope::Admin),
            clients::require,
        ))
        .route("/health", get(health))
        .with_state(api)
}

/// Every way a history request fails.
#[derive(Debug)]
pub enum ApiError {
    InvalidQuery { field: String, detail: String },
    InvalidId(String),
    NotFound,
    Unavailable(anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::InvalidQuery { field, detail } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
                    .detail(detail)
                    .field(field)
            }
            Self::InvalidId(detail) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
            )
            .detail(detail)
            .field("id"),
            Self::NotFound => {
                Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
                    .detail("the history holds no order with this id")
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "history database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "history-unavailable",
                    "History unavailable",
                )
                .detail("the history database does not answer; retry shortly")
                .retry_after(std::time::Duration::from_secs(1))
            }
        }
        .into_response()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Unavailable(e.into())
    }
}

fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::InvalidQuery {
        field: field.to_owned(),
        detail: detail.into(),
    }
}

async fn client(pool: &Pool) -> Result<deadpool::managed::Object<crate::db::Manager>, ApiError> {
    pool.get()
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::anyhow!("{e}")))
}

async fn root() -> Json<Value> {
    Json(json!({
        "service": "order-history",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "ok",
    }))
}

/// The filters of `GET /orders`, validated.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    /// One client's orders only.
    pub client: Option<String>,
    pub status: Option<OrderStatus>,
    pub sku: Option<String>,
    /// A PostgreSQL timestamp (RFC 3339 works) or ms since the epoch.
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: i64,
    /// Orders older than this page's last (`next_cursor`).
    pub cursor: Option<i64>,
}

const QUERY_FIELDS: [&str; 7] = [
    "client", "status", "sku", "since", "until", "limit", "cursor",
];

/// Reads the query string; an unknown parameter or a bad value is an error
/// naming it (a typo must not silently widen a filter).
pub fn parse_filter(query: &HashMap<String, String>) -> Result<Filter, ApiError> {
    if let Some(unknown) = query.keys().find(|k| !QUERY_FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            unknown,
            format!(
                "unknown parameter {unknown:?}; use {}",
                QUERY_FIELDS.join(", ")
            ),
        ));
    }
    let mut filter = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    if let Some(raw) = query.get("status") {
        filter.status = Some(OrderStatus::parse(raw).ok_or_else(|| {
            let all: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
            invalid(
                "status",
                format!("unknown status {raw:?}; one of {}", all.join(", ")),
            )
        })?);
    }
    if let Some(raw) = query.get("client") {
        filter.client = Some(
            pipeline::domain::ClientId::parse(raw)
                .map_err(|e| invalid("client", e.to_string()))?
                .to_string(),
        );
    }
    if let Some(raw) = query.get("sku") {
        filter.sku = Some(
            Sku::parse(raw)
                .map_err(|e| invalid("sku", e.to_string()))?
                .to_string(),
        );
    }
    for (field, slot) in [("since", &mut filter.since), ("until", &mut filter.until)] {
        if let Some(raw) = query.get(field) {
            if raw.trim().is_empty() || raw.len() > 64 {
                return Err(invalid(
                    field,
                    "expected a timestamp such as 2026-11-29T10:00:00Z or milliseconds since the epoch",
                ));
            }
            *slot = Some(raw.trim().to_owned());
        }
    }
    if let Some(raw) = query.get("limit") {
        filter.limit = raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(
                    "limit",
                    format!("expected a whole number from 1 to {MAX_LIMIT}, got {raw:?}"),
                )
            })?;
    }
    if let Some(raw) = query.get("cursor") {
        filter.cursor = Some(raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            invalid(
                "cursor",
                format!("{raw:?} is not a cursor; pass the next_cursor of the previous page"),
            )
        })?);
    }
    Ok(filter)
}

/// A timestamp the client sent, as PostgreSQL reads it; a 400 if it cannot.
async fn timestamp(
    client: &tokio_postgres::Client,
    field: &str,
    raw: Option<&str>,
) -> Result<Option<std::time::SystemTime>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(ms) = raw.parse::<u64>() {
        // 9999-12-31T23:59:59.999Z at most.
        if ms > 253_402_300_799_999 {
            return Err(invalid(field, format!("{ms} ms is past the year 9999")));
        }
        return Ok(Some(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        ));
    }
    match client
        .query_one("SELECT $1::text::timestamptz", &[&raw])
        .await
    {
        Ok(row) => Ok(Some(row.get(0))),
        Err(e) if e.as_db_error().is_some() => Err(invalid(
            field,
            format!(
                "{raw:?} is not a timestamp; use e.g. 2026-11-29T10:00:00Z or milliseconds since the epoch"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

const ORDER_COLUMNS: &str = "id, sku, qty, status, reason, timestamps::text, first_offset, client";

fn order_view(row: &tokio_postgres::Row) -> Result<HistoryOrder, ApiError> {
    let id: String = row.get(0);
    let status: String = row.get(3);
    let qty: i32 = row.get(2);
    let timestamps: String = row.get(5);
    let broken = |what: String| ApiError::Unavailable(anyhow::anyhow!("order {id}: {what}"));
    Ok(HistoryOrder {
        id: OrderId::parse_qualified(&id).map_err(|e| broken(e.to_string()))?,
        client: row.get(7),
        status: OrderStatus::parse(&status)
            .ok_or_else(|| broken(format!("unknown status {status:?}")))?,
        sku: row.get(1),
        qty: u32::try_from(qty).map_err(|_| broken(format!("qty {qty}")))?,
        reason: row.get(4),
        timestamps_ms: serde_json::from_str(&timestamps)
            .map_err(|e| broken(format!("timestamps {timestamps:?}: {e}")))?,
        source: "history".to_owned(),
        quote: None,
        events: None,
    })
}

async fn list_orders(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<HistoryOrderPage>, ApiError> {
    let filter = parse_filter(&query)?;
    let client = client(&api.pool).await?;
    let since = timestamp(&client, "since", filter.since.as_deref()).await?;
    let until = timestamp(&client, "until", filter.until.as_deref()).await?;
    let status = filter.status.map(OrderStatus::as_str);
    let rows = client
        .query(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders
                  WHERE ($7::text IS NULL OR client = $7)
                    AND ($1::text IS NULL OR status = $1)
                    AND ($2::text IS NULL OR sku = $2)
                    AND ($3::timestamptz IS NULL OR placed_at >= $3)
                    AND ($4::timestamptz IS NULL OR placed_at < $4)
                    AND ($5::int8 IS NULL OR first_offset < $5)
                  ORDER BY first_offset DESC
                  LIMIT $6"
            ),
            &[
                &status,
                &filter.sku,
                &since,
                &until,
                &filter.cursor,
                &filter.limit,
                &filter.client,
            ],
        )
        .await?;
    let next_cursor = (rows.len() as i64 == filter.limit)
        .then(|| rows.last().map(|r| r.get::<_, i64>(6).to_string()))
        .flatten();
    let orders = rows.iter().map(order_view).collect::<Result<_, _>>()?;
    Ok(Json(HistoryOrderPage {
        orders,
        next_cursor,
    }))
}

async fn get_order(
    State(api): State<Api>,
    Path(raw): Path<String>,
) -> Result<Json<HistoryOrder>, ApiError> {
    let id = OrderId::parse_qualified(&raw).map_err(|e| ApiError::InvalidId(e.to_string()))?;
    let client = client(&api.pool).await?;
    let row = client
        .query_opt(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"),
            &[&id.as_str()],
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    let events = client
        .query(
            "SELECT event_id, kind, stream_offset, at_ms, reason, trace_id, (body->'quote')::text
               FROM events WHERE order_id = $1 ORDER BY stream_offset",
            &[&id.as_str()],
        )
        .await?;
    let mut view = order_view(&row)?;
    // A quote-backed order's supplier and price, from its placed event.
    view.quote = events.iter().find_map(|e| {
        (e.get::<_, String>(1) == "placed")
            .then(|| e.get::<_, Option<String>>(6))
            .flatten()
            .and_then(|raw| serde_json::from_str::<QuoteTerms>(&raw).ok())
    });
    view.events = Some(
        events
            .iter()
            .map(|e| HistoryEvent {
                id: e.get(0),
                kind: e.get(1),
                offset: e.get(2),
                at_ms: e.get(3),
                reason: e.get(4),
                trace_id: e.get(5),
            })
            .collect(),
    );
    Ok(Json(view))
}

/// Orders per current status and events per kind. Once the pipeline has
/// drained, `orders.total` = `counters.accepted`, `events.created` =
/// `counters.reserved`, `events.rejected` = `counters.rejected`,
/// `events.notified` = `counters.notified`.
async fn stats(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let client = client(&api.pool).await?;
    let mut orders = serde_json::Map::new();
    for s in OrderStatus::ALL {
        orders.insert(s.as_str().into(), json!(0));
    }
    let mut total = 0i64;
    for row in client
        .query("SELECT status, count(*) FROM orders GROUP BY status", &[])
        .await?
    {
        let n: i64 = row.get(1);
        total += n;
        orders.insert(row.get::<_, String>(0), json!(n));
    }
    orders.insert("total".into(), json!(total));
    let mut events = serde_json::Map::new();
    for k in EventKind::ALL {
        events.insert(k.as_str().into(), json!(0));
    }
    for row in client
        .query("SELECT kind, count(*) FROM events GROUP BY kind", &[])
        .await?
    {
        events.insert(row.get::<_, String>(0), json!(row.get::<_, i64>(1)));
    }
    let unreadable: i64 = client
        .query_one("SELECT count(*) FROM unreadable_events", &[])
        .await?
        .get(0);
    let checkpoint: Option<i64> = client
        .query_opt("SELECT max(stream_offset) FROM checkpoint", &[])
        .await?
        .and_then(|r| r.get(0));
    Ok(Json(json!({
        "orders": orders,
        "events": events,
        "unreadable": unreadable,
        "checkpoint": checkpoint,
    })))
}

/// 200 while the database answers (active or standby), 503 otherwise; the
/// role, the checkpoint, the stream's tail and the lag between them.
async fn health(State(api): State<Api>) -> Response {
    let ping = async {
        let client = client(&api.pool).await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok::<_, ApiError>(())
    };
    let db_up = matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), ping).await,
        Ok(Ok(()))
    );
    let broker = api.broker.current();
    let state = &api.state;
    let up = |yes: bool| if yes { "up" } else { "down" }.to_owned();
    let body = HistoryHealth {
        service: "order-history".to_owned(),
        status: if db_up { "ok" } else { "degraded" }.to_owned(),
        replica: api.replica.clone(),
        role: if state.is_active() {
            "active"
        } else {
            "standby"
        }
        .to_owned(),
        checkpoint: state.checkpoint(),
        tail: state.tail(),
        lag_events: state.lag(),
        applied: state.applied.load(Ordering::Relaxed),
        became_active: state.became_active.load(Ordering::Relaxed),
        active_since_ms: Some(state.active_since_ms.load(Ordering::Relaxed)).filter(|t| *t > 0),
        components: HistoryComponents {
            postgres: up(db_up),
            broker: BrokerComponent {
                status: up(broker.is_some()),
                node: broker.map(|l| l.node.clone()),
            },
        },
    };
    let status = if db_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidQuery { field, .. } => field,
            other => panic!("expected an invalid query, got {other:?}"),
        }
    }

    #[test]
    fn filters_are_read_and_checked() {
        let f = parse_filter(&query(&[
            ("status", "rejected"),
            ("sku", "mag-safe-phone-case"),
            ("limit", "10"),
            ("cursor", "42"),
            ("since", "2026-11-29T10:00:00Z"),
        ]))
        .unwrap();
        assert_eq!(f.status, Some(OrderStatus::Rejected));
        assert_eq!((f.limit, f.cursor), (10, Some(42)));
        assert_eq!(parse_filter(&query(&[])).unwrap().limit, DEFAULT_LIMIT);
        for (k, v) in [
            ("status", "pending"),
            ("sku", "no spaces"),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "ten"),
            ("cursor", "-1"),
            ("cursor", "abc"),
            ("since", " "),
            ("statsu", "rejected"),
        ] {
            assert_eq!(field_of(parse_filter(&query(&[(k, v)])).unwrap_err()), k);
        }
    }
}
