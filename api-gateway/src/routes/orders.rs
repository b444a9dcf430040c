//! `POST /orders` (idempotent intake) and `GET /orders/{id}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pipeline::domain::QuoteId;
use pipeline::domain::{ClientId, IdempotencyKey, InvalidField, OrderId, Quantity, Sku};
use pipeline::messages::{EventKind, OrderPlaced, now_ms};
use pipeline::trace::TraceParent;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::access::Access;
use crate::error::ApiError;
use crate::idempotency::{Intake, StoredResponse};
use crate::startup::AppState;
use clients::{Route, Scope};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `POST /orders` (scope `orders:write`, rate-limited) and
/// `GET /orders/{id}` (`orders:read`).
pub fn router(access: &Access) -> Router<AppState> {
    Router::new()
        .route(
            "/orders",
            access.guard_limited(post(create_order), Scope::OrdersWrite, Route::Orders),
        )
        .route(
            "/orders/{id}",
            access.guard(get(get_order), Scope::OrdersRead),
        )
}

/// A valid order request, before an id is assigned: the intake's own type.
pub use crate::idempotency::IntakeRequest as OrderRequest;

/// Parses a `POST /orders` JSON body, naming the offending field on any error.
pub fn parse_order(body: &[u8], max_qty: u32) -> Result<OrderRequest, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(invalid("body", "must be a JSON object"));
    };
    let id = match fields.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(OrderId::parse(&s).map_err(ApiError::InvalidField)?),
        Some(_) => return Err(invalid("id", "must be a string")),
    };
    let sku = match fields.remove("sku") {
        Some(Value::String(s)) => Sku::parse(&s).map_err(ApiError::InvalidField)?,
        None | Some(Value::Null) => return Err(invalid("sku", "is required")),
        Some(_) => return Err(invalid("sku", "must be a string")),
    };
    let qty = match fields.remove("qty") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(q) => Quantity::parse(q, max_qty).map_err(ApiError::InvalidField)?,
            None if n.is_u64() => {
                Quantity::parse(i64::MAX, max_qty).map_err(ApiError::InvalidField)?
            }
            None => return Err(invalid("qty", "must be a whole number")),
        },
        None | Some(Value::Null) => return Err(invalid("qty", "is required")),
        Some(_) => return Err(invalid("qty", "must be a whole number")),
    };
    let quote = match fields.remove("quote_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(QuoteId::parse(&s).map_err(ApiError::InvalidField)?),
        Some(_) => return Err(invalid("quote_id", "must be a string")),
    };
    if let Some(unknown) = unknown_field(&fields) {
        return Err(ApiError::InvalidField(InvalidField {
            field: "body",
            reason: format!("unknown field {unknown:?}; expected id, sku, qty, quote_id"),
        }));
    }
    Ok(OrderRequest {
        // The caller's, set by the handler from its key.
        client: ClientId::default_client(),
        id,
        sku,
        qty,
        quote,
    })
}

fn unknown_field(rest: &Map<String, Value>) -> Option<&str> {
    rest.keys().next().map(String::as_str)
}

fn invalid(field: &'static str, reason: &str) -> ApiError {
    ApiError::InvalidField(InvalidField {
        field,
        reason: reason.to_owned(),
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn create_order(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let (parts, body) = request.into_parts();
    let client = caller(&parts.extensions)?;
    if !is_json(&parts.headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // Read from the headers before the body takes them back; a bad key is
    // reported after the body's own errors.
    let key = idempotency_key(&parts.headers);
    let trace = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|t| t.child())
        .unwrap_or_else(TraceParent::generate);
    // The whole body within HTTP_BODY_TIMEOUT_MS: a client trickling it byte
    // by byte does not hold the connection (and a handler) for ever.
    let read = Bytes::from_request(Request::from_parts(parts, body), &());
    let body = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(state.body_timeout))?
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
            _ => ApiError::MalformedJson(rejection.body_text()),
        })?;
    let mut request = parse_order(&body, state.max_qty)?;
    request.client = client;
    let key = key?;

    // Run the intake in its own task: a client that hangs up mid-request must not
    // cancel it between the claim, the publish and the record.
    tokio::spawn(intake(state, request, key, trace, deadline))
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?
}

