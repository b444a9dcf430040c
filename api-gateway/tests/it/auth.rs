//! Who may call: client keys, their scopes, revocation across gateways, and
//! keys that keep working while PostgreSQL is away.

use std::time::Duration;

use clients::Scope;
use serde_json::Value;
use testkit::{ProxyMode, TcpProxy};

use crate::helpers::{eventually, spawn_with, test_config, unique_prefix};

const ORDER: &str = r#"{"id":"auth-1","sku":"mag-safe-phone-case","qty":1}"#;

async fn post(client: &reqwest::Client, url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(ORDER);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn no_key_a_malformed_unknown_or_revoked_key_are_one_and_the_same_401() {
    let app = spawn_with(test_config(&unique_prefix())).await;
    let revoked = testkit::mint_key_in(&app.config.keys, "gone", &[]).await;
    let key_id = revoked[3..15].to_owned();
    let mut out = Vec::new();
    clients::KeysCommand::Revoke { key_id }
        .run(&app.config.keys, &mut out)
        .await
        .unwrap();
    let unknown = format!("op_{}_{}", "a".repeat(12), "b".repeat(32));
    let plain = reqwest::Client::new();
    let url = app.url("/orders");
    let mut bodies = Vec::new();
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some("Bearer not-a-key".to_owned()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {revoked}")),
    ] {
        let res = post(&plain, &url, auth.as_deref()).await;
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"orders\"");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        bodies.push(res.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert!(!bodies[0].contains(&revoked[15..]), "never echoes a secret");
    assert_eq!(app.queued_orders().await, 0, "nothing was placed");
    app.stop().await;
}

#[tokio::test]
async fn a_key_without_the_scope_is_403_and_health_is_open() {
    let app = spawn_with(test_config(&unique_prefix())).await;
    let quotes_only = testkit::mint_key_in(&app.config.keys, "q", &[Scope::QuotesRead]).await;
    let client_key = testkit::mint_key_in(&app.config.keys, "c", &Scope::CLIENT).await;
    let (q, c) = (
        testkit::client_with_key(&quotes_only),
        testkit::client_with_key(&client_key),
    );
    let res = post(&q, &app.url("/orders"), None).await;
    assert_eq!(res.status(), 403);
    assert!(!res.headers().contains_key("www-authenticate"));
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/forbidden");
    assert!(
        problem["detail"].as_str().unwrap().contains("orders:write"),
        "{problem}"
    );
    for path in ["/metrics", "/suppliers", "/"] {
        let res = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 403, "{path} needs admin");
    }
    assert_eq!(
        q.get(app.url("/orders/x")).send().await.unwrap().status(),
        403
    );
    // A client key places and reads; the admin key (the tests') sees metrics.
    assert_eq!(post(&c, &app.url("/orders"), None).await.status(), 202);
    assert_eq!(
        c.get(app.url("/orders/auth-1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let open = reqwest::get(app.url("/health")).await.unwrap();
    assert_eq!(open.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_gateway_within_seconds() {
    let config = test_config(&unique_prefix());
    let (a, b) = (spawn_with(config.clone()).await, spawn_with(config).await);
    let key = testkit::mint_key_in(&a.config.keys, "soon-gone", &Scope::CLIENT).await;
    let client = testkit::client_with_key(&key);
    for app in [&a, &b] {
        let res = client.get(app.url("/orders/none")).send().await.unwrap();
        assert_eq!(res.status(), 404, "the key works (and is cached) on both");
    }
    let mut out = Vec::new();
    clients::KeysCommand::Revoke {
        key_id: key[3..15].to_owned(),
    }
    .run(&a.config.keys, &mut out)
    .await
    .unwrap();
    let revoked = std::time::Instant::now();
    for app in [&a, &b] {
        eventually(
            Duration::from_secs(5),
            "the revocation to reach the gateway",
            || async {
                client
                    .get(app.url("/orders/none"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    == 401
            },
        )
        .await;
    }
    eprintln!("revoked on both gateways after {:?}", revoked.elapsed());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_key_seen_keeps_working_while_postgres_is_away_and_a_new_one_is_503() {
    let pg: std::net::SocketAddr = "127.0.0.1:5433".parse().unwrap();
    let proxy = TcpProxy::start(pg).await;
    let mut config = test_config(&unique_prefix());
    let direct = config.keys.clone();
    config.keys.database_url = testkit::database_url()
        .replace("127.0.0.1:5433", &proxy.addr.to_string())
        .into();
    let app = spawn_with(config).await;
    let seen = testkit::mint_key_in(&direct, "seen", &Scope::CLIENT).await;
    let unseen = testkit::mint_key_in(&direct, "unseen", &Scope::CLIENT).await;
    let seen = testkit::client_with_key(&seen);
    assert_eq!(post(&seen, &app.url("/orders"), None).await.status(), 202);

    proxy.set(ProxyMode::Down);
    // Past a few refreshes that could not reach PostgreSQL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = post(&seen, &app.url("/orders"), None).await;
    assert_eq!(again.status(), 202, "the cached key still places orders");
    let res = post(
        &testkit::client_with_key(&unseen),
        &app.url("/orders"),
        None,
    )
    .await;
    assert_eq!(
        res.status(),
        503,
        "a key never seen cannot be checked: not 401"
    );
    assert!(res.headers().contains_key("retry-after"));

    proxy.set(ProxyMode::Forward);
    eventually(
        Duration::from_secs(10),
        "the new key checked once PostgreSQL is back",
        || async {
            post(
                &testkit::client_with_key(&unseen),
                &app.url("/orders"),
                None,
            )
            .await
            .status()
                == 202
        },
    )
    .await;
    app.stop().await;
}

/// The operator's commands, through the real binary.
#[tokio::test]
async fn keys_create_list_and_revoke_from_the_command_line() {
    let config = test_config(&unique_prefix());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_api-gateway"))
            .args(args)
            .env("DATABASE_URL", testkit::database_url())
            .env("KEYS_SCHEMA", &config.keys.cache.schema)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, key, err) = cli(&[
        "keys",
        "create",
        "--client",
        "shop-1",
        "--scope",
        "orders:write",
        "--scope",
        "orders:read",
        "--orders-per-sec",
        "50",
    ]);
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(
        key.starts_with("op_") && !key.contains('\n'),
        "the key alone: {key:?}"
    );
    assert!(
        !err.contains(&key[15..]),
        "the secret is never logged: {err}"
    );
    let key_id = &key[3..15];
    let (ok, list, _) = cli(&["keys", "list"]);
    assert!(ok);
    let row = list
        .lines()
        .find(|l| l.starts_with(key_id))
        .expect("listed");
    assert!(
        row.contains("shop-1") && row.contains("orders:write,orders:read"),
        "{row}"
    );
    assert!(row.contains("50"), "{row}");
    assert!(
        !list.contains(&key[15..]),
        "never a secret in the list: {list}"
    );
    let (ok, out, _) = cli(&["keys", "revoke", key_id]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, list, _) = cli(&["keys", "list"]);
    assert!(ok);
    let row = list.lines().find(|l| l.starts_with(key_id)).unwrap();
    assert!(!row.trim_end().ends_with('-'), "revoked time shown: {row}");
    let (ok, _, err) = cli(&["keys", "revoke", "nosuchkeyid0"]);
    assert!(!ok && err.contains("no key"), "{err}");
    let (ok, _, err) = cli(&["keys", "create", "--client", "a b"]);
    assert!(!ok && err.contains("--client"), "{err}");
    let (ok, _, err) = cli(&["keys", "create", "--client", "x", "--scope", "root"]);
    assert!(!ok && err.contains("orders:write"), "{err}");
    if let Ok(store) = config.keys.store() {
        let _ = store.drop_schema().await;
    }
}
