//! Turning stream messages into history rows, and applying a batch of them in
//! one transaction with the checkpoint.
//!
//! The pure half ([`parse`], [`fold`]) is unit-tested without a database: an
//! event is read from its routing key and body, and a batch's events fold into
//! one change per order whose status only moves forward.

use std::collections::BTreeMap;

use pipeline::domain::OrderId;
use pipeline::messages::{
    EventKind, OrderEvent, OrderNotified, OrderParked, OrderPlaced, RejectReason,
};
use pipeline::order::OrderStatus;
use tokio_postgres::Client;

/// One message as it came off `orders.events`.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub offset: i64,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub traceparent: Option<String>,
    pub body: Vec<u8>,
}

/// One order event, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub order_id: OrderId,
    pub kind: EventKind,
    pub offset: i64,
    pub at_ms: i64,
    pub sku: String,
    pub qty: i32,
    pub reason: Option<String>,
    pub trace_id: Option<String>,
    pub body: String,
}

/// A message that is no order event, kept with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub offset: i64,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub body: String,
    pub error: String,
}

/// The status an event moves its order to.
pub fn status_of(kind: EventKind) -> OrderStatus {
    match kind {
        EventKind::Placed => OrderStatus::Accepted,
        EventKind::Created => OrderStatus::Reserved,
        EventKind::Rejected => OrderStatus::Rejected,
        EventKind::Parked => OrderStatus::Parked,
        EventKind::Notified => OrderStatus::Notified,
    }
}

/// PostgreSQL text holds no NUL: replaced, so that a hostile message is kept
/// rather than stalling the batch it came in.
fn storable(raw: &str) -> String {
    raw.replace('\0', "\u{fffd}")
}

/// Reads one message; anything that is not an order event is [`Unreadable`].
pub fn parse(msg: &Incoming) -> Result<Event, Unreadable> {
    let unreadable = |error: String| Unreadable {
        offset: msg.offset,
        routing_key: storable(&msg.routing_key),
        message_id: msg.message_id.as_deref().map(storable),
        body: storable(&String::from_utf8_lossy(&msg.body)),
        error: storable(&error),
    };
    // jsonb refuses \u0000 in a string, which serde accepts.
    if msg
        .body
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
        || msg.body.contains(&0)
    {
        return Err(unreadable("a NUL character in the body".into()));
    }
    let kind = EventKind::from_route(&msg.routing_key)
        .ok_or_else(|| unreadable(format!("unknown routing key {:?}", msg.routing_key)))?;
    let bad = |e: serde_json::Error| unreadable(format!("{} body: {e}", kind.as_str()));
    let (id, sku, qty, at_ms, reason) = match kind {
        EventKind::Placed => {
            let m: OrderPlaced = serde_json::from_slice(&msg.body).map_err(bad)?;
            (m.id, m.sku, m.qty, m.placed_at_ms, None)
        }
        EventKind::Created | EventKind::Rejected => {
            let m: OrderEvent = serde_json::from_slice(&msg.body).map_err(bad)?;
            if m.outcome.kind() != kind {
                return Err(unreadable(format!(
                    "outcome {} sent as {}",
                    m.outcome.as_str(),
                    msg.routing_key
                )));
            }
            let reason = m.reason.map(RejectReason::as_str).map(str::to_owned);
            (m.id, m.sku, m.qty, m.decided_at_ms, reason)
        }
        EventKind::Parked => {
            let m: OrderParked = serde_json::from_slice(&msg.body).map_err(bad)?;
            (m.id, m.sku, m.qty, m.parked_at_ms, Some(m.reason))
        }
        EventKind::Notified => {
            let m: OrderNotified = serde_json::from_slice(&msg.body).map_err(bad)?;
            (m.id, m.sku, m.qty, m.notified_at_ms, None)
        }
    };
    let trace_id = msg
        .traceparent
        .as_deref()
        .and_then(pipeline::trace::TraceParent::parse)
        .map(|t| t.trace_id().to_string());
    Ok(Event {
        event_id: kind.event_id(&id),
        order_id: id,
        kind,
        offset: msg.offset,
        at_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
        sku: sku.to_string(),
        qty: i32::try_from(qty.get()).unwrap_or(i32::MAX),
        reason,
        trace_id,
        body: String::from_utf8_lossy(&msg.body).into_owned(),
    })
}

