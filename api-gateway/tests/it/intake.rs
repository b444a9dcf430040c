//! Accepting orders: confirm before 202, idempotent replays, conflicts, storms.

use std::collections::HashSet;

use api_gateway::idempotency::{Intake, IntakeRequest};
use lapin::types::AMQPValue;
use pipeline::domain::{IdempotencyKey, OrderId, Quantity, Sku};
use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::spawn_app;

const ORDER: &str = r#"{"id":"order123","sku":"mag-safe-phone-case","qty":2}"#;

#[tokio::test]
async fn root_names_the_service() {
    let app = spawn_app().await;
    let body: Value = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["service"], "api-gateway");
    assert_eq!(body["status"], "ok");
    assert!(body["version"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn health_reports_redis_and_the_broker_node() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["components"]["redis"], "up");
    assert_eq!(body["components"]["broker"]["status"], "up");
    assert!(
        body["components"]["broker"]["node"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    app.stop().await;
}

#[tokio::test]
async fn new_order_is_accepted_and_published_once_with_full_properties() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/orders"))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["location"], "/orders/order123");
    assert!(res.headers().get("idempotent-replayed").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"id": "order123", "status": "accepted"})
    );

    let messages = app.drain_orders().await;
    assert_eq!(messages.len(), 1);
    let msg = &messages[0];
    let props = &msg.delivery.properties;
    assert_eq!(props.message_id().as_ref().unwrap().as_str(), "order123");
    assert_eq!(
        props.correlation_id().as_ref().unwrap().as_str(),
        "order123"
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    let headers = props.headers().as_ref().unwrap();
    let Some(AMQPValue::LongString(tp)) = headers.inner().get("traceparent") else {
        panic!("no traceparent header");
    };
    assert!(
        tp.to_string()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "trace id carried over: {tp}"
    );
    let payload: Value = serde_json::from_slice(&msg.delivery.data).unwrap();
    assert_eq!(payload["id"], "order123");
    assert_eq!(payload["sku"], "mag-safe-phone-case");
    assert_eq!(payload["qty"], 2);
    app.stop().await;
}

#[tokio::test]
async fn retry_with_same_body_id_replays_first_response() {
    let app = spawn_app().await;
    let first = app.post_order(ORDER, None).await;
    assert_eq!(first.status(), 202);
    let first_body = first.text().await.unwrap();
    let again = app.post_order(ORDER, None).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], "/orders/order123");
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(app.queued_orders().await, 1, "a replay never publishes");
    app.stop().await;
}

