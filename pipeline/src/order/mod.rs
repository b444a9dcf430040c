//! The order record, with one owner: `order:<id>`'s statuses and their
//! forward-only order, the pipeline counters, and every Redis script that
//! touches an order, each behind a typed wrapper.
//!
//! ```text
//!              intake.lua            accept.lua             reserve.lua                     notified.lua
//!  (none) ──────────────> claimed ─────────────> accepted ──┬──────────> reserved ───────────────> notified
//!   sku, qty bound         (lease)                          ├──────────> rejected (reason)
//!   to the id forever                                       └──────────> parked (invalid_stock) ──> reserved | rejected
//!                                                                          after the operator's fix + replay
//! ```
//!
//! An id names one order forever: the first claim binds it to its sku and qty,
//! and every later stage reads them from the record (never from a message), so
//! the record, the stock change, the events and the notification always tell
//! the same story. The scripts share one Lua prelude (`status.lua`) with the
//! status ranks; a unit test keeps it equal to [`OrderStatus::rank`].

pub mod intake;

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::domain::{OrderId, Quantity, Sku};
use crate::keys::Keys;
use crate::messages::{Outcome, RejectReason};
use crate::store::Redis;

pub use intake::{Claim, Intake, IntakeRequest, Lifetimes, StoredResponse};

/// Where an order is. Statuses only ever move forward ([`OrderStatus::rank`]).
/// In JSON it is [`OrderStatus::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// The broker confirmed it; not decided yet.
    Accepted,
    /// Cannot be decided until an operator fixes its data (`invalid_stock`);
    /// its message waits in `orders.dlq` for `replay-dlq`.
    Parked,
    /// Stock reserved; `order.created` published.
    Reserved,
    /// Not reserved (`out_of_stock`, `unknown_sku`); `order.rejected` published.
    Rejected,
    /// The customer was told.
    Notified,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::Accepted,
        Self::Parked,
        Self::Reserved,
        Self::Rejected,
        Self::Notified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Parked => "parked",
            Self::Reserved => "reserved",
            Self::Rejected => "rejected",
            Self::Notified => "notified",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// A status may only be replaced by one of a higher rank.
    pub fn rank(self) -> u8 {
        match self {
            Self::Accepted => 1,
            Self::Parked => 2,
            Self::Reserved | Self::Rejected => 3,
            Self::Notified => 4,
        }
    }

    /// Whether the order has reached the end of its path (a rejected or
    /// notified order changes no more).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Notified)
    }
}

/// Fields of the `counters` hash, written by the scripts of this module and
/// the notifier's claim script, read by the dashboard, tests and load tool.
pub mod counter {
    /// Distinct orders accepted (by the gateway, or first seen by the processor).
    pub const ACCEPTED: &str = "accepted";
    pub const RESERVED: &str = "reserved";
    pub const REJECTED: &str = "rejected";
    pub const REJECTED_OUT_OF_STOCK: &str = "rejected_out_of_stock";
    pub const REJECTED_UNKNOWN_SKU: &str = "rejected_unknown_sku";
    /// Orders parked right now (status `parked`).
    pub const PARKED: &str = "parked";
    /// Messages that disagreed with their order's record (parked, never merged).
    pub const ANOMALIES: &str = "anomalies";
    pub const NOTIFIED: &str = "notified";
    pub const NOTIFICATIONS_SENDING: &str = "notifications_sending";
    pub const NOTIFICATIONS_FAILED: &str = "notifications_failed";

    /// The counter of rejections for `reason`.
    pub fn rejected_for(reason: super::RejectReason) -> &'static str {
        match reason {
            super::RejectReason::OutOfStock => REJECTED_OUT_OF_STOCK,
            super::RejectReason::UnknownSku => REJECTED_UNKNOWN_SKU,
        }
    }
}

/// Why an order or a message was parked instead of decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// `inventory:<sku>` holds something that is not an integer.
    InvalidStock,
    /// The message names another sku or qty than the order's record.
    RecordMismatch,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidStock => "invalid_stock",
            Self::RecordMismatch => "record_mismatch",
        }
    }
}

