//! `POST /orders` with a `quote_id`: the order records its supplier and price;
//! a quote backs one order, for its own sku and qty, while it is valid.

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Knobs, SKU, World, quick_breaker};

async fn world() -> World {
    World::new(
        &[
            ("acme", Knobs::default()),
            ("globex", Knobs::default()),
            ("initech", Knobs::default()),
        ],
        quick_breaker(),
    )
    .await
}

/// The cheapest quote for `qty` units.
async fn cheapest(w: &World, qty: u32) -> Value {
    let (status, body) = w.quote(&format!("qty={qty}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["cheapest"].clone()
}

#[tokio::test]
async fn an_order_against_a_quote_records_its_supplier_and_price() {
    let mut w = world().await;
    let quote = cheapest(&w, 2).await;
    let quote_id = quote["quote_id"].as_str().unwrap().to_owned();
    let order = json!({"id": "quoted-1", "sku": SKU, "qty": 2, "quote_id": quote_id});
    let (status, body) = w.post_order(order.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // The order's view and record carry the quote's terms.
    let (status, view) = w.get("/orders/quoted-1").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let terms = &view["quote"];
    assert_eq!(terms["quote_id"], quote_id.as_str());
    assert_eq!(terms["supplier"], "globex");
    assert_eq!(terms["unit_price_minor"], 1190);
    assert_eq!(terms["total_minor"], 2380);
    assert_eq!(terms["currency"], "EUR");
    let key = w.key("order:quoted-1");
    let supplier: String = w.redis().await.hget(&key, "supplier").await.unwrap();
    assert_eq!(supplier, "globex");

    // So does its placed event on the broker.
    let placed = testkit::drain(&w.topology().orders_queue()).await;
    assert_eq!(placed.len(), 1);
    let message: pipeline::messages::OrderPlaced = serde_json::from_slice(&placed[0].data).unwrap();
    let terms = message.quote.expect("the placed event names its quote");
    assert_eq!(terms.supplier.as_str(), "globex");
    assert_eq!(terms.unit_price_minor, 1190);

    // The same order again is the same order.
    let (status, _) = w.post_order(order).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The same id with another quote (or none) is another order: 409.
    let other = cheapest(&w, 2).await["quote_id"].clone();
    let (status, body) = w
        .post_order(json!({"id": "quoted-1", "sku": SKU, "qty": 2, "quote_id": other}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = w
        .post_order(json!({"id": "quoted-1", "sku": SKU, "qty": 2}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // A quote backs one order.
    let (status, body) = w
        .post_order(json!({"id": "quoted-2", "sku": SKU, "qty": 2, "quote_id": quote_id}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["type"], "/problems/invalid-quote");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("already backs order quoted-1"),
        "{body}"
    );
    w.finish().await;
}

#[tokio::test]
async fn a_quote_for_another_qty_an_unknown_or_an_expired_quote_is_422() {
    let mut w = world().await;
    let quote = cheapest(&w, 2).await;
    let quote_id = quote["quote_id"].as_str().unwrap().to_owned();

    let (status, body) = w
        .post_order(json!({"sku": SKU, "qty": 3, "quote_id": quote_id}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["type"], "/problems/invalid-quote");
    assert!(
        body["detail"].as_str().unwrap().contains("is for 2 x"),
        "{body}"
    );

    let unknown = pipeline::domain::QuoteId::generate();
    let (status, body) = w
        .post_order(json!({"sku": SKU, "qty": 2, "quote_id": unknown.as_str()}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown or expired"),
        "{body}"
    );

    let (status, body) = w
        .post_order(json!({"sku": SKU, "qty": 2, "quote_id": "cheap-please"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["type"], "/problems/invalid-field");
    assert_eq!(body["field"], "quote_id");

    // The quote's validity ends (its record says so): expired.
    let key = w.key(&format!("quote:{quote_id}"));
    let past = pipeline::messages::now_ms() - 1_000;
    let _: () = w
        .redis()
        .await
        .hset(&key, "valid_until_ms", past)
        .await
        .unwrap();
    let (status, body) = w
        .post_order(json!({"id": "late-1", "sku": SKU, "qty": 2, "quote_id": quote_id}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // Nothing was claimed: the id is still free for a valid order.
    let fresh = cheapest(&w, 2).await["quote_id"].clone();
    let (status, body) = w
        .post_order(json!({"id": "late-1", "sku": SKU, "qty": 2, "quote_id": fresh}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    w.finish().await;
}

#[tokio::test]
async fn a_retry_of_an_accepted_quote_order_succeeds_after_the_quote_expired() {
    let mut w = world().await;
    let quote_id = cheapest(&w, 1).await["quote_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = json!({"id": "keep-1", "sku": SKU, "qty": 1, "quote_id": quote_id});
    let (status, _) = w.post_order(order.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let key = w.key(&format!("quote:{quote_id}"));
    let _: () = w.redis().await.del(&key).await.unwrap();
    let res = w
        .client
        .post(w.url("/orders"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::ACCEPTED,
        "the order exists; its quote is in its record"
    );
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    w.finish().await;
}
