//! Every way a gateway request can fail, and the problem+json answer for each.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipeline::amqp::PublishError;
use pipeline::domain::InvalidField;
use pipeline::http::Problem;

/// How long a client should wait before retrying after a 503.
const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error("{0}")]
    InvalidField(InvalidField),
    #[error("{0}")]
    InvalidIdempotencyKey(InvalidField),
    #[error("a request with this idempotency key is still being processed")]
    InFlight { retry_after: Duration },
    #[error("this idempotency key was already used for a different request")]
    KeyReused,
    #[error(
        "order id {} already names an order with a different sku, qty or quote; choose a new id",
        .0.local()
    )]
    OrderIdConflict(pipeline::domain::OrderId),
    #[error("order not found")]
    OrderNotFound,
    #[error("could not hand the order to the broker")]
    BrokerUnavailable(#[source] PublishError),
    #[error("the order store is unavailable")]
    StoreUnavailable(#[source] anyhow::Error),
    #[error("the order is not in Redis and the order history does not answer; retry shortly")]
    HistoryUnavailable(#[source] anyhow::Error),
    #[error("no quote suppliers are configured (QUOTE_SUPPLIERS is empty)")]
    NoSuppliersConfigured,
    #[error("every supplier's circuit is open; retry once they have cooled down")]
    AllCircuitsOpen(serde_json::Value),
    #[error(
        "only {have} of the {wanted} answers asked for (min_responses) arrived by the deadline"
    )]
    QuotesTimeout {
        have: usize,
        wanted: usize,
        body: serde_json::Value,
    },
    #[error(
        "only {have} of the {wanted} answers asked for (min_responses) came back; the other suppliers failed"
    )]
    TooFewResponses {
        have: usize,
        wanted: usize,
        body: serde_json::Value,
    },
    #[error("fewer than {wanted} suppliers (min_responses) quoted the same unit price")]
    QuorumNotReached {
        wanted: usize,
        body: serde_json::Value,
    },
    #[error("no supplier that answered has the SKU in stock in that quantity")]
    NoAvailableSupplier(serde_json::Value),
    #[error("{0}")]
    Quotes(#[from] crate::quotes::QuoteError),
    #[error("{0}")]
    InvalidQuote(String),
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
}

/// A problem carrying a (partial) quote result as extension members.
fn with_result(mut problem: Problem, body: serde_json::Value) -> Problem {
    if let serde_json::Value::Object(fields) = body {
        for (name, value) in fields {
            problem = problem.with(&name, value);
        }
    }
    problem
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match self {
            Self::MalformedJson(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                    .detail(detail)
            }
            Self::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .detail(detail),
            Self::PayloadTooLarge(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            )
            .detail(detail),
            Self::BodyTimeout(_) => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
            )
            .detail(detail),
            Self::OrderIdConflict(_) => Problem::new(
                StatusCode::CONFLICT,
                "order-id-conflict",
                "Order id conflict",
            )
            .detail(detail),
            Self::InvalidField(f) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
            )
            .detail(detail)
            .field(f.field),
            Self::InvalidIdempotencyKey(f) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key header",
            )
            .detail(detail)
            .field(f.field),
            Self::InFlight { retry_after } => Problem::new(
                StatusCode::CONFLICT,
                "request-in-flight",
                "Request in flight",
            )
            .detail(detail)
            .retry_after(retry_after),
            Self::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            )
            .detail(detail),
            Self::OrderNotFound => {
                Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
                    .detail(detail)
            }
            Self::BrokerUnavailable(cause) => {
                tracing::warn!(error = %cause, "order not accepted: broker unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker-unavailable",
                    "Broker unavailable",
                )
                .detail(
                    "the order may or may not have been accepted (the broker did not confirm it in time); \
                     retry with the same Idempotency-Key or order id: it can never make a second order",
                )
                .retry_after(RETRY_AFTER_UNAVAILABLE)
            }
            Self::StoreUnavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "order store unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Store unavailable",
                )
                .detail("the order was not accepted; retry later")
                .retry_after(RETRY_AFTER_UNAVAILABLE)
            }
            Self::HistoryUnavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "order history unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "history-unavailable",
                    "History unavailable",
                )
                .detail(detail)
                .retry_after(RETRY_AFTER_UNAVAILABLE)
            }
            Self::NoSuppliersConfigured => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-suppliers-configured",
                "No suppliers configured",
            )
            .detail(detail),
            Self::AllCircuitsOpen(body) => with_result(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "all-circuits-open",
                    "All circuits open",
                )
                .detail(detail)
                .retry_after(RETRY_AFTER_UNAVAILABLE),
                body,
            ),
            Self::QuotesTimeout { body, .. } => with_result(
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "quotes-timeout",
                    "Quotes timeout",
                )
                .detail(detail),
                body,
            ),
            Self::TooFewResponses { body, .. } => with_result(
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "too-few-responses",
                    "Too few responses",
                )
                .detail(detail),
                body,
            ),
            Self::QuorumNotReached { body, .. } => with_result(
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "quorum-not-reached",
                    "Quorum not reached",
                )
                .detail(detail),
                body,
            ),
            Self::NoAvailableSupplier(body) => with_result(
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "no-available-supplier",
                    "No available supplier",
                )
                .detail(detail),
                body,
            ),
            Self::Quotes(crate::quotes::QuoteError::Gather(
                quotes::scatter::GatherError::TooManyPending(_),
            )) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-quote-requests",
                "Too many quote requests",
            )
            .detail(detail)
            .retry_after(RETRY_AFTER_UNAVAILABLE),
            Self::Quotes(crate::quotes::QuoteError::Gather(
                quotes::scatter::GatherError::Unavailable,
            )) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker-unavailable",
                "Broker unavailable",
            )
            .detail("no quote request could be sent: the broker is unreachable")
            .retry_after(RETRY_AFTER_UNAVAILABLE),
            Self::Quotes(crate::quotes::QuoteError::Store(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "quotes could not be kept");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Store unavailable",
                )
                .detail("the quotes could not be kept, so none can be ordered against; retry later")
                .retry_after(RETRY_AFTER_UNAVAILABLE)
            }
            Self::Quotes(crate::quotes::QuoteError::Budget { retry_after, .. }) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quote-budget-exhausted",
                "Quote budget exhausted",
            )
            .detail(format!(
                "{detail}; order against the quotes you hold or wait for them to expire"
            ))
            .retry_after(retry_after),
            Self::InvalidQuote(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-quote",
                "Invalid quote",
            )
            .detail(detail)
            .field("quote_id"),
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal server error",
                )
            }
        };
        problem.into_response()
    }
}
