//! `GET /quotes/{sku}` against three real suppliers: every strategy, partial
//! results, quorum, nothing in stock, circuits opening and closing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Knobs, World, eventually, outcome, quick_breaker};

const THREE: [&str; 3] = ["acme", "globex", "initech"];

fn healthy() -> Vec<(&'static str, Knobs)> {
    THREE.iter().map(|n| (*n, Knobs::default())).collect()
}

fn supplier_of(quote: &Value) -> &str {
    quote["supplier"]
        .as_str()
        .unwrap_or_else(|| panic!("a quote, got {quote}"))
}

#[tokio::test]
async fn all_compares_every_supplier_cheapest_first() {
    let w = World::new(&healthy(), quick_breaker()).await;
    let (status, body) = w.quote("qty=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["completed_by"], "all");
    assert_eq!(body["strategy"], "all");
    assert_eq!(supplier_of(&body["cheapest"]), "globex");
    assert_eq!(
        supplier_of(&body["fastest"]),
        "initech",
        "fewest delivery days"
    );
    assert_eq!(supplier_of(&body["quote"]), "globex");
    let quotes = body["quotes"].as_array().unwrap();
    let order: Vec<&str> = quotes.iter().map(supplier_of).collect();
    assert_eq!(order, ["globex", "acme", "initech"], "cheapest total first");
    let cheapest = &quotes[0];
    assert_eq!(cheapest["unit_price_minor"], 1190);
    assert_eq!(cheapest["total_minor"], 2380);
    assert_eq!(cheapest["currency"], "EUR");
    assert_eq!(cheapest["qty"], 2);
    assert!(cheapest["quote_id"].as_str().unwrap().starts_with("q-"));
    assert!(cheapest["valid_until"].as_str().unwrap().ends_with('Z'));
    for name in THREE {
        let entry = outcome(&body, name);
        assert_eq!(entry["outcome"], "quoted", "{entry}");
        assert_eq!(entry["responded"], true);
        assert_eq!(entry["circuit"], "closed");
        assert!(entry["latency_ms"].as_f64().is_some());
    }
    w.finish().await;
}

#[tokio::test]
async fn cheapest_fastest_and_quorum_pick_and_say_why_they_stopped() {
    // acme and globex answer late; initech at once.
    let mut w = World::new(
        &[
            ("acme", Knobs::slow(400)),
            ("globex", Knobs::slow(400)),
            ("initech", Knobs::default()),
        ],
        quick_breaker(),
    )
    .await;
    let (status, body) = w.quote("strategy=cheapest").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(supplier_of(&body["quote"]), "globex");
    assert_eq!(
        body["completed_by"], "all",
        "cheapest waits for every supplier by default"
    );

    let (status, body) = w.quote("strategy=cheapest&min_responses=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["completed_by"], "min_responses");
    assert_eq!(
        supplier_of(&body["quote"]),
        "initech",
        "the only answer by then"
    );
    assert_eq!(outcome(&body, "acme")["outcome"], "unanswered");

    let (status, body) = w.quote("strategy=fastest").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["completed_by"], "min_responses");
    assert_eq!(
        supplier_of(&body["quote"]),
        "initech",
        "the first in-stock quote"
    );

    // Two suppliers quote the same unit price: a quorum of two.
    w.set_catalog("acme", crate::helpers::SKU, 1190, 500, 3)
        .await;
    let (status, body) = w.quote("strategy=quorum&min_responses=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["completed_by"], "quorum");
    let agreed = &body["quote"];
    assert_eq!(agreed["unit_price_minor"], 1190);
    assert_eq!(
        supplier_of(agreed),
        "acme",
        "fewer delivery days than globex"
    );
    w.finish().await;
}

#[tokio::test]
async fn quorum_not_reached_is_502_and_too_few_answers_by_the_deadline_504() {
    let w = World::new(&healthy(), quick_breaker()).await;
    // Three different prices: no two agree.
    let (status, body) = w.quote("strategy=quorum").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["type"], "/problems/quorum-not-reached");
    assert_eq!(
        body["suppliers"].as_array().unwrap().len(),
        3,
        "the answers are in the body"
    );
    w.finish().await;

    let w = World::new(
        &[
            ("acme", Knobs::default()),
            ("globex", Knobs::slow(5_000)),
            ("initech", Knobs::slow(5_000)),
        ],
        quick_breaker(),
    )
    .await;
    let (status, body) = w
        .quote("strategy=quorum&min_responses=2&timeout_ms=300")
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["type"], "/problems/quotes-timeout");
    assert_eq!(body["completed_by"], "timeout");
    w.finish().await;
}

