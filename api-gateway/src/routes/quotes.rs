//! `GET /quotes/{sku}` (scatter-gather over the suppliers) and
//! `GET /suppliers` (each supplier's circuit and figures).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pipeline::api::SuppliersReport;
use pipeline::domain::{InvalidField, Quantity, Sku};
use quotes::scatter::{Fate, Slot};
use quotes::{Judgement, QuoteReply, Strategy, utc_timestamp};
use serde_json::{Value, json};

use crate::access::Access;
use crate::error::ApiError;
use crate::quotes::{Answer, Ask, IssuedQuote, QuotesConfig};
use crate::startup::AppState;
use clients::{Route, Scope};

/// `GET /quotes/{sku}` (scope `quotes:read`) and `GET /suppliers` (`admin`).
pub fn router(access: &Access) -> Router<AppState> {
    Router::new()
        .route(
            "/quotes/{sku}",
            access.guard_limited(get(get_quotes), Scope::QuotesRead, Route::Quotes),
        )
        .route("/suppliers", access.guard(get(get_suppliers), Scope::Admin))
}

const PARAMETERS: &str = "qty, strategy, min_responses, timeout_ms";

/// Reads `qty`, `strategy`, `min_responses`, `timeout_ms`; an unknown,
/// repeated or bad parameter is refused with its name.
pub fn parse_ask(
    sku: &str,
    query: &[(String, String)],
    config: &QuotesConfig,
    max_qty: u32,
) -> Result<Ask, ApiError> {
    let sku = Sku::parse(sku).map_err(ApiError::InvalidField)?;
    let mut seen: Vec<&str> = Vec::new();
    let (mut qty, mut strategy, mut min_responses, mut timeout) = (None, None, None, None);
    for (name, value) in query {
        let field: &'static str = match name.as_str() {
            "qty" => "qty",
            "strategy" => "strategy",
            "min_responses" => "min_responses",
            "timeout_ms" => "timeout_ms",
            other => {
                return Err(invalid(
                    "query",
                    format!("unknown parameter {other:?}; use {PARAMETERS}"),
                ));
            }
        };
        if seen.contains(&field) {
            return Err(invalid(field, "is given more than once".into()));
        }
        seen.push(field);
        let number = || {
            value
                .parse::<i64>()
                .map_err(|_| invalid(field, format!("must be a whole number, got {value:?}")))
        };
        match field {
            "qty" => {
                qty = Some(Quantity::parse(number()?, max_qty).map_err(ApiError::InvalidField)?)
            }
            "strategy" => {
                strategy = Some(Strategy::parse(value).ok_or_else(|| {
                    invalid(
                        "strategy",
                        format!("unknown strategy {value:?}; one of {}", Strategy::NAMES),
                    )
                })?);
            }
            "min_responses" => min_responses = Some(number()?),
            _ => timeout = Some(number()?),
        }
    }
    let strategy = strategy.unwrap_or(Strategy::All);
    let explicit_min = min_responses.is_some();
    let n = config.suppliers.len();
    let min_responses = match min_responses {
        None => strategy.default_min_responses(n),
        Some(k) if k >= 1 && (k as usize) <= n.max(1) => k as usize,
        Some(k) => {
            return Err(invalid(
                "min_responses",
                format!("must be from 1 to the number of suppliers ({n}), got {k}"),
            ));
        }
    };
    let max = config.max_timeout.as_millis() as i64;
    let timeout = match timeout {
        None => config.default_timeout,
        Some(ms) if (1..=max).contains(&ms) => Duration::from_millis(ms as u64),
        Some(ms) => {
            return Err(invalid(
                "timeout_ms",
                format!("must be from 1 to {max} (QUOTE_MAX_TIMEOUT_MS), got {ms}"),
            ));
        }
    };
    Ok(Ask {
        // The caller's, set by the handler from its key.
        client: pipeline::domain::ClientId::default_client(),
        sku,
        qty: qty.unwrap_or(Quantity::parse(1, max_qty).map_err(ApiError::InvalidField)?),
        strategy,
        min_responses,
        explicit_min,
        timeout,
    })
}

fn invalid(field: &'static str, reason: String) -> ApiError {
    ApiError::InvalidField(InvalidField { field, reason })
}

