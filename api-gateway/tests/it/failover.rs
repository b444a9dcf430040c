//! Broker node failure under load: `kill -9` the node the gateway is connected
//! to, keep ordering, and check that every accepted order is in the queue.
//!
//! This kills a node of the shared local cluster, so it runs in the
//! `cluster-faults` nextest group (one at a time) and always restarts the node.
//! It kills node 3, which the other tests (connecting to node 1 first) do not use.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pipeline::config::BrokerNodes;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::helpers::{broker_urls, eventually, spawn_with, test_config, unique_prefix};

#[tokio::test]
async fn fault_kill_9_of_the_connected_node_loses_no_accepted_order() {
    let all = broker_urls();
    let raw: Vec<&str> = all.split(',').collect();
    let urls = BrokerNodes::parse(&all).unwrap();
    assert!(urls.len() >= 3, "this test needs the 3-node local cluster");

    // Connect to node 3 first, so killing it forces a failover.
    let mut config = test_config(&unique_prefix());
    config.service.broker.urls = BrokerNodes::parse(&[raw[2], raw[0], raw[1]].join(",")).unwrap();
    config.service.broker.heartbeat = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(3);
    let app = Arc::new(spawn_with(config).await);
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node3 = format!("{}:{}", urls[2].authority.host, urls[2].authority.port);
    assert_eq!(health["components"]["broker"]["node"], node3.as_str());

    const ORDERS: usize = 400;
    const CLIENTS: usize = 8;
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (app, accepted, unavailable) = (app.clone(), accepted.clone(), unavailable.clone());
            tokio::spawn(async move {
                for i in (c..ORDERS).step_by(CLIENTS) {
                    let id = format!("fo-{i}");
                    let body = format!(r#"{{"id":"{id}","sku":"mag-safe-phone-case","qty":1}}"#);
                    // A client that retries with the same key until accepted.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                    loop {
                        let res = app.post_order(&body, None).await;
                        match res.status().as_u16() {
                            202 => break,
                            503 | 409 => {
                                unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                assert!(
                                    tokio::time::Instant::now() < deadline,
                                    "{id} never accepted"
                                );
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            other => panic!("{id}: unexpected {other}"),
                        }
                    }
                    accepted.lock().await.insert(id);
                }
            })
        })
        .collect();

    eventually(
        Duration::from_secs(30),
        "some orders accepted before the kill",
        || async { accepted.lock().await.len() >= 50 },
    )
    .await;
    let restart = testkit::kill_node(3);
    for c in clients {
        c.await.unwrap();
    }

    let accepted = accepted.lock().await.clone();
    assert_eq!(accepted.len(), ORDERS);
    let queued: HashSet<String> = app
        .drain_orders()
        .await
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    let missing: Vec<_> = accepted.difference(&queued).collect();
    assert!(
        missing.is_empty(),
        "accepted but not in orders.queue: {missing:?}"
    );
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(
        health["components"]["broker"]["node"],
        node3.as_str(),
        "failed over"
    );
    eprintln!(
        "failover: {} orders accepted, {} retries answered 503/409 during the failover",
        accepted.len(),
        unavailable.load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(restart);
    let app = Arc::try_unwrap(app).ok().expect("clients are done");
    app.stop().await;
}
