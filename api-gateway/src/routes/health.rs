//! `GET /`, `GET /health` and `GET /metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/metrics", get(pipeline::http::prometheus_metrics))
}

async fn root() -> Json<serde_json::Value> {
    Json(json!({
        "service": "api-gateway",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "ok",
    }))
}

/// 200 when Redis answers and a broker link is open, 503 otherwise, with the
/// state of each.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let redis_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), pipeline::store::ping(&state.pool)).await,
        Ok(Ok(()))
    );
    let link = state.broker.current();
    let healthy = redis_ok && link.is_some();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "components": {
            "redis": if redis_ok { "up" } else { "down" },
            "broker": match &link {
                Some(l) => json!({"status": "up", "node": l.node}),
                None => json!({"status": "down"}),
            },
        },
    });
    (status, Json(body))
}