/// The `Idempotency-Key` header, if any. Only the header is an idempotency
/// key: without it, a body id is idempotent through its order record (a
/// separate key space).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|raw| {
            let raw = raw.to_str().map_err(|_| {
                ApiError::InvalidIdempotencyKey(InvalidField {
                    field: "Idempotency-Key",
                    reason: "must be visible ASCII".into(),
                })
            })?;
            IdempotencyKey::parse_header(raw).map_err(ApiError::InvalidIdempotencyKey)
        })
        .transpose()
}

/// An id whose records may have expired: the history decides. The same
/// payload is the same (finished) order, its acceptance replayed; another is
/// a conflict; an id the history never saw (a filter false positive) is
/// claimed as new.
async fn retired(
    state: &AppState,
    request: &OrderRequest,
    key: Option<&IdempotencyKey>,
    id: &OrderId,
) -> Result<Intake, ApiError> {
    metrics::counter!("retired_id_lookups_total").increment(1);
    let Some(history) = &state.history else {
        // Something retires orders, but this gateway has no history to ask.
        return Err(ApiError::HistoryUnavailable(anyhow::anyhow!(
            "order id {id} may name a retired order and HISTORY_URLS is none"
        )));
    };
    let known = history
        .order(id)
        .await
        .map_err(ApiError::HistoryUnavailable)?;
    match known {
        Some(order) => {
            let same = order.sku == request.sku.as_str()
                && order.qty == request.qty.get()
                && order.quote.map(|q| q.quote_id) == request.quote;
            Ok(if same {
                Intake::Accepted(id.clone())
            } else {
                Intake::IdConflict(id.clone())
            })
        }
        None => state
            .store
            .claim_unretired(request, key)
            .await
            .map_err(ApiError::StoreUnavailable),
    }
}

#[tracing::instrument(name = "intake", skip_all, fields(order_id, key = key.as_ref().map(|k| k.as_str()), trace_id = trace.trace_id()))]
async fn intake(
    state: AppState,
    request: OrderRequest,
    key: Option<IdempotencyKey>,
    trace: TraceParent,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let mut intake = state
        .store
        .claim(&request, key.as_ref())
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if let Intake::Retired(id) = &intake {
        intake = retired(&state, &request, key.as_ref(), id).await?;
    }
    let claim = match intake {
        Intake::Process(claim) => claim,
        Intake::Retired(id) => {
            return Err(ApiError::Unexpected(anyhow::anyhow!(
                "intake.lua said {id} is retired after the history was asked"
            )));
        }
        Intake::Replay(stored) => {
            metrics::counter!("idempotency_replays_total").increment(1);
            return Ok(order_response(&stored, true));
        }
        Intake::Accepted(id) => {
            metrics::counter!("idempotency_replays_total").increment(1);
            return Ok(order_response(&accepted_response(&id), true));
        }
        Intake::Conflict { retry_after } => {
            metrics::counter!("idempotency_conflicts_total").increment(1);
            return Err(ApiError::InFlight { retry_after });
        }
        Intake::Mismatch => {
            metrics::counter!("idempotency_mismatches_total").increment(1);
            return Err(ApiError::KeyReused);
        }
        Intake::IdConflict(id) => {
            metrics::counter!("order_id_conflicts_total").increment(1);
            return Err(ApiError::OrderIdConflict(id));
        }
        Intake::InvalidQuote(reason) => {
            metrics::counter!("invalid_quotes_total").increment(1);
            return Err(ApiError::InvalidQuote(reason));
        }
    };

    let id = claim.id.clone();
    tracing::Span::current().record("order_id", id.as_str());
    // The claim bound the id to this sku and qty; the message says the same.
    let message = OrderPlaced {
        id: id.clone(),
        sku: request.sku,
        qty: request.qty,
        placed_at_ms: now_ms(),
        quote: claim.quote.clone(),
    };
    let payload = serde_json::to_vec(&message).map_err(|e| ApiError::Unexpected(e.into()))?;
    let published = state
        .broker
        .publish_event(EventKind::Placed, &id, &payload, &trace, deadline)
        .await;
    if let Err(e) = published {
        if let Err(release) = state.store.release(&claim).await {
            // The lease still expires on its own; the retry waits for it.
            tracing::error!(
                error = format!("{release:#}"),
                "could not release the intake claim"
            );
        }
        return Err(ApiError::BrokerUnavailable(e));
    }

    let response = accepted_response(&id);
    if let Err(e) = state.store.accept(&claim, &response).await {
        // The broker has the order, so it is accepted: the processor records
        // it too, and a retry republishes the same id, decided once.
        tracing::error!(error = format!("{e:#}"), "order confirmed but not recorded");
    }
    metrics::counter!("orders_accepted_total").increment(1);
    tracing::debug!("order accepted");
    Ok(order_response(&response, false))
}

