//! The supplier itself: its catalog is live Redis data, a bad entry is an
//! error reply that names it, and the demo catalog never overwrites.

use redis::AsyncCommands;
use reqwest::StatusCode;

use crate::helpers::{Knobs, SKU, World, outcome, quick_breaker};

#[tokio::test]
async fn a_price_changed_with_hset_is_quoted_at_once() {
    let mut w = World::new(&[("acme", Knobs::default())], quick_breaker()).await;
    let (_, body) = w.quote("qty=2").await;
    assert_eq!(body["quote"]["unit_price_minor"], 1250);
    w.set_catalog("acme", SKU, 999, 500, 3).await;
    let (_, body) = w.quote("qty=2").await;
    assert_eq!(body["quote"]["unit_price_minor"], 999);
    assert_eq!(body["quote"]["total_minor"], 1998);
    w.finish().await;
}

#[tokio::test]
async fn a_bad_catalog_entry_is_an_error_reply_naming_the_sku() {
    let mut w = World::new(
        &[("acme", Knobs::default()), ("globex", Knobs::default())],
        quick_breaker(),
    )
    .await;
    w.set_catalog_raw(
        "acme",
        SKU,
        r#"{"unit_price_minor":12.5,"currency":"EUR","stock":4,"delivery_days":3}"#,
    )
    .await;
    let (status, body) = w.quote("").await;
    assert_eq!(status, StatusCode::OK, "globex still quotes: {body}");
    let acme = outcome(&body, "acme");
    assert_eq!(acme["outcome"], "error");
    let error = acme["error"].as_str().unwrap();
    assert!(
        error.contains("catalog entry for mag-safe-phone-case is invalid"),
        "{error}"
    );
    w.finish().await;
}

#[tokio::test]
async fn the_demo_catalog_is_written_only_where_none_exists() {
    let prefix = testkit::unique_prefix();
    let redis_config = testkit::redis_config(&prefix);
    let pool = pipeline::store::connect(&redis_config).unwrap();
    let keys = pipeline::keys::Keys::new(redis_config.key_prefix.clone());
    let acme = pipeline::domain::SupplierId::parse("acme").unwrap();
    assert!(
        supplier::seed_demo_catalog(&pool, &keys, &acme)
            .await
            .unwrap()
    );
    let mut redis = testkit::redis().await;
    let entry: String = redis.hget(keys.catalog(&acme), SKU).await.unwrap();
    assert!(entry.contains("\"unit_price_minor\":1250"), "{entry}");
    // An operator's change survives a restart with the demo catalog on.
    let _: () = redis
        .hset(
            keys.catalog(&acme),
            SKU,
            "{\"unit_price_minor\":1,\"currency\":\"EUR\",\"stock\":1,\"delivery_days\":1}",
        )
        .await
        .unwrap();
    assert!(
        !supplier::seed_demo_catalog(&pool, &keys, &acme)
            .await
            .unwrap()
    );
    let entry: String = redis.hget(keys.catalog(&acme), SKU).await.unwrap();
    assert!(entry.contains("\"unit_price_minor\":1,"), "{entry}");
    let _: () = redis.del(keys.catalog(&acme)).await.unwrap();
}

#[tokio::test]
async fn a_quote_in_another_currency_is_an_error_that_counts_against_the_circuit() {
    let mut w = World::new(
        &[("acme", Knobs::default()), ("globex", Knobs::default())],
        quick_breaker(),
    )
    .await;
    w.set_catalog_raw(
        "acme",
        SKU,
        r#"{"unit_price_minor":1,"currency":"USD","stock":40,"delivery_days":1}"#,
    )
    .await;
    for _ in 0..2 {
        let (status, body) = w.quote("").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let acme = outcome(&body, "acme");
        assert_eq!(
            acme["outcome"], "error",
            "never mixed into EUR prices: {body}"
        );
        assert!(
            acme["error"].as_str().unwrap().contains("quoted in USD"),
            "{acme}"
        );
        assert_eq!(body["quote"]["supplier"], "globex");
    }
    let acme = w.supplier_status("acme").await;
    assert_eq!(acme["circuit"], "open", "{acme}");
    assert_eq!(acme["errors"], 2);
    w.finish().await;
}
