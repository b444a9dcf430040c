//! `GET /metrics` agrees with the ledger, in JSON and in Prometheus text.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Options, Stack, eventually};

/// Pushes a known sequence through the real pipeline: two reserved (and so
/// notified), one out of stock, one unknown SKU, one client retry.
async fn known_sequence(s: &mut Stack) {
    s.world.set_stock("widget", 2).await;
    s.world.set_stock("gadget", 40).await;
    for body in [
        r#"{"id":"m-1","sku":"widget","qty":1}"#,
        r#"{"id":"m-1","sku":"widget","qty":1}"#,
        r#"{"id":"m-2","sku":"widget","qty":1}"#,
        r#"{"id":"m-3","sku":"widget","qty":1}"#,
        r#"{"id":"m-4","sku":"ghost","qty":1}"#,
    ] {
        assert_eq!(s.post(body).await, 202);
        // Let each order be decided before the next, so "m-3" is the one
        // that finds the widgets gone.
        let id = body.split('"').nth(3).unwrap().to_owned();
        let url = format!("{}/orders/{id}", s.dashboard);
        let client = s.client.clone();
        eventually(Duration::from_secs(30), "the order decided", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                v["status"] != "accepted"
            }
        })
        .await;
    }
    eventually(Duration::from_secs(30), "both notified", || async {
        s.world.counter("notified").await == 2
    })
    .await;
    // A decision is recorded before its event is published: wait for the two
    // rejection events too.
    let rejected = s.world.queue("orders.rejected");
    eventually(
        Duration::from_secs(30),
        "both rejection events published",
        || async { testkit::queue_depth(&rejected).await == 2 },
    )
    .await;
}

#[tokio::test]
async fn json_metrics_agree_with_the_ledger() {
    let mut s = Stack::start().await;
    known_sequence(&mut s).await;
    let m = s.metrics_json().await;
    assert_eq!(m["orders"]["accepted"], 4, "{m}");
    assert_eq!(m["orders"]["reserved"], 2, "{m}");
    assert_eq!(m["orders"]["rejected"], 2, "{m}");
    assert_eq!(m["orders"]["rejected_by_reason"]["out_of_stock"], 1);
    assert_eq!(m["orders"]["rejected_by_reason"]["unknown_sku"], 1);
    assert_eq!(m["orders"]["notified"], 2);
    assert_eq!(
        m["inventory"],
        serde_json::json!([{"sku": "gadget", "units": 40}, {"sku": "widget", "units": 0}])
    );
    assert_eq!(
        m["notifications"],
        serde_json::json!({"sent": 2, "sending": 0, "failed": 0})
    );
    assert_eq!(m["queues"]["orders.queue"], 0);
    assert_eq!(m["queues"]["notifier.queue"], 0);
    assert_eq!(m["queues"]["orders.dlq"], 0);
    assert_eq!(m["queues"]["notifier.dlq"], 0);
    assert_eq!(
        m["queues"]["orders.rejected"], 2,
        "two rejection events kept"
    );
    assert_eq!(m["health"]["redis"], true);
    assert_eq!(m["health"]["broker"], true);

    // The journey of one order, with its notification.
    let journey: Value = s
        .client
        .get(format!("{}/orders/m-1", s.dashboard))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journey["status"], "notified");
    assert_eq!(journey["notification"]["status"], "sent");
    assert_eq!(journey["notification"]["channel"], "log");
    let res = s
        .client
        .get(format!("{}/orders/nope", s.dashboard))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = s
        .client
        .get(format!("{}/orders/bad%20id", s.dashboard))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    s.stop().await;
}

#[tokio::test]
async fn prometheus_text_passes_promtool() {
    let mut s = Stack::start().await;
    known_sequence(&mut s).await;
    let res = s
        .client
        .get(format!("{}/metrics", s.dashboard))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains("order_pipeline_orders_total{stage=\"notified\"} 2"),
        "{text}"
    );
    assert!(text.contains("order_pipeline_orders_rejected_total{reason=\"unknown_sku\"} 1"));
    assert!(text.contains("order_pipeline_inventory_units{sku=\"widget\"} 0"));
    // The one live replica holds the lease: the sampler shows it active.
    let active = format!("order_pipeline_history_active{{url=\"{}\"}} 1", s.history);
    eventually(
        Duration::from_secs(30),
        "the replica shown active",
        || async { prometheus_text(&s).await.contains(&active) },
    )
    .await;
    // The dashboard's own process counters follow the pipeline's figures.
    let text = prometheus_text(&s).await;
    assert!(
        text.contains("# TYPE dashboard_inventory_scans_total counter"),
        "{text}"
    );
    assert!(text.contains("http_requests_total{"), "{text}");
    assert!(text.contains("order_pipeline_history_active{url=\"http://127.0.0.1:9\"} 0"));
    assert!(
        text.contains("order_pipeline_component_up{component=\"gateway\"} 1"),
        "{text}"
    );
    assert_promtool_accepts(&text);

    let openmetrics = s
        .client
        .get(format!("{}/metrics", s.dashboard))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(openmetrics.starts_with("# HELP"));
    s.stop().await;
}

