//! Slow, idle and too many clients; errors from outside the handlers.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app, spawn_with, test_config, unique_prefix};

async fn spawn_limited(limits: pipeline::http::Limits) -> TestApp {
    let mut config = test_config(&unique_prefix());
    config.service.http = limits;
    spawn_with(config).await
}

fn short() -> pipeline::http::Limits {
    pipeline::http::Limits {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(6),
        max_connections: 1024,
    }
}

/// Reads until the server closes the connection (bounded, so a server that
/// never closes fails the test instead of hanging it).
async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = spawn_limited(short()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.contains("202"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_408_problem() {
    let app = spawn_limited(short()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let body = br#"{"id":"slow-1","sku":"s","qty":1}"#;
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        app.key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // One byte every 100 ms, all the way: the whole body would take over 3 s,
    // and the connection is never idle long enough for the idle timeout
    // (6 s). The 408 must come from the body deadline, while bytes still
    // arrive.
    let (mut reader, mut writer) = stream.into_split();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = tokio::spawn({
        let finished = finished.clone();
        async move {
            for b in body {
                if writer.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let answer = read_until_closed(&mut reader).await;
    assert!(
        !finished.load(std::sync::atomic::Ordering::SeqCst),
        "the answer came only after the whole body was sent: {answer}"
    );
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(app.queued_orders().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_limited(short()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        app.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The answer arrives, then the idle connection is closed.
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503() {
    let app = spawn_limited(pipeline::http::Limits {
        max_connections: 2,
        ..testkit::http_limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        // A full request, so the connection is surely accepted and counted.
        let head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            app.key
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("/problems/too-many-connections"),
        "{answer}"
    );
    drop(held);
    app.stop().await;
}

async fn assert_problem(app: &TestApp, method: reqwest::Method, path: &str, status: u16) -> Value {
    let res = app
        .client
        .request(method.clone(), app.url(path))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), status, "{method} {path}");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{method} {path}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
    body
}

#[tokio::test]
async fn errors_outside_the_handlers_are_problem_json() {
    let app = spawn_app().await;
    assert_problem(&app, reqwest::Method::GET, "/orders/%FF", 400).await;
    assert_problem(&app, reqwest::Method::GET, "/nowhere", 404).await;
    assert_problem(&app, reqwest::Method::GET, "/orders/", 404).await;
    let body = assert_problem(&app, reqwest::Method::PUT, "/orders", 405).await;
    assert!(body["detail"].as_str().unwrap().contains("PUT"), "{body}");
    app.stop().await;
}
