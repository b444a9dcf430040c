//! One order, one story, through the whole pipeline: whatever keys clients
//! use for an id, the record, the stock change, the event and the
//! notification name the same sku and qty.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::helpers::{Pipeline, Receiver, World, eventually};

/// What the client sent: (sku, qty).
type Payload = (&'static str, u32);

/// Fires `requests` (body id, payload, key) at once and returns, per id, the
/// payloads that were answered 202.
async fn fire(
    p: &Pipeline,
    requests: &[(String, Payload, Option<String>)],
) -> BTreeMap<String, Vec<Payload>> {
    let sent = requests.iter().map(|(id, (sku, qty), key)| {
        let body = format!(r#"{{"id":"{id}","sku":"{sku}","qty":{qty}}}"#);
        async move {
            (
                id.clone(),
                (*sku, *qty),
                p.post(&body, key.as_deref()).await,
            )
        }
    });
    let mut accepted: BTreeMap<String, Vec<Payload>> = BTreeMap::new();
    for (id, payload, res) in futures_util::future::join_all(sent).await {
        match res.status().as_u16() {
            202 => accepted.entry(id).or_default().push(payload),
            409 | 422 => {
                assert_eq!(res.headers()["content-type"], "application/problem+json");
            }
            other => panic!("{id}: unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    accepted
}

/// Waits until every accepted id is final, then checks that record, stock,
/// events and notifications agree. `initial` is the stock per sku.
async fn assert_one_story(
    w: &mut World,
    p: &Pipeline,
    rx: &Receiver,
    accepted: &BTreeMap<String, Vec<Payload>>,
    initial: &HashMap<&str, i64>,
) {
    for id in accepted.keys() {
        eventually(Duration::from_secs(30), "the order to be final", || async {
            let v = p.order(id).await;
            v["status"] == "notified" || v["status"] == "rejected"
        })
        .await;
    }
    let mut reserved: HashMap<String, i64> = HashMap::new();
    for (id, payloads) in accepted {
        let v = p.order(id).await;
        let record = (
            v["sku"].as_str().unwrap().to_owned(),
            v["qty"].as_u64().unwrap() as u32,
        );
        for (sku, qty) in payloads {
            assert_eq!(
                (sku.to_string(), *qty),
                record,
                "{id}: a 202 was given for a payload the record does not hold"
            );
        }
        if v["status"] == "notified" {
            *reserved.entry(record.0.clone()).or_default() += i64::from(record.1);
            let calls: Vec<_> = rx
                .calls()
                .into_iter()
                .filter(|c| c.body["order_id"] == id.as_str() && c.answered == 200)
                .collect();
            assert_eq!(calls.len(), 1, "{id}: one notification");
            assert_eq!(
                calls[0].body["sku"],
                record.0.as_str(),
                "{id}: notification sku"
            );
            assert_eq!(calls[0].body["qty"], record.1, "{id}: notification qty");
        }
    }
    for (sku, start) in initial {
        let now = w.stock(sku).await.unwrap();
        assert_eq!(
            start - now,
            reserved.get(*sku).copied().unwrap_or(0),
            "stock of {sku} moved by exactly the reserved records' qty"
        );
    }
}

#[tokio::test]
async fn ten_concurrent_pairs_of_one_id_with_two_payloads_tell_one_story() {
    let mut w = World::new().await;
    let initial = HashMap::from([("ra", 1000), ("rb", 1000)]);
    for (sku, n) in &initial {
        w.set_stock(sku, *n).await;
    }
    let rx = Receiver::start().await;
    let p = Pipeline::start(&w, &rx).await;
    let mut requests = Vec::new();
    for n in 0..10 {
        requests.push((format!("r{n}"), ("ra", 1), Some(format!("ka{n}"))));
        requests.push((format!("r{n}"), ("rb", 9), Some(format!("kb{n}"))));
    }
    let accepted = fire(&p, &requests).await;
    for n in 0..10 {
        let got = accepted.get(&format!("r{n}")).map_or(0, Vec::len);
        assert_eq!(got, 1, "r{n}: exactly one of the pair is accepted");
    }
    assert_one_story(&mut w, &p, &rx, &accepted, &initial).await;
    p.stop().await;
    w.finish().await;
}

/// Property: over random interleavings of requests that share ids (random
/// payloads, random keys, some reused, some absent), every accepted id tells
/// one story. Each case is a burst of 16 requests on ids, keys and SKUs of its
/// own, checked when it has settled. `PROPTEST_CASES` sets the number of
/// cases (8 by default) and `PROPTEST_RNG_SEED` the seed; a failing case is
/// shrunk, printed and kept under `notifier/proptest-regressions/` to be
/// replayed first.
#[test]
fn random_interleavings_of_shared_ids_and_keys_tell_one_story() {
    use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (w, rx, p) = rt.block_on(async {
        let w = World::new().await;
        let rx = Receiver::start().await;
        let p = Pipeline::start(&w, &rx).await;
        (w, rx, p)
    });
    let w = tokio::sync::Mutex::new(w);
    let case = std::cell::Cell::new(0u32);
    let request = (
        0..4usize,
        0..4usize,
        proptest::option::weighted(0.67, 0..6usize),
    );
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(8),
        max_shrink_iters: 32,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    let verdict = runner.run(&proptest::collection::vec(request, 16), |requests| {
        let n = case.get();
        case.set(n + 1);
        rt.block_on(async {
            let mut w = w.lock().await;
            // This case's own SKUs, so its stock check sees only it.
            let sku = |name: &str| -> &'static str { format!("{name}-{n}").leak() };
            let (pa, pb) = (sku("pa"), sku("pb"));
            let initial = HashMap::from([(pa, 10_000), (pb, 10_000)]);
            for (sku, units) in &initial {
                w.set_stock(sku, *units).await;
            }
            let payloads: [Payload; 4] = [(pa, 1), (pa, 2), (pb, 1), (pb, 7)];
            let requests: Vec<_> = requests
                .iter()
                .map(|(id, payload, key)| {
                    (
                        format!("p{n}-{id}"),
                        payloads[*payload],
                        key.map(|k| format!("k{n}-{k}")),
                    )
                })
                .collect();
            let accepted = fire(&p, &requests).await;
            assert!(!accepted.is_empty(), "every id is open: some are accepted");
            assert_one_story(&mut w, &p, &rx, &accepted, &initial).await;
        });
        Ok(())
    });
    rt.block_on(async {
        p.stop().await;
        w.into_inner().finish().await;
    });
    if let Err(e) = verdict {
        panic!("{e}\n{runner}");
    }
}
