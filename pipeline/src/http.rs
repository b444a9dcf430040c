//! HTTP pieces every service shares: RFC 9457 problem responses, the Prometheus
//! endpoint, per-route request metrics and a server that drains on shutdown.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An `application/problem+json` body (RFC 9457).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The offending request field, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds after which a retry may succeed; also sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl Problem {
    /// `slug` becomes the type URI `/problems/<slug>`, documented in the README.
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            field: None,
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// `GET /metrics`: the process's Prometheus registry in text format.
pub async fn prometheus_metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::prometheus().render(),
    )
}

/// Middleware: counts requests by route template and status, and times them.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// What `/`, `/health` and `/metrics` need from a service.
#[derive(Clone)]
pub struct Ops {
    pub service: &'static str,
    pub pool: deadpool_redis::Pool,
    pub broker: crate::amqp::Broker,
}

/// `GET /` (name and version), `GET /health` (Redis and broker state) and
/// `GET /metrics` (Prometheus text), the same on every service.
pub fn ops_router<S: Clone + Send + Sync + 'static>(ops: Ops) -> Router<S> {
    let root = {
        let service = ops.service;
        move || async move {
            axum::Json(serde_json::json!({
                "service": service,
                "version": env!("CARGO_PKG_VERSION"),
                "status": "ok",
            }))
        }
    };
    health_router(ops)
        .route("/", axum::routing::get(root))
        .route("/metrics", axum::routing::get(prometheus_metrics))
}

/// `GET /health` alone, for a service that serves its own `/` and `/metrics`.
pub fn health_router<S: Clone + Send + Sync + 'static>(ops: Ops) -> Router<S> {
    let health = move || {
        let ops = ops.clone();
        async move { health(&ops).await }
    };
    Router::new().route("/health", axum::routing::get(health))
}

/// 200 when Redis answers and a broker link is open, 503 otherwise, with the
/// state of each.
async fn health(ops: &Ops) -> Response {
    let redis_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), crate::store::ping(&ops.pool)).await,
        Ok(Ok(()))
    );
    let link = ops.broker.current();
    let healthy = redis_ok && link.is_some();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "service": ops.service,
        "status": if healthy { "ok" } else { "degraded" },
        "components": {
            "redis": if redis_ok { "up" } else { "down" },
            "broker": match &link {
                Some(l) => serde_json::json!({"status": "up", "node": l.node}),
                None => serde_json::json!({"status": "down"}),
            },
        },
    });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_carries_type_status_and_retry_after() {
        let res = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "broker-unavailable", "x")
            .retry_after(Duration::from_millis(1200))
            .into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
