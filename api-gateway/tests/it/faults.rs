//! Faults one gateway meets alone: Redis gone, an unroutable publish, its broker
//! link cut or silently blackholed. Each is injected only into this test's own
//! path (a closed port, its own bindings, a TCP proxy of its own), so the shared
//! stack and the tests running beside it are untouched.

use std::time::Duration;

use pipeline::config::BrokerNodes;
use serde_json::Value;

use crate::helpers::{
    ProxyMode, TcpProxy, TestApp, broker_urls, eventually, spawn_with, test_config, unique_prefix,
};

const ORDER: &str = r#"{"id":"order-f1","sku":"mag-safe-phone-case","qty":1}"#;

#[tokio::test]
async fn redis_unreachable_is_503_and_health_says_so() {
    let mut config = test_config(&unique_prefix());
    config.service.redis.url = pipeline::config::RedisUrl::parse("redis://127.0.0.1:1").unwrap();
    let app = spawn_with(config).await;
    let res = app.post_order(ORDER, None).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "/problems/store-unavailable");
    assert!(
        !body.to_string().contains("refused"),
        "no internal error text: {body}"
    );
    assert_eq!(app.queued_orders().await, 0, "nothing accepted");

    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["components"]["redis"], "down");
    app.stop().await;
}

#[tokio::test]
async fn unroutable_publish_is_503_and_the_key_is_released() {
    let app = spawn_app_default().await;
    let conn = testkit::inspector().await;
    let ch = conn.create_channel().await.unwrap();
    app.route_orders(&ch, false).await;

    let res = app.post_order(ORDER, None).await;
    assert_eq!(res.status(), 503, "a returned message is not a success");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "/problems/broker-unavailable");

    app.route_orders(&ch, true).await;
    let retry = app.post_order(ORDER, None).await;
    assert_eq!(
        retry.status(),
        202,
        "the key was released, so the retry is processed"
    );
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.queued_orders().await, 1);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

async fn spawn_app_default() -> crate::helpers::TestApp {
    spawn_with(test_config(&unique_prefix())).await
}

fn first_node() -> std::net::SocketAddr {
    let url = &BrokerNodes::parse(&broker_urls()).unwrap()[0];
    format!("{}:{}", url.authority.host, url.authority.port)
        .parse()
        .unwrap()
}

#[tokio::test]
async fn broker_down_is_503_then_a_retry_succeeds_with_one_message() {
    let proxy = TcpProxy::start(first_node()).await;
    let mut config = test_config(&unique_prefix());
    config.service.broker.urls = BrokerNodes::parse(&proxy.url()).unwrap();
    config.service.broker.heartbeat = Duration::from_secs(1);
    config.request_timeout = Duration::from_millis(1500);
    let app = spawn_with(config).await;

    proxy.set(ProxyMode::Down);
    eventually(
        Duration::from_secs(10),
        "health to report the broker down",
        || async {
            app.client
                .get(app.url("/health"))
                .send()
                .await
                .unwrap()
                .status()
                == 503
        },
    )
    .await;
    let res = app.post_order(ORDER, None).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));

    proxy.set(ProxyMode::Forward);
    eventually(
        Duration::from_secs(15),
        "the gateway to reconnect",
        || async {
            app.client
                .get(app.url("/health"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        },
    )
    .await;
    let retry = app.post_order(ORDER, None).await;
    assert_eq!(retry.status(), 202);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.queued_orders().await, 1, "exactly one message");
    app.stop().await;
}

#[tokio::test]
async fn silent_network_cut_times_out_the_confirm_and_fails_over_to_another_node() {
    let proxy = TcpProxy::start(first_node()).await;
    let mut config = test_config(&unique_prefix());
    let direct = broker_urls();
    config.service.broker.urls = BrokerNodes::parse(&format!("{},{direct}", proxy.url())).unwrap();
    config.service.broker.heartbeat = Duration::from_secs(1);
    config.service.broker.confirm_timeout = Duration::from_millis(800);
    config.request_timeout = Duration::from_millis(1500);
    let app = spawn_with(config).await;
    let node_of = |v: &Value| {
        v["components"]["broker"]["node"]
            .as_str()
            .map(str::to_owned)
    };
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(node_of(&health), Some(proxy.addr.to_string()));

    proxy.set(ProxyMode::Blackhole);
    let res = app.post_order(ORDER, None).await;
    assert_eq!(
        res.status(),
        503,
        "no confirm within the deadline is not a 202"
    );

    // Missed heartbeats reveal the dead link; the gateway moves to a real node.
    eventually(
        Duration::from_secs(20),
        "failover to a direct node",
        || async {
            let res = app.client.get(app.url("/health")).send().await.unwrap();
            let body: Value = res.json().await.unwrap();
            node_of(&body).is_some_and(|n| n != proxy.addr.to_string())
        },
    )
    .await;
    let retry = app.post_order(ORDER, None).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(
        app.queued_orders().await,
        1,
        "the blackholed publish never arrived"
    );
    app.stop().await;
}

/// Sends an order's headers with `Expect: 100-continue` and waits for the
/// `100 Continue`: then the server has taken the request and its handler is
/// reading the body, which is held back until `send_body`.
async fn taken_request(app: &TestApp, body: &str) -> tokio::net::TcpStream {
    let addr = app.addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        app.key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed before 100"
        );
        seen.push(byte[0]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream
}

/// Sends the held-back body and reads the whole answer.
async fn finish_request(mut stream: tokio::net::TcpStream, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server closes the connection after the answer: it is stopping.
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops() {
    let app = spawn_app_default().await;
    let bodies: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"id":"s-{i}","sku":"mag-safe-phone-case","qty":1}}"#))
        .collect();
    // Every request is in the server's hands before the stop begins.
    let mut taken = Vec::new();
    for body in &bodies {
        taken.push(taken_request(&app, body).await);
    }
    app.shutdown.cancel();
    let answers = futures_util::future::join_all(
        taken
            .into_iter()
            .zip(&bodies)
            .map(|(stream, body)| finish_request(stream, body)),
    )
    .await;
    for answer in &answers {
        assert!(
            answer.starts_with("HTTP/1.1 202"),
            "a request the server took is finished, not cut: {answer:?}"
        );
    }
    // New connections are no longer taken.
    eventually(Duration::from_secs(10), "the listener to close", || async {
        tokio::net::TcpStream::connect(app.addr).await.is_err()
    })
    .await;
    assert_eq!(app.queued_orders().await, 20, "every 202 has its message");
    app.stop().await;
}
