//! Order identity at the gateway: an id names one order forever, whatever the
//! key; a key remembers the id it minted; keys and ids never block each other.

use api_gateway::idempotency::{Intake, IntakeRequest};
use pipeline::domain::{IdempotencyKey, Quantity, Sku};
use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::spawn_app;

const O3_A: &str = r#"{"id":"o3","sku":"a","qty":1}"#;
const O3_B: &str = r#"{"id":"o3","sku":"b","qty":5}"#;

async fn problem_type(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    (status, body["type"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_reused_order_id_with_another_payload_is_409_whatever_the_key() {
    let app = spawn_app().await;
    assert_eq!(app.post_order(O3_A, Some("k1")).await.status(), 202);
    let conflict = (409, "/problems/order-id-conflict".to_owned());
    assert_eq!(
        problem_type(app.post_order(O3_B, Some("k2")).await).await,
        conflict
    );
    assert_eq!(
        problem_type(app.post_order(O3_B, None).await).await,
        conflict
    );
    // Still refused once the first request's key record has expired.
    let mut redis = app.redis().await;
    let _: () = redis.del(app.key("idemp:k1")).await.unwrap();
    assert_eq!(
        problem_type(app.post_order(O3_B, Some("k3")).await).await,
        conflict
    );

    let record: Value = app
        .client
        .get(app.url("/orders/o3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (record["sku"].as_str(), record["qty"].as_u64()),
        (Some("a"), Some(1))
    );
    assert_eq!(
        app.queued_orders().await,
        1,
        "the conflicting orders were never published"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_same_id_and_payload_under_another_key_is_the_same_order_replayed() {
    let app = spawn_app().await;
    let first = app.post_order(O3_A, Some("k1")).await;
    assert_eq!(first.status(), 202);
    let first = first.text().await.unwrap();
    for key in [Some("k2"), None, Some("k3")] {
        let again = app.post_order(O3_A, key).await;
        assert_eq!(again.status(), 202, "{key:?}");
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{key:?}");
        assert_eq!(again.text().await.unwrap(), first);
    }
    assert_eq!(app.queued_orders().await, 1, "one message for one order");
    let mut redis = app.redis().await;
    let accepted: i64 = redis.hget(app.key("counters"), "accepted").await.unwrap();
    assert_eq!(accepted, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_key_without_a_body_id_keeps_its_minted_id_after_an_expired_lease() {
    let app = spawn_app().await;
    let body = r#"{"sku":"mag-safe-phone-case","qty":1}"#;
    // Another gateway claimed the key, minted an id, and died mid-publish.
    let request = IntakeRequest {
        client: pipeline::domain::ClientId::default_client(),
        id: None,
        sku: Sku::parse("mag-safe-phone-case").unwrap(),
        qty: Quantity::parse(1, 1000).unwrap(),
        quote: None,
    };
    let key = IdempotencyKey::parse_header("crashed-key").unwrap();
    let Intake::Process(claim) = app.store().claim(&request, Some(&key)).await.unwrap() else {
        panic!("the first claim processes");
    };
    // Its lease runs out.
    let mut redis = app.redis().await;
    let _: () = redis
        .hset(app.key("idemp:crashed-key"), "lease_until", 0)
        .await
        .unwrap();
    let _: () = redis
        .hset(app.key(&format!("order:{}", claim.id)), "claim_until", 0)
        .await
        .unwrap();

    let res = app.post_order(body, Some("crashed-key")).await;
    assert_eq!(res.status(), 202);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        answer["id"],
        claim.id.as_str(),
        "the retry publishes the same id"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retry_after_an_unconfirmed_publish_republishes_the_same_id() {
    let app = spawn_app().await;
    let body = r#"{"sku":"mag-safe-phone-case","qty":1}"#;
    let conn = testkit::inspector().await;
    let ch = conn.create_channel().await.unwrap();
    app.route_orders(&ch, false).await;
    let res = app.post_order(body, Some("k-503")).await;
    assert_eq!(res.status(), 503);
    let detail = res.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("may or may not"),
        "the 503 tells the truth: {detail}"
    );
    let mut redis = app.redis().await;
    let minted: String = redis.hget(app.key("idemp:k-503"), "id").await.unwrap();

    app.route_orders(&ch, true).await;
    let retry = app.post_order(body, Some("k-503")).await;
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        retry["id"],
        minted.as_str(),
        "no second order under a new id"
    );
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn header_keys_and_body_ids_never_block_each_other() {
    let app = spawn_app().await;
    // A header key "X" (no body id), then an order whose id is "X".
    assert_eq!(
        app.post_order(r#"{"sku":"s","qty":1}"#, Some("X"))
            .await
            .status(),
        202
    );
    let res = app
        .post_order(r#"{"id":"X","sku":"s","qty":2}"#, None)
        .await;
    assert_eq!(res.status(), 202);
    assert!(
        res.headers().get("idempotent-replayed").is_none(),
        "a new order"
    );
    // And the reverse: an order id "Y", then a header key "Y" for another order.
    assert_eq!(
        app.post_order(r#"{"id":"Y","sku":"s","qty":1}"#, None)
            .await
            .status(),
        202
    );
    let res = app.post_order(r#"{"sku":"t","qty":3}"#, Some("Y")).await;
    assert_eq!(res.status(), 202);
    assert!(
        res.headers().get("idempotent-replayed").is_none(),
        "a new order"
    );
    assert_eq!(app.queued_orders().await, 4);
    app.stop().await;
}

#[tokio::test]
async fn a_claimed_but_unconfirmed_id_is_not_an_order_yet() {
    let app = spawn_app().await;
    let request = IntakeRequest {
        client: pipeline::domain::ClientId::default_client(),
        id: Some(pipeline::domain::OrderId::parse("pending-1").unwrap()),
        sku: Sku::parse("s").unwrap(),
        qty: Quantity::parse(1, 1000).unwrap(),
        quote: None,
    };
    assert!(matches!(
        app.store().claim(&request, None).await.unwrap(),
        Intake::Process(_)
    ));
    let res = app
        .client
        .get(app.url("/orders/pending-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
}