/// How many ids `recent_orders` keeps.
pub const RECENT_ORDERS: usize = 100;

fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("status.lua")))
}

static INTAKE: LazyLock<Script> = LazyLock::new(|| script(include_str!("intake.lua")));
static ACCEPT: LazyLock<Script> = LazyLock::new(|| script(include_str!("accept.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| script(include_str!("release.lua")));
static RESERVE: LazyLock<Script> =
    LazyLock::new(|| batched(include_str!("reserve.lua"), RESERVE_KEYS, RESERVE_ARGS));
/// `reserve.lua`'s KEYS and ARGV per order.
const RESERVE_KEYS: usize = 5;
const RESERVE_ARGS: usize = 12;

/// A script that runs `body` once per call over consecutive slices of KEYS
/// (`keys` each) and ARGV (`args` each) and returns the list of their
/// replies: many orders in one round trip and one script run. The body sees
/// its own slice as `KEYS`/`ARGV`, exactly as when run alone. Calls run one
/// after another inside the one atomic script; an error in one aborts the
/// rest (what earlier calls wrote stays, as with any Redis script), so a
/// caller that gets an error retries each call alone, which every script
/// here recognises as a retry.
pub fn batched(body: &str, keys: usize, args: usize) -> Script {
    script(&format!(
        "local function one(KEYS, ARGV)\n{body}\nend\n\
         local out = {{}}\n\
         for i = 0, #KEYS / {keys} - 1 do\n\
           local k, a = {{}}, {{}}\n\
           for j = 1, {keys} do k[j] = KEYS[i * {keys} + j] end\n\
           for j = 1, {args} do a[j] = ARGV[i * {args} + j] end\n\
           out[i + 1] = one(k, a)\n\
         end\n\
         return out\n"
    ))
}
static NOTIFIED: LazyLock<Script> = LazyLock::new(|| batched(include_str!("notified.lua"), 3, 5));
/// `claim_notification.lua`, many claims per script run.
static CLAIM_NOTIFICATION: LazyLock<Script> =
    LazyLock::new(|| batched(include_str!("claim_notification.lua"), 3, 5));
static RETIRE: LazyLock<Script> = LazyLock::new(|| script(include_str!("retire.lua")));

/// Size of the filter of retired order ids (`retired_ids`), in bits: 8 MiB,
/// which keeps false positives (an unused id that must be looked up in the
/// history once) near 1 % up to about 6 million retired orders, and its
/// memory fixed however many orders flow.
pub const RETIRED_FILTER_BITS: u64 = 1 << 26;

/// Lets the Redis records of `ids` expire after `retention`, for those whose
/// record says they are finished (see `retire.lua`); the history calls it once
/// it holds them. Returns how many were set to expire.
pub async fn retire(
    pool: &Redis,
    keys: &Keys,
    ids: &[OrderId],
    retention: Duration,
) -> anyhow::Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut script = RETIRE.prepare_invoke();
    script.key(keys.retired_ids());
    for id in ids {
        script.key(keys.order(id)).key(keys.notification(id));
    }
    script
        .arg(retention.as_secs().max(1))
        .arg(RETIRED_FILTER_BITS);
    for id in ids {
        script.arg(id.as_str());
    }
    let mut conn = pool.connection();
    let retired: usize = script.invoke_async(&mut conn).await?;
    Ok(retired)
}

/// What [`reserve`] did with an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Decided (now, or before: `fresh` says which). `sku` and `qty` are the
    /// record's: the event is built from them.
    Decided {
        outcome: Outcome,
        reason: Option<RejectReason>,
        decided_at_ms: u64,
        fresh: bool,
        sku: Sku,
        qty: Quantity,
    },
    /// Not decided: the message must be parked in the DLQ. `sku` and `qty`
    /// are the record's.
    Parked {
        reason: ParkReason,
        at_ms: u64,
        sku: Sku,
        qty: Quantity,
    },
    /// There is no record of the order and `adopt` was not given: either its
    /// record expired after the order was finished and kept in the history
    /// (a very late redelivery or replay: ask the history), or it was
    /// published around the gateway (then call again with `adopt`).
    Unrecorded,
}

/// One order to decide, for [`reserve_many`]: what its message says.
#[derive(Debug, Clone, Copy)]
pub struct ReserveCall<'a> {
    pub id: &'a OrderId,
    pub sku: &'a Sku,
    pub qty: Quantity,
    pub quote: Option<&'a crate::domain::QuoteTerms>,
    pub message_id: &'a str,
}