/// What a batch's new events do to one order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderChange {
    pub id: String,
    pub sku: String,
    pub qty: i32,
    pub status: OrderStatus,
    pub reason: Option<String>,
    /// stage -> ms (the `timestamps_ms` of the order's view).
    pub timestamps: BTreeMap<&'static str, i64>,
    pub placed_at_ms: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// One change per order: the highest-ranked status among its events (its
/// reason with it), every stage's time, the first and last offsets. The
/// first event's sku and qty name the order.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<OrderChange> {
    let mut changes: BTreeMap<&str, OrderChange> = BTreeMap::new();
    for e in events {
        let status = status_of(e.kind);
        let change = changes
            .entry(e.order_id.as_str())
            .or_insert_with(|| OrderChange {
                id: e.order_id.to_string(),
                sku: e.sku.clone(),
                qty: e.qty,
                status,
                reason: e.reason.clone(),
                timestamps: BTreeMap::new(),
                placed_at_ms: e.at_ms,
                first_offset: e.offset,
                last_offset: e.offset,
            });
        if status.rank() > change.status.rank() {
            change.status = status;
            change.reason = e.reason.clone();
        }
        change.timestamps.insert(status.as_str(), e.at_ms);
        if e.kind == EventKind::Placed || e.offset < change.first_offset {
            change.placed_at_ms = if e.kind == EventKind::Placed {
                e.at_ms
            } else {
                change.placed_at_ms.min(e.at_ms)
            };
        }
        change.first_offset = change.first_offset.min(e.offset);
        change.last_offset = change.last_offset.max(e.offset);
    }
    changes.into_values().collect()
}

/// What one applied batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Events stored (new).
    pub inserted: usize,
    /// Events already stored (redeliveries, republished copies).
    pub duplicates: usize,
    pub unreadable: usize,
    /// Orders this batch shows final (whether or not its events were new).
    pub finished: Vec<OrderId>,
}

