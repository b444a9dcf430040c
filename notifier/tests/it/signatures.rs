//! Signed webhooks, checked by the Standard Webhooks reference library
//! (`standardwebhooks` from PyPI, run through `scripts/tools.sh`), not by our
//! own reading of the specification.

use std::collections::BTreeMap;
use std::time::Duration;

use notifier::SinkConfig;
use notifier::signature::WebhookSecrets;
use serde_json::{Value, json};

use crate::helpers::{Call, Receiver, RunningNotifier, World, eventually, test_config};

/// Each call's verdict per named secret, from the reference library.
fn verify(calls: &[Call], secrets: &BTreeMap<&str, String>) -> Vec<BTreeMap<String, String>> {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "body": String::from_utf8(c.raw.clone()).unwrap(),
                "headers": {
                    "webhook-id": c.webhook[0],
                    "webhook-timestamp": c.webhook[1],
                    "webhook-signature": c.webhook[2],
                },
            })
        })
        .collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut child = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/tools.sh"))
        .arg("python")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/verify_webhooks.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("scripts/tools.sh runs (python3 with venv)");
    {
        use std::io::Write;
        let input = json!({"secrets": secrets, "calls": calls});
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the verifier failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn every_call_and_retry_verifies_with_the_reference_library() {
    let w = World::new().await;
    let rx = Receiver::start().await;
    // The first call fails: its retry is signed again, under the same id.
    rx.answer(&[503]);
    let n = RunningNotifier::start(test_config(&w.prefix, rx.sink()), None).await;
    for id in ["signed-1", "signed-2"] {
        w.publish_created(id, "mug", 1).await;
    }
    eventually(Duration::from_secs(30), "both notified", || async {
        w.counter("notified").await == 2
    })
    .await;
    let calls = rx.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for c in &calls {
        assert_eq!(
            c.webhook[0], c.idempotency_key,
            "webhook-id is the event id"
        );
        assert!(c.webhook[2].starts_with("v1,"), "{:?}", c.webhook);
        assert!(!c.webhook[2].contains(' '), "one secret, one signature");
    }
    let ids: Vec<&str> = calls.iter().map(|c| c.webhook[0].as_str()).collect();
    assert_eq!(
        ids.iter().filter(|id| **id == ids[0]).count(),
        2,
        "a retry keeps its webhook-id: {ids:?}"
    );
    let secrets = BTreeMap::from([
        ("ours", rx.secrets.clone()),
        ("another", WebhookSecrets::generate()),
    ]);
    for (call, verdict) in calls.iter().zip(verify(&calls, &secrets)) {
        assert_eq!(verdict["ours"], "ok", "{:?}", call.webhook);
        assert!(verdict["another"].starts_with("rejected"), "{verdict:?}");
    }
    // A body changed on the way no longer verifies.
    let mut forged = calls[0].clone();
    forged.raw = String::from_utf8(forged.raw)
        .unwrap()
        .replace("\"qty\":1", "\"qty\":9")
        .into_bytes();
    assert_ne!(forged.raw, calls[0].raw);
    assert!(verify(&[forged], &secrets)[0]["ours"].starts_with("rejected"));
    n.stop().await;
    w.finish().await;
}

/// While a secret is rotated, every call carries both signatures, so a
/// receiver that knows either the old or the new secret accepts it.
#[tokio::test]
async fn during_a_rotation_either_secret_verifies() {
    let w = World::new().await;
    let rx = Receiver::start().await;
    let (new, old) = (WebhookSecrets::generate(), WebhookSecrets::generate());
    let sink = SinkConfig {
        secrets: Some(WebhookSecrets::parse(&format!("{new},{old}")).unwrap()),
        ..rx.sink()
    };
    let n = RunningNotifier::start(test_config(&w.prefix, sink), None).await;
    w.publish_created("rotated", "mug", 1).await;
    eventually(Duration::from_secs(30), "notified", || async {
        w.counter("notified").await == 1
    })
    .await;
    let calls = rx.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].webhook[2].split(' ').count(),
        2,
        "{:?}",
        calls[0].webhook
    );
    let secrets = BTreeMap::from([("new", new), ("old", old), ("retired", rx.secrets.clone())]);
    let verdict = &verify(&calls, &secrets)[0];
    assert_eq!(verdict["new"], "ok");
    assert_eq!(verdict["old"], "ok");
    assert!(verdict["retired"].starts_with("rejected"), "{verdict:?}");
    n.stop().await;
    w.finish().await;
}