/// The units of an `inventory:<sku>` value as Redis counts them (what
/// `DECRBY` accepts: canonical digits within 64 bits), or `None` for a value
/// whose orders `reserve.lua` parks as `invalid_stock` (`abc`, `10.5`, `007`,
/// `+5`, anything past `9223372036854775807`).
pub fn stock_units(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|n| n.to_string() == raw)
}

/// Decides the order `id` once, from its record (see `reserve.lua`).
/// `sku`/`qty` are what the message says; they must match the record. With
/// `adopt`, an order without a record takes the message's values as its record
/// (only once the history said it has never seen the order). A quote-backed
/// order's `quote` must match the record's too, and is adopted with it.
#[allow(clippy::too_many_arguments)]
pub async fn reserve(
    pool: &Redis,
    keys: &Keys,
    id: &OrderId,
    sku: &Sku,
    qty: Quantity,
    quote: Option<&crate::domain::QuoteTerms>,
    message_id: &str,
    adopt: bool,
) -> anyhow::Result<Verdict> {
    let call = ReserveCall {
        id,
        sku,
        qty,
        quote,
        message_id,
    };
    reserve_many(pool, keys, &[call], adopt)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("reserve.lua returned no verdict"))
}

/// [`reserve`] for many orders in one script run (one round trip): their
/// verdicts, in order. On an error none of the verdicts is known (some orders
/// may have been decided): decide each again alone.
pub async fn reserve_many(
    pool: &Redis,
    keys: &Keys,
    calls: &[ReserveCall<'_>],
    adopt: bool,
) -> anyhow::Result<Vec<Verdict>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = RESERVE.prepare_invoke();
    for call in calls {
        let terms: [String; 6] = match call.quote {
            Some(q) => [
                q.quote_id.as_str().to_owned(),
                q.supplier.as_str().to_owned(),
                q.unit_price_minor.to_string(),
                q.total_minor.to_string(),
                q.currency.as_str().to_owned(),
                q.delivery_days.to_string(),
            ],
            None => Default::default(),
        };
        invocation
            .key(keys.order(call.id))
            .key(keys.inventory(call.sku))
            .key(keys.counters())
            .key(keys.recent_orders())
            .key(keys.anomalies())
            .arg(call.sku.as_str())
            .arg(call.qty.get())
            .arg(call.message_id)
            .arg(RECENT_ORDERS)
            .arg(call.id.as_str())
            .arg(if adopt { "1" } else { "0" })
            .arg(&terms);
    }
    let mut conn = pool.connection();
    let replies: Vec<(String, String, String, u8, String, String)> =
        invocation.invoke_async(&mut conn).await?;
    if replies.len() != calls.len() {
        anyhow::bail!(
            "reserve.lua answered {} of {} orders",
            replies.len(),
            calls.len()
        );
    }
    replies.into_iter().map(parse_verdict).collect()
}

fn parse_verdict(
    (outcome, reason, at, fresh, sku, qty): (String, String, String, u8, String, String),
) -> anyhow::Result<Verdict> {
    let qty: u32 = qty
        .parse()
        .map_err(|_| anyhow::anyhow!("order record holds qty {qty:?}"))?;
    let sku = Sku::parse(&sku).map_err(|e| anyhow::anyhow!("order record holds {e}"))?;
    let qty = Quantity::try_from(qty).map_err(|e| anyhow::anyhow!("order record holds {e}"))?;
    let at_ms = at.parse().unwrap_or(0);
    let parked = |reason| Verdict::Parked {
        reason,
        at_ms,
        sku: sku.clone(),
        qty,
    };
    let outcome = match outcome.as_str() {
        "reserved" => Outcome::Reserved,
        "rejected" => Outcome::Rejected,
        "parked" => return Ok(parked(ParkReason::InvalidStock)),
        "mismatch" => return Ok(parked(ParkReason::RecordMismatch)),
        "unrecorded" => return Ok(Verdict::Unrecorded),
        other => anyhow::bail!("reserve.lua returned an unknown outcome {other:?}"),
    };
    let reason = match reason.as_str() {
        "" => None,
        r => Some(RejectReason::parse(r).ok_or_else(|| anyhow::anyhow!("unknown reason {r:?}"))?),
    };
    Ok(Verdict::Decided {
        outcome,
        reason,
        decided_at_ms: at_ms,
        fresh: fresh == 1,
        sku,
        qty,
    })
}