#[tokio::test]
async fn a_non_integer_stock_value_is_named_and_its_order_counted_as_parked() {
    let mut s = Stack::start().await;
    let key = s.world.key("inventory:typo");
    let _: () = redis::AsyncCommands::set(&mut s.world.redis, key, "abc")
        .await
        .unwrap();
    assert_eq!(s.post(r#"{"id":"p-1","sku":"typo","qty":1}"#).await, 202);
    eventually(Duration::from_secs(30), "the order parked", || async {
        s.metrics_json().await["orders"]["parked"] == 1
    })
    .await;
    let m = s.metrics_json().await;
    assert_eq!(
        m["inventory"],
        serde_json::json!([{"sku": "typo", "units": null, "invalid_value": "abc"}]),
        "{m}"
    );
    let text = prometheus_text(&s).await;
    assert!(
        text.contains("order_pipeline_inventory_invalid{sku=\"typo\"} 1"),
        "{text}"
    );
    assert!(text.contains("order_pipeline_orders_parked 1"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn a_sku_seeded_by_hand_shows_at_the_next_sample_and_a_deleted_one_goes() {
    let mut s = Stack::start().await;
    eventually(Duration::from_secs(10), "the SKU watch", || async {
        s.metrics_json().await["health"]["inventory_watch"] == true
    })
    .await;
    // As an operator would: `redis-cli SET inventory:hand-seeded 40`. The
    // rescan interval is an hour here, so only the watch can find it.
    let key = s.world.key("inventory:hand-seeded");
    let _: () = redis::AsyncCommands::set(&mut s.world.redis, &key, 40)
        .await
        .unwrap();
    let seen = |m: &serde_json::Value| {
        m["inventory"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["sku"] == "hand-seeded" && i["units"] == 40)
    };
    eventually(Duration::from_secs(2), "the hand-seeded SKU", || async {
        seen(&s.metrics_json().await)
    })
    .await;
    let _: () = redis::AsyncCommands::del(&mut s.world.redis, &key)
        .await
        .unwrap();
    eventually(Duration::from_secs(2), "the deleted SKU gone", || async {
        !seen(&s.metrics_json().await)
    })
    .await;
    // Seeded again: reported again.
    let _: () = redis::AsyncCommands::set(&mut s.world.redis, &key, 40)
        .await
        .unwrap();
    eventually(Duration::from_secs(2), "the re-seeded SKU", || async {
        seen(&s.metrics_json().await)
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn live_pages_are_capped_and_framework_errors_are_problems() {
    let s = Stack::start().await;
    // The test stack serves 8 live pages at once.
    let mut open = Vec::new();
    for _ in 0..8 {
        let res = s
            .client
            .get(format!("{}/events", s.dashboard))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let res = s
        .client
        .get(format!("{}/events", s.dashboard))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    drop(open);
    eventually(Duration::from_secs(10), "a freed slot", || async {
        s.client
            .get(format!("{}/events", s.dashboard))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    for (method, path, status) in [
        (reqwest::Method::GET, "/nowhere", 404),
        (reqwest::Method::POST, "/metrics", 405),
        (reqwest::Method::GET, "/orders/%FF", 400),
    ] {
        let res = s
            .client
            .request(method.clone(), format!("{}{path}", s.dashboard))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_history_panel_names_each_replica_with_its_role_and_lag() {
    let mut s = Stack::start().await;
    known_sequence(&mut s).await;
    let history = s.history.clone();
    let mut last = Value::Null;
    for _ in 0..200 {
        last = s.metrics_json().await;
        let replicas = &last["history"];
        if replicas[0]["role"] == "active" && replicas[0]["checkpoint"].is_i64() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let replicas = last["history"].as_array().expect("a history array");
    assert_eq!(replicas.len(), 2, "{last}");
    assert_eq!(replicas[0]["url"], history.as_str());
    assert_eq!(replicas[0]["replica"], "dash-h1");
    assert_eq!(replicas[0]["role"], "active", "{last}");
    assert!(replicas[0]["checkpoint"].is_i64(), "{last}");
    assert!(replicas[0]["lag_events"].is_u64(), "{last}");
    assert_eq!(replicas[1]["role"], "down");
    assert!(replicas[1]["error"].is_string());
    s.stop().await;
}

/// `promtool check metrics` finds nothing wrong with `text`.
fn assert_promtool_accepts(text: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package `prometheus`; `make deps` installs it)");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the output:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn prometheus_text(s: &Stack) -> String {
    s.client
        .get(format!("{}/metrics", s.dashboard))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_suppliers_panel_names_the_gateways_suppliers() {
    let s = Stack::start_with(Options {
        suppliers: vec!["acme", "globex"],
        ..Options::default()
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the gateway's suppliers, its reply consumer up",
        || async {
            let m = s.metrics_json().await;
            m["suppliers"]["status"] == "up" && m["suppliers"]["reply_consumer"] == "up"
        },
    )
    .await;
    let m = s.metrics_json().await;
    let panel = &m["suppliers"];
    assert_eq!(panel["url"], s.gateway.as_str(), "{m}");
    assert!(panel.get("error").is_none(), "{m}");
    assert_eq!(panel["pending_requests"], 0, "{m}");
    assert_eq!(panel["late_replies"], 0, "{m}");
    let suppliers = panel["suppliers"].as_array().expect("a suppliers array");
    let names: Vec<&str> = suppliers
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["acme", "globex"], "in QUOTE_SUPPLIERS order: {m}");
    // Never asked: closed, counts at zero, no rate or latency yet.
    for p in suppliers {
        assert_eq!(p["circuit"], "closed", "{p}");
        assert!(p["open_for_ms"].is_null(), "{p}");
        for count in [
            "window_calls",
            "window_failures",
            "recent_calls",
            "replies",
            "errors",
            "timeouts",
            "skipped",
        ] {
            assert_eq!(p[count], 0, "{count}: {p}");
        }
        for figure in [
            "recent_success_rate",
            "latency_p50_ms",
            "latency_p99_ms",
            "last_error",
        ] {
            assert!(p[figure].is_null(), "{figure}: {p}");
        }
    }

    let text = prometheus_text(&s).await;
    for name in ["acme", "globex"] {
        assert!(
            text.contains(&format!(
                "order_pipeline_supplier_circuit_state{{supplier=\"{name}\"}} 0"
            )),
            "{text}"
        );
    }
    // No call yet, no success ratio (the family is still declared).
    assert!(
        text.contains("# TYPE order_pipeline_supplier_success_ratio gauge"),
        "{text}"
    );
    assert!(
        !text.contains("order_pipeline_supplier_success_ratio{"),
        "{text}"
    );
    assert!(
        text.contains("order_pipeline_component_up{component=\"gateway\"} 1"),
        "{text}"
    );
    assert_promtool_accepts(&text);
    s.stop().await;
}

#[tokio::test]
async fn a_gateway_that_does_not_answer_is_shown_unreachable_with_the_reason() {
    let s = Stack::start_with(Options {
        gateway_url: Some("http://127.0.0.1:9".into()),
        ..Options::default()
    })
    .await;
    // Read fresh on each request: no sample to wait for.
    let m = s.metrics_json().await;
    let panel = &m["suppliers"];
    assert_eq!(panel["url"], "http://127.0.0.1:9", "{m}");
    assert_eq!(panel["status"], "unreachable", "{m}");
    assert!(
        panel["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a reason: {m}"
    );
    assert_eq!(panel["suppliers"], json!([]), "{m}");
    for figure in ["pending_requests", "late_replies", "reply_consumer"] {
        assert!(panel[figure].is_null(), "{figure}: {m}");
    }
    // The rest of the sample stands.
    assert_eq!(m["health"]["redis"], true, "{m}");
    assert!(m["orders"]["accepted"].is_u64(), "{m}");

    let text = prometheus_text(&s).await;
    assert!(
        text.contains("order_pipeline_component_up{component=\"gateway\"} 0"),
        "{text}"
    );
    assert!(
        !text.contains("order_pipeline_supplier_circuit_state{"),
        "{text}"
    );
    assert_promtool_accepts(&text);
    s.stop().await;
}

#[tokio::test]
async fn every_view_needs_the_admin_key_as_basic_or_bearer() {
    let s = Stack::start().await;
    let plain = reqwest::Client::new();
    for path in [
        "/",
        "/metrics",
        "/events",
        "/orders/x",
        "/metrics?format=prometheus",
    ] {
        let res = plain
            .get(format!("{}{path}", s.dashboard))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Basic realm=\"orders\", charset=\"UTF-8\"",
            "a browser asks for the key"
        );
    }
    let basic = plain
        .get(format!("{}/metrics", s.dashboard))
        .basic_auth("anyone", Some(&s.key))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200, "the key as the Basic password");
    let wrong = plain
        .get(format!("{}/metrics", s.dashboard))
        .basic_auth(&s.key, Some("not-the-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "the user name is not the key");
    let bearer = s
        .client
        .get(format!("{}/", s.dashboard))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200, "or as Bearer");
    let client_key = testkit::mint_key(&s.world.prefix, "shop", &clients::Scope::CLIENT).await;
    let shop = plain
        .get(format!("{}/metrics", s.dashboard))
        .basic_auth("shop", Some(&client_key))
        .send()
        .await
        .unwrap();
    assert_eq!(shop.status(), 403, "a client key is no operator's");
    let health = plain
        .get(format!("{}/health", s.dashboard))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    s.stop().await;
}