async fn get_quotes(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<clients::Principal>,
    Path(sku): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let quotes = &state.quotes;
    if quotes.config().suppliers.is_empty() {
        return Err(ApiError::NoSuppliersConfigured);
    }
    let mut ask = parse_ask(&sku, &query, quotes.config(), state.max_qty)?;
    ask.client = principal.client;
    // In its own task: a client that hangs up does not cut a gather short
    // (its permits and pending entry are settled either way).
    let answer = tokio::spawn({
        let quotes = quotes.clone();
        async move { quotes.ask(ask).await }
    })
    .await
    .map_err(|e| ApiError::Unexpected(e.into()))??;
    let body = answer_body(&answer);
    match &answer.judgement {
        Judgement::Found { .. } => Ok(Json(body).into_response()),
        Judgement::AllCircuitsOpen => Err(ApiError::AllCircuitsOpen(body)),
        Judgement::TooFewByDeadline { have } => Err(ApiError::QuotesTimeout {
            have: *have,
            wanted: answer.ask.min_responses,
            body,
        }),
        Judgement::TooFewAnswers { have } => Err(ApiError::TooFewResponses {
            have: *have,
            wanted: answer.ask.min_responses,
            body,
        }),
        Judgement::QuorumNotReached => Err(ApiError::QuorumNotReached {
            wanted: answer.ask.min_responses,
            body,
        }),
        Judgement::NoneInStock => Err(ApiError::NoAvailableSupplier(body)),
    }
}

/// The result body (also the partial result inside a problem).
fn answer_body(answer: &Answer) -> Value {
    let ask = &answer.ask;
    let quote = |q: &IssuedQuote| {
        json!({
            "quote_id": q.id.as_str(),
            "supplier": q.offer.supplier.as_str(),
            "sku": ask.sku.as_str(),
            "qty": ask.qty.get(),
            "unit_price_minor": q.offer.unit_price_minor,
            "total_minor": q.offer.total_minor,
            "currency": q.offer.currency.as_str(),
            "delivery_days": q.offer.delivery_days,
            "valid_until": utc_timestamp(q.valid_until_ms),
            "valid_until_ms": q.valid_until_ms,
        })
    };
    let find = |supplier: &str| {
        answer
            .quotes
            .iter()
            .find(|q| q.offer.supplier.as_str() == supplier)
            .map(quote)
    };
    // Without a result (a problem), the in-stock answers are still shown,
    // but with no quote id: they cannot be ordered against.
    let quotes: Vec<Value> = if answer.quotes.is_empty() {
        quotes::offers(&answer.slots)
            .iter()
            .map(|o| {
                json!({
                    "quote_id": null,
                    "supplier": o.supplier.as_str(),
                    "sku": ask.sku.as_str(),
                    "qty": ask.qty.get(),
                    "unit_price_minor": o.unit_price_minor,
                    "total_minor": o.total_minor,
                    "currency": o.currency.as_str(),
                    "delivery_days": o.delivery_days,
                })
            })
            .collect()
    } else {
        answer.quotes.iter().map(quote).collect()
    };
    let mut body = json!({
        "sku": ask.sku.as_str(),
        "qty": ask.qty.get(),
        "strategy": ask.strategy.as_str(),
        "min_responses": ask.min_responses,
        "timeout_ms": ask.timeout.as_millis() as u64,
        "completed_by": answer.completed_by.as_str(),
        "quotes": quotes,
        "suppliers": answer.slots.iter().map(supplier_entry).collect::<Vec<_>>(),
    });
    if let Judgement::Found { chosen, offers } = &answer.judgement {
        body["quote"] = find(chosen.supplier.as_str()).unwrap_or(Value::Null);
        if ask.strategy == Strategy::All {
            body["cheapest"] = quotes::cheapest(offers)
                .and_then(|o| find(o.supplier.as_str()))
                .unwrap_or(Value::Null);
            body["fastest"] = quotes::fastest_delivery(offers)
                .and_then(|o| find(o.supplier.as_str()))
                .unwrap_or(Value::Null);
        }
    }
    body
}