/// Where the right to send one order's notification stands (see
/// `claim_notification.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationClaim {
    /// Already sent (when, over which channel): never send it again.
    Sent { at_ms: u64, channel: String },
    /// Another holder's claim is live for this long.
    Busy(Duration),
    /// Ours: send it.
    Claimed,
    /// Neither a notification nor an order record: ask the history.
    Unrecorded,
}

/// One claim to ask for: the order, the claimant's token, the event that
/// asks for the notification and the sink that would send it.
#[derive(Debug, Clone, Copy)]
pub struct ClaimCall<'a> {
    pub id: &'a OrderId,
    pub token: &'a str,
    pub event_id: &'a str,
    pub sink: &'a str,
}

/// Claims each notification for `lifetime` (see `claim_notification.lua`),
/// all in one script run; with `adopt`, an order with no records at all is
/// claimed too (the history has never seen it finished).
pub async fn claim_notifications(
    pool: &Redis,
    keys: &Keys,
    calls: &[ClaimCall<'_>],
    lifetime: Duration,
    adopt: bool,
) -> anyhow::Result<Vec<NotificationClaim>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = CLAIM_NOTIFICATION.prepare_invoke();
    for call in calls {
        invocation
            .key(keys.notification(call.id))
            .key(keys.counters())
            .key(keys.order(call.id))
            .arg(call.token)
            .arg(lifetime.as_millis() as u64)
            .arg(call.event_id)
            .arg(call.sink)
            .arg(if adopt { "1" } else { "0" });
    }
    let mut conn = pool.connection();
    let replies: Vec<Vec<String>> = invocation.invoke_async(&mut conn).await?;
    if replies.len() != calls.len() {
        anyhow::bail!(
            "claim_notification.lua answered {} of {} claims",
            replies.len(),
            calls.len()
        );
    }
    replies.iter().map(|r| parse_claim(r)).collect()
}

fn parse_claim(reply: &[String]) -> anyhow::Result<NotificationClaim> {
    match reply {
        [tag, at, channel] if tag == "sent" => Ok(NotificationClaim::Sent {
            at_ms: at.parse().unwrap_or(0),
            channel: channel.clone(),
        }),
        [tag] if tag == "unrecorded" => Ok(NotificationClaim::Unrecorded),
        [tag] if tag == "claimed" => Ok(NotificationClaim::Claimed),
        [tag, ms] if tag == "busy" => Ok(NotificationClaim::Busy(Duration::from_millis(
            ms.parse().unwrap_or(1000),
        ))),
        other => anyhow::bail!("unexpected claim_notification.lua reply {other:?}"),
    }
}

/// The end of one notification attempt, for [`record_notification`].
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// `true` when the sink took the notification.
    pub sent: bool,
    /// The claim token of the notifier that sent it.
    pub token: &'a str,
    pub attempts: u32,
    pub sink: &'a str,
    /// The last error, `""` if none.
    pub error: &'a str,
}

/// Records a notification attempt (see `notified.lua`); once the
/// notification is recorded as sent (by this call or before), when that was.
pub async fn record_notification(
    pool: &Redis,
    keys: &Keys,
    id: &OrderId,
    attempt: &Attempt<'_>,
) -> anyhow::Result<Option<u64>> {
    record_notifications(pool, keys, &[(id, *attempt)])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("notified.lua returned nothing"))
}

