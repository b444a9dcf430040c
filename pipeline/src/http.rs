//! HTTP pieces every service shares: RFC 9457 problem responses, the Prometheus
//! endpoint, per-route request metrics, problem+json for every error, and a
//! server that bounds slow and idle clients and drains on shutdown.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
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
    /// Extension members (RFC 9457 §3.2), such as a partial result.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
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
            extra: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra.insert(name.to_owned(), value);
        self
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

/// Turns every error answer that is not already `application/problem+json`
/// (the framework's own 404 for an unknown route, 405 for a wrong method, 400
/// for a path it cannot decode, a 413 from a body limit, ...) into one, so a
/// client meets one error format everywhere. A 5xx never carries the original
/// text (it goes to the log).
pub async fn problems_everywhere(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // A problem already, or a deliberate JSON answer (a degraded `/health`).
    let is_json = res.headers().get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.starts_with(b"application/problem+json") || ct.starts_with(b"application/json")
    });
    if is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (slug, title) = match status {
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("request-timeout", "Request timeout"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid-request", "Invalid request"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service unavailable"),
        s if s.is_server_error() => ("internal", "Internal server error"),
        _ => ("http-error", status.canonical_reason().unwrap_or("Error")),
    };
    let detail = match status {
        StatusCode::NOT_FOUND => format!("nothing here: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if allowed.is_empty() {
                format!("{method} is not allowed on {path}")
            } else {
                format!("{method} is not allowed on {path}; allowed: {allowed}")
            }
        }
        s if s.is_server_error() => {
            if !text.is_empty() {
                tracing::error!(%status, %path, body = %text, "error answer");
            }
            String::new()
        }
        _ => text,
    };
    let mut problem = Problem::new(status, slug, title);
    if !detail.is_empty() {
        problem = problem.detail(detail);
    }
    let mut out = problem.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// How every listener protects itself from slow, idle and too many clients.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// The most a client may take to send a request's head (also bounds an
    /// idle keep-alive connection waiting for its next request).
    #[arg(id = "HTTP_HEADER_TIMEOUT_MS", long = "http-header-timeout-ms", env = "HTTP_HEADER_TIMEOUT_MS", default_value = "10000", value_parser = crate::config::millis)]
    pub header_timeout: Duration,
    /// The most a handler waits for a request's whole body.
    #[arg(id = "HTTP_BODY_TIMEOUT_MS", long = "http-body-timeout-ms", env = "HTTP_BODY_TIMEOUT_MS", default_value = "10000", value_parser = crate::config::millis)]
    pub body_timeout: Duration,
    /// A connection on which no byte moves, either way, for this long is
    /// closed: an idle keep-alive connection, or a client that stopped reading.
    #[arg(id = "HTTP_IDLE_TIMEOUT_MS", long = "http-idle-timeout-ms", env = "HTTP_IDLE_TIMEOUT_MS", default_value = "30000", value_parser = crate::config::millis)]
    pub idle_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    #[arg(id = "HTTP_MAX_CONNECTIONS", long = "http-max-connections", env = "HTTP_MAX_CONNECTIONS", default_value = "1024", value_parser = crate::config::at_least::<usize>(1))]
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish (for at most
/// [`DRAIN_TIMEOUT`]).
///
/// Each connection is served by hyper's HTTP/1 server with a header-read
/// timeout, watched for idleness, and counted against the connection cap.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: &Limits,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn(problems_everywhere));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let connections = metrics::gauge!("http_open_connections");
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // accept: back off a moment rather than spin.
                    tracing::warn!(error = %crate::telemetry::chain(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::default();
        let io = hyper_util::rt::TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(io, service));
        let idle = limits.idle_timeout;
        let connections = connections.clone();
        connections.increment(1.0);
        tokio::spawn(async move {
            tokio::select! {
                served = conn => if let Err(e) = served {
                    tracing::debug!(error = %crate::telemetry::chain(&e), "connection ended with an error");
                },
                () = activity.idle_for(idle) => {
                    metrics::counter!("http_idle_connections_closed_total").increment(1);
                    tracing::debug!(?idle, "closing an idle connection");
                }
            }
            connections.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// The longest a stopping server waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::to_string(
        &Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-connections",
            "Too many connections",
        )
        .detail("the server is at its connection limit; retry shortly"),
    )
    .unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// When bytes last moved on a connection, in milliseconds since it opened.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A socket that records when bytes last moved through it.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What `/`, `/health` and `/metrics` need from a service.
#[derive(Clone)]
pub struct Ops {
    pub service: &'static str,
    pub pool: crate::store::Redis,
    pub broker: crate::amqp::Broker,
}

/// `GET /` (name and version), `GET /health` (Redis and broker state) and
/// `GET /metrics` (Prometheus text), the same on every service.
pub fn ops_router<S: Clone + Send + Sync + 'static>(ops: Ops) -> Router<S> {
    let service = ops.service;
    health_router(ops).merge(info_router(service))
}

/// `GET /` (the service's name and version) and `GET /metrics`, without
/// `/health`: for a service that guards them apart from its health.
pub fn info_router<S: Clone + Send + Sync + 'static>(service: &'static str) -> Router<S> {
    let root = move || async move {
        axum::Json(serde_json::json!({
            "service": service,
            "version": env!("CARGO_PKG_VERSION"),
            "status": "ok",
        }))
    };
    Router::new()
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
