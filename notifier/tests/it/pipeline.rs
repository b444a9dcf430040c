//! The whole pipeline in one process: gateway, processor and notifier.

use std::time::Duration;

use crate::helpers::{Pipeline, Receiver, World, eventually};

#[tokio::test]
async fn a_posted_order_is_reserved_and_then_notified() {
    let mut w = World::new().await;
    w.set_stock("mag-safe-phone-case", 10).await;
    let rx = Receiver::start().await;
    let p = Pipeline::start(&w, &rx).await;
    for _ in 0..3 {
        // A client retrying the same order: one order, one notification.
        let res = p
            .post(
                r#"{"id":"full-1","sku":"mag-safe-phone-case","qty":3}"#,
                None,
            )
            .await;
        assert_eq!(res.status(), 202);
    }
    eventually(
        Duration::from_secs(30),
        "the order to be notified",
        || async { p.order("full-1").await["status"] == "notified" },
    )
    .await;
    let v = p.order("full-1").await;
    for stage in ["accepted", "reserved", "notified"] {
        assert!(v["timestamps_ms"][stage].is_u64(), "{stage} missing: {v}");
    }
    assert_eq!(rx.calls().len(), 1);
    assert_eq!(w.stock("mag-safe-phone-case").await, Some(7));
    for (name, n) in [("accepted", 1), ("reserved", 1), ("notified", 1)] {
        assert_eq!(w.counter(name).await, n, "{name}");
    }

    p.stop().await;
    w.finish().await;
}