#[tokio::test]
async fn a_slow_supplier_past_the_deadline_leaves_a_partial_result() {
    let w = World::new(
        &[
            ("acme", Knobs::default()),
            ("globex", Knobs::default()),
            ("initech", Knobs::slow(5_000)),
        ],
        quick_breaker(),
    )
    .await;
    let (status, body) = w.quote("timeout_ms=300").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["completed_by"], "timeout");
    assert_eq!(outcome(&body, "initech")["outcome"], "timeout");
    assert_eq!(outcome(&body, "initech")["responded"], false);
    assert_eq!(body["quotes"].as_array().unwrap().len(), 2);
    assert_eq!(supplier_of(&body["cheapest"]), "globex");

    // Asking for all three answers makes the same partial result a 504.
    let (status, body) = w.quote("timeout_ms=300&min_responses=3").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["type"], "/problems/quotes-timeout");
    let partial = body["quotes"].as_array().unwrap();
    assert_eq!(partial.len(), 2, "partial results kept");
    assert!(
        partial[0]["quote_id"].is_null(),
        "but not to be ordered against"
    );
    w.finish().await;
}

#[tokio::test]
async fn nobody_with_stock_is_404_with_each_suppliers_reason() {
    let mut w = World::new(&healthy(), quick_breaker()).await;
    w.set_catalog("acme", crate::helpers::SKU, 1250, 3, 3).await;
    let (status, body) = w.quote("qty=600").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["type"], "/problems/no-available-supplier");
    assert_eq!(outcome(&body, "acme")["reason"], "insufficient_stock");
    assert_eq!(outcome(&body, "acme")["stock"], 3);

    let (status, body) = w.get("/quotes/no-such-sku").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(outcome(&body, "globex")["reason"], "not_carried");
    w.finish().await;
}

#[tokio::test]
async fn a_failing_supplier_opens_its_circuit_and_a_probe_closes_it() {
    let mut w = World::new(
        &[
            ("acme", Knobs::default()),
            ("globex", Knobs::default()),
            ("initech", Knobs::failing()),
        ],
        quick_breaker(),
    )
    .await;
    let (status, body) = w.quote("").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one failure is no reason to fail the request: {body}"
    );
    let initech = outcome(&body, "initech");
    assert_eq!(initech["outcome"], "error");
    assert!(
        initech["error"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{initech}"
    );
    // Two failing calls of a window of four open the circuit.
    let (_, body) = w.quote("").await;
    assert_eq!(outcome(&body, "initech")["outcome"], "error");
    let status = w.supplier_status("initech").await;
    assert_eq!(status["circuit"], "open", "{status}");
    assert!(status["last_error"].as_str().unwrap().contains("injected"));

    // Open: initech is not asked at all.
    let (status, body) = w.quote("").await;
    assert_eq!(status, StatusCode::OK);
    let initech = outcome(&body, "initech");
    assert_eq!(initech["outcome"], "skipped");
    assert_eq!(initech["circuit"], "open");

    // initech is fixed; after the cool-down one probe goes through and
    // closes the circuit.
    w.stop_supplier("initech").await;
    w.start_supplier("initech", Knobs::default()).await;
    eventually(Duration::from_secs(5), "the cool-down to end", || async {
        w.supplier_status("initech").await["circuit"] == "half_open"
    })
    .await;
    let (_, body) = w.quote("").await;
    let initech = outcome(&body, "initech");
    assert_eq!(initech["circuit"], "half_open", "asked as a probe");
    assert_eq!(initech["outcome"], "quoted");
    assert_eq!(w.supplier_status("initech").await["circuit"], "closed");
    w.finish().await;
}

#[tokio::test]
async fn a_failed_probe_reopens_and_silence_counts_as_failure() {
    // A supplier that never answers: every call is a timeout.
    let mut w = World::new(&[("acme", Knobs::default())], quick_breaker()).await;
    w.stop_supplier("acme").await;
    // A deadline shorter than QUOTE_TIMEOUT_MS is the client's choice: its
    // timeouts are not held against the supplier (or any client could open
    // every circuit with timeout_ms=1).
    for _ in 0..3 {
        let (status, body) = w.quote("timeout_ms=50").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    }
    let acme = w.supplier_status("acme").await;
    assert_eq!(acme["circuit"], "closed", "{acme}");
    assert_eq!(acme["window_calls"], 0, "{acme}");
    // Silence for the whole default deadline is.
    for _ in 0..2 {
        let (status, body) = w.quote("").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(outcome(&body, "acme")["outcome"], "timeout");
    }
    assert_eq!(w.supplier_status("acme").await["circuit"], "open");
    let (status, body) = w.quote("").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "/problems/all-circuits-open");
    eventually(Duration::from_secs(5), "the cool-down to end", || async {
        w.supplier_status("acme").await["circuit"] == "half_open"
    })
    .await;
    // The probe times out too: open again.
    let (_, body) = w.quote("").await;
    assert_eq!(outcome(&body, "acme")["outcome"], "timeout");
    assert_eq!(w.supplier_status("acme").await["circuit"], "open");
    w.finish().await;
}