/// [`record_notification`] for many orders in one script run: each one's
/// send time, in order. On an error none is known: record each alone.
pub async fn record_notifications(
    pool: &Redis,
    keys: &Keys,
    attempts: &[(&OrderId, Attempt<'_>)],
) -> anyhow::Result<Vec<Option<u64>>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = NOTIFIED.prepare_invoke();
    for (id, attempt) in attempts {
        invocation
            .key(keys.notification(id))
            .key(keys.order(id))
            .key(keys.counters())
            .arg(if attempt.sent { "sent" } else { "failed" })
            .arg(attempt.token)
            .arg(attempt.attempts)
            .arg(attempt.sink)
            .arg(attempt.error);
    }
    let mut conn = pool.connection();
    let replies: Vec<(u8, String)> = invocation.invoke_async(&mut conn).await?;
    if replies.len() != attempts.len() {
        anyhow::bail!(
            "notified.lua answered {} of {} notifications",
            replies.len(),
            attempts.len()
        );
    }
    Ok(replies
        .into_iter()
        .map(|(_, sent_at)| sent_at.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_is_what_redis_counts_with() {
        for (raw, units) in [
            ("0", Some(0)),
            ("40", Some(40)),
            ("-3", Some(-3)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("007", None),
            ("+5", None),
            ("-0", None),
            ("10.5", None),
            ("abc", None),
            ("", None),
            (" 5", None),
        ] {
            assert_eq!(stock_units(raw), units, "{raw:?}");
        }
    }

    #[test]
    fn lua_ranks_mirror_the_rust_ranks() {
        let prelude = include_str!("status.lua");
        let line = prelude
            .lines()
            .find(|l| l.starts_with("local RANK"))
            .expect("status.lua defines RANK");
        for status in OrderStatus::ALL {
            let entry = format!("{} = {}", status.as_str(), status.rank());
            assert!(line.contains(&entry), "status.lua lacks {entry:?}: {line}");
        }
        assert_eq!(line.matches('=').count(), OrderStatus::ALL.len() + 1);
    }

    #[test]
    fn statuses_round_trip_and_only_move_forward() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert!(OrderStatus::Parked.rank() > OrderStatus::Accepted.rank());
        assert!(OrderStatus::Reserved.rank() > OrderStatus::Parked.rank());
        assert!(OrderStatus::Notified.rank() > OrderStatus::Reserved.rank());
        assert_eq!(OrderStatus::parse("pending"), None);
    }

    fn reply(o: &str, r: &str, fresh: u8) -> (String, String, String, u8, String, String) {
        (
            o.into(),
            r.into(),
            "42".into(),
            fresh,
            "sku-1".into(),
            "3".into(),
        )
    }

    #[test]
    fn replies_map_to_verdicts_built_from_the_record() {
        match parse_verdict(reply("reserved", "", 1)).unwrap() {
            Verdict::Decided {
                outcome,
                reason,
                decided_at_ms,
                fresh,
                sku,
                qty,
            } => {
                assert_eq!(
                    (outcome, reason, decided_at_ms, fresh),
                    (Outcome::Reserved, None, 42, true)
                );
                assert_eq!((sku.as_str(), qty.get()), ("sku-1", 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_verdict(reply("rejected", "out_of_stock", 0)).unwrap(),
            Verdict::Decided {
                reason: Some(RejectReason::OutOfStock),
                fresh: false,
                ..
            }
        ));
        assert!(matches!(
            parse_verdict(reply("parked", "invalid_stock", 1)).unwrap(),
            Verdict::Parked {
                reason: ParkReason::InvalidStock,
                at_ms: 42,
                ..
            }
        ));
        assert!(matches!(
            parse_verdict(reply("mismatch", "record_mismatch", 1)).unwrap(),
            Verdict::Parked {
                reason: ParkReason::RecordMismatch,
                ..
            }
        ));
        assert_eq!(
            parse_verdict(reply("unrecorded", "", 0)).unwrap(),
            Verdict::Unrecorded
        );
        assert!(parse_verdict(reply("lost", "", 1)).is_err());
        assert!(parse_verdict(reply("rejected", "bored", 1)).is_err());
    }
}
