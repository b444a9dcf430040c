//! The one Redis step of processing an order: `reserve.lua`.

use std::sync::LazyLock;

use deadpool_redis::Pool;
use pipeline::keys::Keys;
use pipeline::messages::{OrderPlaced, Outcome, RejectReason, now_ms};
use redis::Script;

static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("reserve.lua")));

/// The recorded decision for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: Option<RejectReason>,
    pub decided_at_ms: u64,
    /// `false` when the order had been decided before (a redelivery).
    pub fresh: bool,
}

/// Decides `order` once; a repeated call returns the first decision.
pub async fn reserve(pool: &Pool, keys: &Keys, order: &OrderPlaced) -> anyhow::Result<Decision> {
    let mut conn = pool.get().await?;
    let reply: (String, String, String, u8) = RESERVE
        .key(keys.order(&order.id))
        .key(keys.inventory(&order.sku))
        .key(keys.counters())
        .arg(order.sku.as_str())
        .arg(order.qty.get())
        .arg(now_ms())
        .invoke_async(&mut *conn)
        .await?;
    parse_reply(reply)
}

fn parse_reply(
    (outcome, reason, at, fresh): (String, String, String, u8),
) -> anyhow::Result<Decision> {
    let outcome = match outcome.as_str() {
        "reserved" => Outcome::Reserved,
        "rejected" => Outcome::Rejected,
        other => anyhow::bail!("reserve.lua returned an unknown outcome {other:?}"),
    };
    let reason = match reason.as_str() {
        "" => None,
        r => Some(RejectReason::parse(r).ok_or_else(|| anyhow::anyhow!("unknown reason {r:?}"))?),
    };
    Ok(Decision {
        outcome,
        reason,
        decided_at_ms: at.parse().unwrap_or(0),
        fresh: fresh == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(o: &str, r: &str, fresh: u8) -> (String, String, String, u8) {
        (o.into(), r.into(), "42".into(), fresh)
    }

    #[test]
    fn replies_map_to_decisions() {
        let d = parse_reply(reply("reserved", "", 1)).unwrap();
        assert_eq!(
            (d.outcome, d.reason, d.decided_at_ms, d.fresh),
            (Outcome::Reserved, None, 42, true)
        );
        let d = parse_reply(reply("rejected", "out_of_stock", 0)).unwrap();
        assert_eq!(
            (d.outcome, d.reason, d.fresh),
            (Outcome::Rejected, Some(RejectReason::OutOfStock), false)
        );
        assert!(parse_reply(reply("lost", "", 1)).is_err());
        assert!(parse_reply(reply("rejected", "bored", 1)).is_err());
    }
}