#[tokio::test]
async fn a_probe_the_strategy_stopped_waiting_for_still_decides_the_circuit() {
    let mut w = World::new(
        &[("acme", Knobs::default()), ("initech", Knobs::failing())],
        quick_breaker(),
    )
    .await;
    for _ in 0..2 {
        w.quote("").await;
    }
    assert_eq!(w.supplier_status("initech").await["circuit"], "open");
    // initech comes back slower than acme: `fastest` never waits for it.
    w.stop_supplier("initech").await;
    w.start_supplier("initech", Knobs::slow(300)).await;
    eventually(Duration::from_secs(5), "the cool-down to end", || async {
        w.supplier_status("initech").await["circuit"] == "half_open"
    })
    .await;
    let (status, body) = w.quote("strategy=fastest").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(outcome(&body, "initech")["outcome"], "unanswered");
    eventually(
        Duration::from_secs(3),
        "the probe's answer to close the circuit",
        || async { w.supplier_status("initech").await["circuit"] == "closed" },
    )
    .await;
    w.finish().await;
}

#[tokio::test]
async fn every_circuit_open_is_503_with_retry_after() {
    let w = World::new(
        &[("acme", Knobs::failing()), ("globex", Knobs::failing())],
        quick_breaker(),
    )
    .await;
    for _ in 0..2 {
        let (status, body) = w.quote("").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body["type"], "/problems/too-few-responses");
    }
    let res = w
        .client
        .get(w.url(&format!("/quotes/{}", crate::helpers::SKU)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("retry-after").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "/problems/all-circuits-open");
    assert_eq!(outcome(&body, "acme")["outcome"], "skipped");
    w.finish().await;
}

#[tokio::test]
async fn bad_parameters_are_422_naming_the_parameter() {
    let w = World::new(&[("acme", Knobs::default())], quick_breaker()).await;
    for (query, field) in [
        ("qty=0", "qty"),
        ("strategy=best", "strategy"),
        ("min_responses=2", "min_responses"),
        ("timeout_ms=600000", "timeout_ms"),
        ("colour=red", "query"),
        ("qty=1&qty=2", "qty"),
    ] {
        let (status, body) = w.quote(query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["type"], "/problems/invalid-field");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, body) = w.get("/quotes/bad%20sku").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "sku");
    w.finish().await;
}

#[tokio::test]
async fn a_client_holds_at_most_its_quote_budget_and_its_quotes_are_its_own() {
    let w = World::with_quotes(&healthy(), quick_breaker(), |q| q.max_outstanding = 4).await;
    let (status, body) = w.quote("qty=1&strategy=all").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let held = body["quotes"].as_array().unwrap().len();
    assert_eq!(held, 3, "three quotes held");
    // Three more would make six: none is handed out, no supplier is asked.
    let res = w
        .client
        .get(w.url("/quotes/mag-safe-phone-case?qty=1&strategy=all"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1, "Retry-After {after}");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(
        problem["type"], "/problems/quote-budget-exhausted",
        "{problem}"
    );
    let set: u64 = redis::cmd("ZCARD")
        .arg(w.key("quotes_out@default"))
        .query_async(&mut testkit::redis().await)
        .await
        .unwrap();
    assert_eq!(set, 3, "the refused answer kept nothing");

    // Another client has a budget of its own, and cannot order against the
    // first client's quote.
    let other = w.client_of("other").await;
    let res = other
        .get(w.url("/quotes/mag-safe-phone-case?qty=1&strategy=cheapest"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let theirs = body["quotes"][0]["quote_id"].as_str().unwrap();
    let res = other
        .post(w.url("/orders"))
        .json(&serde_json::json!({"sku": "mag-safe-phone-case", "qty": 1, "quote_id": theirs}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = w
        .post_order(serde_json::json!({"sku": "mag-safe-phone-case", "qty": 1, "quote_id": theirs}))
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "its own client orders against it"
    );
    w.finish().await;
}