/// Stores a batch in one transaction: the new events, their orders (status
/// forward only), the unreadable messages, and `checkpoint` = the batch's
/// last offset. Either all of it is committed or none.
#[tracing::instrument(name = "apply", skip_all, fields(stream = %stream, batch = batch.len()))]
pub async fn apply(
    client: &mut Client,
    stream: &str,
    batch: &[Incoming],
) -> anyhow::Result<Applied> {
    let Some(last) = batch.iter().map(|m| m.offset).max() else {
        return Ok(Applied::default());
    };
    let mut events = Vec::with_capacity(batch.len());
    let mut unreadable = Vec::new();
    for msg in batch {
        match parse(msg) {
            Ok(e) => events.push(e),
            Err(u) => unreadable.push(u),
        }
    }
    let tx = client.transaction().await?;

    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let orders: Vec<&str> = events.iter().map(|e| e.order_id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let offsets: Vec<i64> = events.iter().map(|e| e.offset).collect();
    let ats: Vec<i64> = events.iter().map(|e| e.at_ms).collect();
    let reasons: Vec<Option<&str>> = events.iter().map(|e| e.reason.as_deref()).collect();
    let traces: Vec<Option<&str>> = events.iter().map(|e| e.trace_id.as_deref()).collect();
    let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
    let inserted = tx
        .query(
            "INSERT INTO events (event_id, order_id, kind, stream_offset, at_ms, reason, trace_id, body)
             SELECT e, o, k, s, a, r, t, b::jsonb
               FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                           $6::text[], $7::text[], $8::text[]) AS u(e, o, k, s, a, r, t, b)
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
            &[&ids, &orders, &kinds, &offsets, &ats, &reasons, &traces, &bodies],
        )
        .await?;
    let new: std::collections::HashSet<String> =
        inserted.iter().map(|row| row.get::<_, String>(0)).collect();
    // Only new events move an order: a redelivered batch changes nothing.
    let fresh: Vec<&Event> = events
        .iter()
        .filter(|e| new.contains(&e.event_id))
        .collect();
    let changes = fold(fresh.iter().copied());
    if !changes.is_empty() {
        let ids: Vec<&str> = changes.iter().map(|c| c.id.as_str()).collect();
        let skus: Vec<&str> = changes.iter().map(|c| c.sku.as_str()).collect();
        let qtys: Vec<i32> = changes.iter().map(|c| c.qty).collect();
        let statuses: Vec<&str> = changes.iter().map(|c| c.status.as_str()).collect();
        let ranks: Vec<i16> = changes.iter().map(|c| i16::from(c.status.rank())).collect();
        let reasons: Vec<Option<&str>> = changes.iter().map(|c| c.reason.as_deref()).collect();
        let stamps: Vec<String> = changes
            .iter()
            .map(|c| serde_json::to_string(&c.timestamps).expect("a map of numbers serializes"))
            .collect();
        let placed: Vec<i64> = changes.iter().map(|c| c.placed_at_ms).collect();
        let firsts: Vec<i64> = changes.iter().map(|c| c.first_offset).collect();
        let lasts: Vec<i64> = changes.iter().map(|c| c.last_offset).collect();
        tx.execute(
            "INSERT INTO orders AS o (id, sku, qty, status, status_rank, reason, timestamps,
                                      placed_at, first_offset, updated_offset)
             SELECT i, s, q, st, r, re, ts::jsonb, to_timestamp(p / 1000.0), f, l
               FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int2[],
                           $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[])
                    AS u(i, s, q, st, r, re, ts, p, f, l)
             ON CONFLICT (id) DO UPDATE SET
               status = CASE WHEN EXCLUDED.status_rank > o.status_rank
                             THEN EXCLUDED.status ELSE o.status END,
               reason = CASE WHEN EXCLUDED.status_rank > o.status_rank
                             THEN EXCLUDED.reason ELSE o.reason END,
               status_rank = GREATEST(o.status_rank, EXCLUDED.status_rank),
               timestamps = EXCLUDED.timestamps || o.timestamps,
               placed_at = LEAST(o.placed_at, EXCLUDED.placed_at),
               first_offset = LEAST(o.first_offset, EXCLUDED.first_offset),
               updated_offset = GREATEST(o.updated_offset, EXCLUDED.updated_offset),
               updated_at = now()",
            &[
                &ids, &skus, &qtys, &statuses, &ranks, &reasons, &stamps, &placed, &firsts, &lasts,
            ],
        )
        .await?;
    }
    for u in &unreadable {
        tx.execute(
            "INSERT INTO unreadable_events (stream_offset, routing_key, message_id, body, error)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_offset) DO NOTHING",
            &[&u.offset, &u.routing_key, &u.message_id, &u.body, &u.error],
        )
        .await?;
        tracing::warn!(offset = u.offset, routing_key = %u.routing_key, error = %u.error, "kept an unreadable message in unreadable_events");
    }
    tx.execute(
        "INSERT INTO checkpoint (stream, stream_offset) VALUES ($1, $2)
         ON CONFLICT (stream) DO UPDATE
           SET stream_offset = GREATEST(checkpoint.stream_offset, EXCLUDED.stream_offset),
               updated_at = now()",
        &[&stream, &last],
    )
    .await?;
    tx.commit().await?;
    // Every order the batch shows final, duplicates included: a batch
    // redelivered after a crash before its retire call retires them then.
    let finished = fold(&events)
        .iter()
        .filter(|c| c.status.is_final())
        .filter_map(|c| OrderId::parse_qualified(&c.id).ok())
        .collect();
    Ok(Applied {
        inserted: fresh.len(),
        duplicates: events.len() - fresh.len(),
        unreadable: unreadable.len(),
        finished,
    })
}

