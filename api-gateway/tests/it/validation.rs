//! Bad requests: each gets the documented status and a problem+json body.

use serde_json::Value;

use crate::helpers::spawn_app;

async fn problem(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let (status, body) = problem(app.post_order(r#"{"id":"o1","sku":"#, None).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "/problems/malformed-json");
    assert_eq!(body["status"], 400);
    app.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/orders"))
        .header("content-type", "text/plain")
        .body(r#"{"sku":"s","qty":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 415);
    let res = app
        .client
        .post(app.url("/orders"))
        .body(r#"{"sku":"s","qty":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 415);
    app.stop().await;
}

#[tokio::test]
async fn body_over_16_kib_is_413() {
    let app = spawn_app().await;
    let big = format!(r#"{{"sku":"s","qty":1,"pad":"{}"}}"#, "x".repeat(17 * 1024));
    let (status, body) = problem(app.post_order(&big, None).await).await;
    assert_eq!(status, 413);
    assert_eq!(body["type"], "/problems/payload-too-large");
    app.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (r#"{"sku":"mag-safe-phone-case","qty":0}"#, "qty"),
        (r#"{"sku":"mag-safe-phone-case","qty":1001}"#, "qty"),
        (r#"{"sku":"mag-safe-phone-case","qty":"2"}"#, "qty"),
        (r#"{"sku":"mag-safe-phone-case"}"#, "qty"),
        (r#"{"qty":1}"#, "sku"),
        (r#"{"sku":"has space","qty":1}"#, "sku"),
        (r#"{"id":"","sku":"s","qty":1}"#, "id"),
        (r#"{"id":"a/b","sku":"s","qty":1}"#, "id"),
        (r#"{"sku":"s","qty":1,"coupon":"x"}"#, "body"),
    ];
    for (body, field) in cases {
        let (status, problem) = problem(app.post_order(body, None).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(field),
            "{problem}"
        );
    }
    assert_eq!(app.queued_orders().await, 0, "nothing invalid is published");
    app.stop().await;
}

#[tokio::test]
async fn invalid_idempotency_key_is_400() {
    let app = spawn_app().await;
    let long = "k".repeat(300);
    for key in ["a b", "\"\"", long.as_str()] {
        let (status, body) =
            problem(app.post_order(r#"{"sku":"s","qty":1}"#, Some(key)).await).await;
        assert_eq!(status, 400, "{key}");
        assert_eq!(body["field"], "Idempotency-Key");
    }
    app.stop().await;
}

#[tokio::test]
async fn invalid_order_id_in_the_path_is_422() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/orders/bad%20id"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 422);
    app.stop().await;
}