/// The client whose key the request carried (`clients::require` put it there).
fn caller(extensions: &axum::http::Extensions) -> Result<ClientId, ApiError> {
    extensions
        .get::<clients::Principal>()
        .map(|p| p.client.clone())
        .ok_or_else(|| {
            ApiError::Unexpected(anyhow::anyhow!("an order route without its key check"))
        })
}

/// The answer to an accepted order (first time, or replayed for an id): the
/// client's own id.
fn accepted_response(id: &OrderId) -> StoredResponse {
    StoredResponse {
        status: StatusCode::ACCEPTED.as_u16(),
        body: json!({"id": id.local(), "status": "accepted"}).to_string(),
    }
}

/// A 202 (or replayed) answer with `Location` and, for replays,
/// `Idempotent-Replayed: true`.
fn order_response(stored: &StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    let mut res = (status, stored.body.clone()).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let id = serde_json::from_str::<Value>(&stored.body)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
    if let Some(location) = id.and_then(|id| HeaderValue::try_from(format!("/orders/{id}")).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

/// `GET /orders/{id}`: the caller's own order; another client's id is 404,
/// exactly like an id nobody used.
async fn get_order(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<clients::Principal>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = OrderId::parse(&raw)
        .map_err(ApiError::InvalidField)?
        .scoped(&principal.client);
    let view = pipeline::view::load_order(&state.pool, &state.keys, &id, false)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if let Some(view) = view {
        return Ok(Json(view).into_response());
    }
    // A finished order's record expires (ORDER_RETENTION_SECS); the history
    // keeps it.
    let Some(history) = &state.history else {
        return Err(ApiError::OrderNotFound);
    };
    match history.order(&id).await {
        Ok(Some(order)) => Ok(Json(order.client_view()).into_response()),
        Ok(None) => Err(ApiError::OrderNotFound),
        Err(e) => Err(ApiError::HistoryUnavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<OrderRequest, ApiError> {
        parse_order(body.as_bytes(), 1000)
    }

    fn field_of(err: ApiError) -> &'static str {
        match err {
            ApiError::InvalidField(f) => f.field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_seed_example() {
        let req = parse(r#"{"id":"order123","sku":"mag-safe-phone-case","qty":2}"#).unwrap();
        assert_eq!(req.id.unwrap().as_str(), "order123");
        assert_eq!(req.qty.get(), 2);
    }

    #[test]
    fn id_is_optional() {
        assert!(parse(r#"{"sku":"s","qty":1}"#).unwrap().id.is_none());
        assert!(
            parse(r#"{"id":null,"sku":"s","qty":1}"#)
                .unwrap()
                .id
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(parse(r#"{"qty":1}"#).unwrap_err()), "sku");
        assert_eq!(field_of(parse(r#"{"sku":"s"}"#).unwrap_err()), "qty");
        assert_eq!(
            field_of(parse(r#"{"sku":"s","qty":0}"#).unwrap_err()),
            "qty"
        );
        assert_eq!(
            field_of(parse(r#"{"sku":"s","qty":1001}"#).unwrap_err()),
            "qty"
        );
        assert_eq!(
            field_of(parse(r#"{"sku":"s","qty":2.5}"#).unwrap_err()),
            "qty"
        );
        assert_eq!(
            field_of(parse(r#"{"sku":"s","qty":"2"}"#).unwrap_err()),
            "qty"
        );
        assert_eq!(
            field_of(parse(r#"{"sku":"s","qty":18446744073709551615}"#).unwrap_err()),
            "qty"
        );
        assert_eq!(
            field_of(parse(r#"{"sku":"a b","qty":1}"#).unwrap_err()),
            "sku"
        );
        assert_eq!(
            field_of(parse(r#"{"id":7,"sku":"s","qty":1}"#).unwrap_err()),
            "id"
        );
        assert_eq!(
            field_of(parse(r#"{"sku":"s","qty":1,"price":3}"#).unwrap_err()),
            "body"
        );
        assert_eq!(field_of(parse(r#"[1,2]"#).unwrap_err()), "body");
    }

    #[test]
    fn broken_json_is_malformed_not_invalid() {
        assert!(matches!(
            parse(r#"{"sku":"s","#),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(parse(""), Err(ApiError::MalformedJson(_))));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