fn supplier_entry(slot: &Slot<QuoteReply>) -> Value {
    let (outcome, detail) = match &slot.outcome {
        Fate::Reply(QuoteReply::Quoted { .. }) => ("quoted", None),
        Fate::Reply(QuoteReply::Unavailable { reason, stock, .. }) => (
            "unavailable",
            Some(json!({"reason": reason.as_str(), "stock": stock})),
        ),
        Fate::Reply(QuoteReply::Failed { error, .. }) | Fate::Error(error) => {
            ("error", Some(json!({"error": error})))
        }
        Fate::Timeout => ("timeout", None),
        Fate::Skipped => ("skipped", None),
        Fate::Waiting | Fate::Unanswered => ("unanswered", None),
    };
    let mut entry = json!({
        "supplier": slot.destination,
        "outcome": outcome,
        "responded": matches!(slot.outcome, Fate::Reply(_)),
        "latency_ms": slot.latency.map(|l| (l.as_secs_f64() * 1000.0 * 10.0).round() / 10.0),
        "circuit": slot.circuit.as_str(),
    });
    if let Some(Value::Object(detail)) = detail {
        for (k, v) in detail {
            entry[k] = v;
        }
    }
    entry
}

/// Each configured supplier's circuit, success rate and latency (this
/// gateway process's view), plus the pending and late counts.
async fn get_suppliers(State(state): State<AppState>) -> Json<SuppliersReport> {
    let quotes = &state.quotes;
    Json(SuppliersReport {
        suppliers: quotes.status(),
        pending_requests: quotes.pending() as u64,
        late_replies: quotes.late_replies(),
        reply_consumer: if quotes.ready() { "up" } else { "down" }.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::domain::SupplierId;

    fn config() -> QuotesConfig {
        QuotesConfig::with_suppliers(
            ["acme", "globex", "initech"]
                .iter()
                .map(|s| SupplierId::parse(s).unwrap())
                .collect(),
        )
    }

    fn ask(query: &str) -> Result<Ask, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
        parse_ask("mag-safe-phone-case", &pairs, &config(), 1000)
    }

    fn serde_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn field(err: ApiError) -> &'static str {
        match err {
            ApiError::InvalidField(f) => f.field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn defaults_per_strategy() {
        let a = ask("").unwrap();
        assert_eq!(
            (a.qty.get(), a.strategy, a.min_responses),
            (1, Strategy::All, 1)
        );
        assert_eq!(a.timeout, Duration::from_millis(1000));
        let cheapest = ask("strategy=cheapest").unwrap();
        assert_eq!((cheapest.min_responses, cheapest.explicit_min), (1, false));
        assert!(
            ask("strategy=cheapest&min_responses=1")
                .unwrap()
                .explicit_min
        );
        assert_eq!(ask("strategy=quorum").unwrap().min_responses, 2);
        assert_eq!(ask("strategy=fastest").unwrap().min_responses, 1);
        let a = ask("qty=2&strategy=quorum&min_responses=3&timeout_ms=250").unwrap();
        assert_eq!((a.qty.get(), a.min_responses), (2, 3));
        assert_eq!(a.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        assert_eq!(field(ask("qty=0").unwrap_err()), "qty");
        assert_eq!(field(ask("qty=two").unwrap_err()), "qty");
        assert_eq!(field(ask("qty=1001").unwrap_err()), "qty");
        assert_eq!(field(ask("strategy=best").unwrap_err()), "strategy");
        assert_eq!(field(ask("min_responses=4").unwrap_err()), "min_responses");
        assert_eq!(field(ask("min_responses=0").unwrap_err()), "min_responses");
        assert_eq!(field(ask("timeout_ms=0").unwrap_err()), "timeout_ms");
        assert_eq!(field(ask("timeout_ms=10001").unwrap_err()), "timeout_ms");
        assert_eq!(field(ask("timeout_ms=1.5").unwrap_err()), "timeout_ms");
        assert_eq!(field(ask("qty=1&qty=2").unwrap_err()), "qty");
        assert_eq!(field(ask("price=1").unwrap_err()), "query");
        assert_eq!(
            field(parse_ask("a b", &[], &config(), 10).unwrap_err()),
            "sku"
        );
    }
}