#[tokio::test]
async fn retry_with_same_key_header_replays_the_generated_id() {
    let app = spawn_app().await;
    let body = r#"{"sku":"mag-safe-phone-case","qty":1}"#;
    let first: Value = app
        .post_order(body, Some("client-key-1"))
        .await
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let again = app.post_order(body, Some("\"client-key-1\"")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], id.as_str());
    assert_eq!(app.queued_orders().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn without_key_or_id_every_request_is_a_new_order() {
    let app = spawn_app().await;
    let body = r#"{"sku":"mag-safe-phone-case","qty":1}"#;
    let a: Value = app.post_order(body, None).await.json().await.unwrap();
    let b: Value = app.post_order(body, None).await.json().await.unwrap();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(app.queued_orders().await, 2);
    app.stop().await;
}

#[tokio::test]
async fn same_key_with_a_different_payload_is_422() {
    let app = spawn_app().await;
    assert_eq!(app.post_order(ORDER, Some("k-422")).await.status(), 202);
    let res = app
        .post_order(
            r#"{"id":"order124","sku":"mag-safe-phone-case","qty":3}"#,
            Some("k-422"),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    assert_eq!(app.queued_orders().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn same_key_while_the_first_is_in_flight_is_409_with_retry_after() {
    let app = spawn_app().await;
    // Another gateway instance holds the key, mid-publish.
    let store = app.store();
    let request = IntakeRequest {
        client: pipeline::domain::ClientId::default_client(),
        id: Some(OrderId::parse("order123").unwrap()),
        sku: Sku::parse("mag-safe-phone-case").unwrap(),
        qty: Quantity::parse(2, 1000).unwrap(),
        quote: None,
    };
    let key = IdempotencyKey::parse_header("k-in-flight").unwrap();
    let claimed = store.claim(&request, Some(&key)).await.unwrap();
    assert!(matches!(claimed, Intake::Process(_)));

    let res = app.post_order(ORDER, None).await;
    assert_eq!(res.status(), 409);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(app.queued_orders().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn duplicate_storm_of_100_yields_exactly_one_message() {
    let app = spawn_app().await;
    let requests = (0..100).map(|_| app.post_order(ORDER, Some("storm-key")));
    let responses = futures_util::future::join_all(requests).await;
    let (mut original, mut replayed, mut conflicts) = (0, 0, 0);
    for res in responses {
        match res.status().as_u16() {
            202 if res.headers().contains_key("idempotent-replayed") => replayed += 1,
            202 => original += 1,
            409 => {
                assert!(res.headers().contains_key("retry-after"));
                conflicts += 1;
            }
            other => panic!("unexpected status {other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!(
        original, 1,
        "exactly one original 202 ({replayed} replayed, {conflicts} conflicts)"
    );
    assert_eq!(original + replayed + conflicts, 100);
    assert_eq!(
        app.queued_orders().await,
        1,
        "exactly one message in orders.queue"
    );
    app.stop().await;
}

#[tokio::test]
async fn accepted_order_is_recorded_and_counted_once() {
    let app = spawn_app().await;
    assert_eq!(app.post_order(ORDER, None).await.status(), 202);
    assert_eq!(app.post_order(ORDER, None).await.status(), 202);
    // The same order id under a new key (a retry after a confirm timeout).
    assert_eq!(app.post_order(ORDER, Some("other-key")).await.status(), 202);

    let res = app
        .client
        .get(app.url("/orders/order123"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["status"], "accepted");
    assert_eq!(view["sku"], "mag-safe-phone-case");
    assert_eq!(view["qty"], 2);
    assert!(view["timestamps_ms"]["accepted"].as_u64().unwrap() > 0);

    let mut redis = app.redis().await;
    let accepted: i64 = redis.hget(app.key("counters"), "accepted").await.unwrap();
    assert_eq!(accepted, 1, "an order id is counted once");
    let ttl: i64 = redis.ttl(app.key("idemp:other-key")).await.unwrap();
    assert!(
        ttl > 60,
        "the key's record lives for the configured TTL, got {ttl}"
    );
    let body_id_record: bool = redis.exists(app.key("idemp:order123")).await.unwrap();
    assert!(!body_id_record, "a body id is not an idempotency key");
    app.stop().await;
}

#[tokio::test]
async fn a_later_stage_status_is_not_overwritten_by_the_gateway() {
    let app = spawn_app().await;
    let mut redis = app.redis().await;
    // The processor can be faster than the gateway's own bookkeeping.
    let _: () = redis
        .hset(app.key("order:order123"), "status", "reserved")
        .await
        .unwrap();
    assert_eq!(app.post_order(ORDER, None).await.status(), 202);
    let status: String = redis
        .hget(app.key("order:order123"), "status")
        .await
        .unwrap();
    assert_eq!(status, "reserved");
    app.stop().await;
}

#[tokio::test]
async fn unknown_order_is_404_problem() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/orders/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    app.stop().await;
}

/// `.` and `..` are not ids: neither placed nor looked up (where they would
/// address another path of the history, `/orders/..` being its root).
#[tokio::test]
async fn dot_segments_are_not_order_ids() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    for id in [".", ".."] {
        let body = format!(r#"{{"id":"{id}","sku":"mag-safe-phone-case","qty":1}}"#);
        let res = app.post_order(&body, None).await;
        assert_eq!(res.status(), 422, "{id}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["field"], "id", "{problem}");
    }
    // As sent by a client that does not normalise the path (curl --path-as-is).
    for path in ["/orders/..", "/orders/%2E%2E", "/orders/%2e"] {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            app.key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 422") || answer.starts_with("HTTP/1.1 404"),
            "{path}: {answer}"
        );
        assert!(
            answer.contains("application/problem+json"),
            "{path}: {answer}"
        );
        assert!(!answer.contains("order-history"), "{path}: {answer}");
    }
    assert_eq!(app.queued_orders().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_replays() {
    let app = spawn_app().await;
    let first = app.post_order(ORDER, None).await;
    assert_eq!(first.status(), 202);
    let again = app.post_order(ORDER, None).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The recorder is the process's: other tests in it may add to these.
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    assert!(value("http_requests_total{method=\"POST\",route=\"/orders\",status=\"202\"}") >= 2.0);
    assert!(value("idempotency_replays_total") >= 1.0);
    assert!(value("broker_publish_duration_seconds_count{outcome=\"confirmed\"}") >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn distinct_orders_get_distinct_messages() {
    let app = spawn_app().await;
    let mut ids = HashSet::new();
    for i in 0..20 {
        let body = format!(r#"{{"id":"o-{i}","sku":"mag-safe-phone-case","qty":1}}"#);
        let res: Value = app.post_order(&body, None).await.json().await.unwrap();
        ids.insert(res["id"].as_str().unwrap().to_owned());
    }
    let got: HashSet<String> = app
        .drain_orders()
        .await
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ids);
    app.stop().await;
}
