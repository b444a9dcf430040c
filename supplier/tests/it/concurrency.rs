//! Many quote requests at once, through two gateway processes, against three
//! suppliers (one of them slow): every answer belongs to its own request.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Knobs, SKU, World, eventually, quick_breaker, start_gateway};

#[tokio::test]
async fn a_thousand_requests_at_fifty_in_flight_never_cross() {
    let mut breaker = quick_breaker();
    // The slow supplier is slow, not failing: keep its circuit out of this.
    breaker.min_calls = breaker.window;
    let mut w = World::new(
        &[
            ("acme", Knobs::default()),
            ("globex", Knobs::default()),
            ("initech", Knobs::slow(150)),
        ],
        breaker,
    )
    .await;
    let other_sku = "usb-c-cable-2m";
    for (name, price) in [("acme", 899), ("globex", 899), ("initech", 949)] {
        w.set_catalog(name, other_sku, price, 1_000, 2).await;
    }
    // A second gateway process on the same suppliers.
    let second = start_gateway(&w.prefix, w.quotes.clone()).await;
    let gateways = [w.gateway.addr, second.addr];

    let client = w.client.clone();
    let results: Vec<(u32, &str, StatusCode, Value)> = futures_util::stream::iter(0..1_000u32)
        .map(|i| {
            let client = client.clone();
            let gateway = gateways[i as usize % 2];
            let qty = i % 50 + 1;
            let sku = if i % 3 == 0 { other_sku } else { SKU };
            // Half of them stop at the first quote, so the slow supplier's
            // answers come late.
            let strategy = if i % 2 == 0 { "fastest" } else { "all" };
            async move {
                let res = client
                    .get(format!(
                        "http://{gateway}/quotes/{sku}?qty={qty}&strategy={strategy}&timeout_ms=3000"
                    ))
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                (qty, sku, status, res.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;

    for (qty, sku, status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["qty"], *qty);
        assert_eq!(body["sku"], *sku);
        for quote in body["quotes"].as_array().unwrap() {
            assert_eq!(quote["qty"], *qty, "a quote from another request: {body}");
            assert_eq!(quote["sku"], *sku, "a quote from another request: {body}");
            // The price is the catalog's for this SKU and supplier: an
            // answer to another request (another SKU) would show another.
            let unit = quote["unit_price_minor"].as_u64().unwrap();
            let expected = match (*sku, quote["supplier"].as_str().unwrap()) {
                (SKU, "acme") => 1250,
                (SKU, "globex") => 1190,
                (SKU, _) => 1390,
                (_, "initech") => 949,
                _ => 899,
            };
            assert_eq!(unit, expected, "a price from another request: {body}");
            assert_eq!(
                quote["total_minor"].as_u64().unwrap(),
                unit * u64::from(*qty)
            );
        }
        for entry in body["suppliers"].as_array().unwrap() {
            assert_ne!(entry["outcome"], "error", "{body}");
        }
    }
    let all: Vec<_> = results
        .iter()
        .filter(|r| r.3["strategy"] == "all")
        .collect();
    assert!(
        all.iter()
            .all(|r| r.3["quotes"].as_array().unwrap().len() == 3),
        "every `all` request heard all three suppliers"
    );

    // Every pending entry is gone on both gateways, and the slow supplier's
    // answers to the `fastest` requests were counted as late.
    let client = &w.client;
    let mut late = 0;
    for gateway in gateways {
        let url = format!("http://{gateway}/suppliers");
        eventually(Duration::from_secs(5), "no pending requests", || async {
            let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            body["pending_requests"] == 0
        })
        .await;
        let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        late += body["late_replies"].as_u64().unwrap();
    }
    assert!(
        late > 0,
        "the slow supplier's answers after `fastest` finished are late"
    );
    second.stop().await;
    w.finish().await;
}