/// The offset the history has applied up to, `None` on an empty history.
pub async fn checkpoint(client: &Client, stream: &str) -> anyhow::Result<Option<i64>> {
    Ok(client
        .query_opt(
            "SELECT stream_offset FROM checkpoint WHERE stream = $1",
            &[&stream],
        )
        .await?
        .map(|row| row.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: i64, route: &str, body: &str) -> Incoming {
        Incoming {
            offset,
            routing_key: route.into(),
            message_id: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            body: body.as_bytes().to_vec(),
        }
    }

    fn placed(offset: i64, id: &str) -> Incoming {
        msg(
            offset,
            "order.new",
            &format!(r#"{{"id":"{id}","sku":"s","qty":2,"placed_at_ms":100}}"#),
        )
    }

    fn decided(offset: i64, id: &str, outcome: &str, reason: Option<&str>) -> Incoming {
        let reason = reason
            .map(|r| format!(r#","reason":"{r}""#))
            .unwrap_or_default();
        let route = if outcome == "reserved" {
            "order.created"
        } else {
            "order.rejected"
        };
        msg(
            offset,
            route,
            &format!(
                r#"{{"id":"{id}","sku":"s","qty":2,"outcome":"{outcome}"{reason},"decided_at_ms":200}}"#
            ),
        )
    }

    fn notified(offset: i64, id: &str) -> Incoming {
        msg(
            offset,
            "order.notified",
            &format!(r#"{{"id":"{id}","sku":"s","qty":2,"channel":"log","notified_at_ms":300}}"#),
        )
    }

    #[test]
    fn every_event_kind_is_read_with_its_id_time_reason_and_trace() {
        let e = parse(&decided(7, "o1", "rejected", Some("out_of_stock"))).unwrap();
        assert_eq!(e.event_id, "o1:rejected");
        assert_eq!((e.kind, e.offset, e.at_ms), (EventKind::Rejected, 7, 200));
        assert_eq!(e.reason.as_deref(), Some("out_of_stock"));
        assert_eq!(
            e.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(parse(&placed(1, "o1")).unwrap().event_id, "o1:placed");
        assert_eq!(parse(&notified(2, "o1")).unwrap().at_ms, 300);
        let parked = msg(
            3,
            "order.parked",
            r#"{"id":"o1","sku":"s","qty":2,"reason":"invalid_stock","parked_at_ms":150}"#,
        );
        assert_eq!(
            parse(&parked).unwrap().reason.as_deref(),
            Some("invalid_stock")
        );
    }

    #[test]
    fn foreign_and_broken_messages_are_unreadable_not_dropped() {
        let u = parse(&msg(5, "order.shipped", "{}")).unwrap_err();
        assert!(u.error.contains("order.shipped"), "{}", u.error);
        assert_eq!(u.offset, 5);
        let u = parse(&msg(6, "order.notified", "not json")).unwrap_err();
        assert!(u.error.contains("notified body"), "{}", u.error);
        // A reservation published under the rejection route.
        assert!(
            parse(&{
                let mut m = decided(8, "o1", "reserved", None);
                m.routing_key = "order.rejected".into();
                m
            })
            .is_err()
        );
    }

    #[test]
    fn a_nul_anywhere_makes_a_message_unreadable_and_storable() {
        let u = parse(&msg(9, "order.notified", r#"{"id":"o\u0000","sku":"s"}"#)).unwrap_err();
        assert!(u.error.contains("NUL"), "{}", u.error);
        let mut raw = msg(10, "order.shipped", "x");
        raw.body = b"a\0b".to_vec();
        let u = parse(&raw).unwrap_err();
        assert!(!u.body.contains('\0'));
    }

    #[test]
    fn a_batch_folds_into_one_forward_change_per_order() {
        let events: Vec<Event> = [
            placed(1, "a"),
            placed(2, "b"),
            notified(5, "a"),
            decided(3, "a", "reserved", None),
            decided(4, "b", "rejected", Some("unknown_sku")),
        ]
        .iter()
        .map(|m| parse(m).unwrap())
        .collect();
        let changes = fold(&events);
        assert_eq!(changes.len(), 2);
        let a = &changes[0];
        assert_eq!((a.id.as_str(), a.status), ("a", OrderStatus::Notified));
        assert_eq!((a.first_offset, a.last_offset, a.placed_at_ms), (1, 5, 100));
        assert_eq!(
            a.timestamps.keys().copied().collect::<Vec<_>>(),
            ["accepted", "notified", "reserved"]
        );
        let b = &changes[1];
        assert_eq!(b.status, OrderStatus::Rejected);
        assert_eq!(b.reason.as_deref(), Some("unknown_sku"));
    }

    #[test]
    fn a_parked_order_loses_its_park_reason_once_decided() {
        let parked = msg(
            2,
            "order.parked",
            r#"{"id":"p","sku":"s","qty":2,"reason":"invalid_stock","parked_at_ms":150}"#,
        );
        let events: Vec<Event> = [placed(1, "p"), parked, decided(3, "p", "reserved", None)]
            .iter()
            .map(|m| parse(m).unwrap())
            .collect();
        let change = &fold(&events)[0];
        assert_eq!(change.status, OrderStatus::Reserved);
        assert_eq!(change.reason, None);
        assert_eq!(
            fold(&events[..2])[0].reason.as_deref(),
            Some("invalid_stock")
        );
    }
}
