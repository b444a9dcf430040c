//! Per-client scoping: a client's idempotency keys, order ids and quotes are
//! its own.

use clients::Scope;
use pipeline::domain::{ClientId, OrderId};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

async fn place(
    app: &TestApp,
    client: &reqwest::Client,
    body: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(app.url("/orders"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.unwrap()
}

async fn client_of(app: &TestApp, name: &str) -> reqwest::Client {
    testkit::client_with_key(&testkit::mint_key_in(&app.config.keys, name, &Scope::CLIENT).await)
}

#[tokio::test]
async fn two_clients_with_the_same_key_and_id_make_two_orders_and_never_meet() {
    let app = spawn_app().await;
    let acme = client_of(&app, "acme").await;
    let order = r#"{"id":"shared-1","sku":"mag-safe-phone-case","qty":2}"#;
    for client in [&app.client, &acme] {
        let res = place(&app, client, order, Some("k-shared")).await;
        assert_eq!(res.status(), 202);
        assert!(
            !res.headers().contains_key("idempotent-replayed"),
            "another client's key is no replay"
        );
        assert_eq!(res.headers()["location"], "/orders/shared-1");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["id"], "shared-1", "each client sees its own id");
    }
    // The same header key for another payload is no 422 across clients.
    let other = r#"{"sku":"mag-safe-phone-case","qty":7}"#;
    assert_eq!(
        place(
            &app,
            &app.client,
            r#"{"sku":"mag-safe-phone-case","qty":1}"#,
            Some("k2")
        )
        .await
        .status(),
        202
    );
    let res = place(&app, &acme, other, Some("k2")).await;
    assert_eq!(res.status(), 202, "acme's k2 is not default's k2");
    assert!(!res.headers().contains_key("idempotent-replayed"));

    // Four orders, two of them named shared-1, one per client.
    let messages = app.drain_orders().await;
    assert_eq!(messages.len(), 4);
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(ids.contains(&"shared-1".to_owned()), "{ids:?}");
    assert!(ids.contains(&"acme/shared-1".to_owned()), "{ids:?}");
    let mut redis = app.redis().await;
    let qty: Option<String> = redis::cmd("HGET")
        .arg(app.key("order:acme/shared-1"))
        .arg("qty")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        qty.as_deref(),
        Some("2"),
        "acme's record under its qualified id"
    );

    // Each reads its own shared-1; a third client reads nothing, exactly as
    // for an id nobody used.
    for (client, name) in [(&app.client, "default"), (&acme, "acme")] {
        let res = client
            .get(app.url("/orders/shared-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let view: Value = res.json().await.unwrap();
        assert_eq!(
            (view["id"].as_str(), view["client"].as_str()),
            (Some("shared-1"), Some(name))
        );
    }
    let stranger = client_of(&app, "stranger").await;
    let theirs = stranger
        .get(app.url("/orders/shared-1"))
        .send()
        .await
        .unwrap();
    let never = stranger
        .get(app.url("/orders/never-used"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (theirs.status().as_u16(), never.status().as_u16()),
        (404, 404)
    );
    let (theirs, never): (Value, Value) =
        (theirs.json().await.unwrap(), never.json().await.unwrap());
    assert_eq!(theirs, never, "nothing tells that the id exists elsewhere");
    // A qualified id is no way around it: `/` is not in an id.
    let sneaky = stranger
        .get(app.url("/orders/acme%2Fshared-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn a_quote_backs_an_order_of_its_own_client_only() {
    let app = spawn_app().await;
    let acme = client_of(&app, "acme").await;
    // A quote acme was handed (as issue_quotes.lua writes it).
    let quote = pipeline::domain::QuoteId::generate();
    let valid_until = pipeline::messages::now_ms() + 60_000;
    let mut redis = app.redis().await;
    let () = redis::cmd("HSET")
        .arg(app.key(&format!("quote:{}", quote.as_str())))
        .arg(&[
            ("client", "acme".to_owned()),
            ("sku", "mag-safe-phone-case".to_owned()),
            ("qty", "1".to_owned()),
            ("supplier", "acme".to_owned()),
            ("unit_price_minor", "1250".to_owned()),
            ("total_minor", "1250".to_owned()),
            ("currency", "EUR".to_owned()),
            ("delivery_days", "3".to_owned()),
            ("valid_until_ms", valid_until.to_string()),
        ])
        .query_async(&mut redis)
        .await
        .unwrap();
    let body = |id: &str| {
        format!(
            r#"{{"id":"{id}","sku":"mag-safe-phone-case","qty":1,"quote_id":"{}"}}"#,
            quote.as_str()
        )
    };
    let res = place(&app, &app.client, &body("q-theirs"), None).await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/invalid-quote");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("unknown or expired"),
        "another client's quote is unknown to this one: {problem}"
    );
    let res = place(&app, &acme, &body("q-mine"), None).await;
    assert_eq!(res.status(), 202);
    let id = OrderId::parse("q-mine")
        .unwrap()
        .scoped(&ClientId::parse("acme").unwrap());
    let backs: Option<String> = redis::cmd("HGET")
        .arg(app.key(&format!("quote:{}", quote.as_str())))
        .arg("order_id")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(backs.as_deref(), Some(id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn the_rate_limit_holds_across_two_gateways_and_a_429_claims_nothing() {
    let config = crate::helpers::test_config(&testkit::unique_prefix());
    let (a, b) = (
        crate::helpers::spawn_with(config.clone()).await,
        crate::helpers::spawn_with(config).await,
    );
    let key = testkit::mint_limited_key_in(&a.config.keys, "limited", &Scope::CLIENT, 20, 20).await;
    let client = testkit::client_with_key(&key);
    // 200 orders in one second, alternating between the gateways.
    let started = std::time::Instant::now();
    let sends = (0..200u32).map(|i| {
        let (client, app) = (client.clone(), if i % 2 == 0 { &a } else { &b });
        let url = app.url("/orders");
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(i) * 5)).await;
            let body = format!(r#"{{"id":"rl-{i}","sku":"mag-safe-phone-case","qty":1}}"#);
            let res = client
                .post(url)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("rl-key-{i}"))
                .body(body)
                .send()
                .await
                .unwrap();
            (i, res)
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut accepted = Vec::new();
    for (i, res) in &answers {
        assert_eq!(res.headers()["ratelimit-policy"], "\"orders\";q=20;w=1");
        assert!(
            res.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"orders\";r=")
        );
        match res.status().as_u16() {
            202 => accepted.push(*i),
            429 => {
                let after: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&after), "Retry-After {after}");
                assert!(
                    res.headers()["ratelimit"]
                        .to_str()
                        .unwrap()
                        .contains(";r=0;")
                );
            }
            other => panic!("order {i}: {other}"),
        }
    }
    let allowed = 20.0 * elapsed + 20.0;
    eprintln!(
        "{} of 200 accepted in {elapsed:.2} s through two gateways (at most {allowed:.0})",
        accepted.len()
    );
    assert!(
        accepted.len() >= 20,
        "the burst goes through: {}",
        accepted.len()
    );
    assert!(
        accepted.len() as f64 <= allowed + 1.0,
        "{} accepted, the rate allows {allowed:.0}",
        accepted.len()
    );
    // Only the accepted orders reached the broker; a refused one claimed
    // neither its key nor its id.
    assert_eq!(a.queued_orders().await as usize, accepted.len());
    let mut redis = a.redis().await;
    for (i, res) in &answers {
        if res.status() == 429 {
            let order: bool = redis::cmd("EXISTS")
                .arg(a.key(&format!("order:limited/rl-{i}")))
                .query_async(&mut redis)
                .await
                .unwrap();
            let claim: bool = redis::cmd("EXISTS")
                .arg(a.key(&format!("idemp@limited:rl-key-{i}")))
                .query_async(&mut redis)
                .await
                .unwrap();
            assert!(!order && !claim, "order {i} was refused yet claimed");
        }
    }
    a.stop().await;
    b.stop().await;
}
