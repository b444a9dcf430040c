//! Supplier quotes: what the gateway asks suppliers, what they answer, and
//! the strategies that turn the answers into a result.
//!
//! Money is integer minor units (`unit_price_minor: 1250` = 12.50) with an
//! ISO 4217 code; it is never a float. A quote's total is `unit × qty`,
//! checked for overflow.
//!
//! The strategies are plain functions over the gathered slots
//! ([`crate::scatter::Slot`]), so they are tested without a broker:
//!
//! | strategy | stops when | answer |
//! |---|---|---|
//! | `all` | every supplier answered, or the deadline | `cheapest`, `fastest`, every quote |
//! | `cheapest` | every supplier asked answered, or `min_responses` in-stock quotes if the client gave it | lowest total price |
//! | `fastest` | `min_responses` in-stock quotes arrived (default 1) | the first in-stock quote |
//! | `quorum` | `min_responses` suppliers quoted the same unit price (default: a majority) | that price, fewest delivery days |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{InvalidField, Quantity, Sku};
use crate::scatter::{CompletedBy, GatherReply, Outcome, Slot};

/// A supplier's id: 1–32 characters of `[a-z0-9-]` (it names a queue and a
/// Redis key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SupplierId(String);

impl SupplierId {
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let field = "supplier";
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidField {
                field,
                reason: format!("must be 1 to {} characters", Self::MAX_LEN),
            });
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidField {
                field,
                reason: format!("character {bad:?} is not allowed; use a-z 0-9 -"),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SupplierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SupplierId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SupplierId> for String {
    fn from(id: SupplierId) -> Self {
        id.0
    }
}

/// Parses `QUOTE_SUPPLIERS`-style lists: comma-separated ids, blanks
/// skipped, duplicates refused.
pub fn parse_suppliers(raw: &str) -> Result<Vec<SupplierId>, String> {
    let mut ids: Vec<SupplierId> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = SupplierId::parse(part).map_err(|e| format!("{part:?}: {}", e.reason))?;
        if ids.contains(&id) {
            return Err(format!("{part:?} is listed twice"));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a currency code (three upper-case letters, such as EUR)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

/// A quote's id: `q-` and 32 hex digits (only the gateway makes them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuoteId(String);

impl QuoteId {
    pub fn generate() -> Self {
        Self(format!("q-{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let ok = raw.len() == 34
            && raw.starts_with("q-")
            && raw[2..].chars().all(|c| c.is_ascii_hexdigit());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidField {
                field: "quote_id",
                reason:
                    "must be a quote id as returned by GET /quotes/{sku} (q- and 32 hex digits)"
                        .into(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QuoteId {
    type Error = InvalidField;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<QuoteId> for String {
    fn from(id: QuoteId) -> Self {
        id.0
    }
}

/// The gateway's `GET /suppliers`: each supplier's circuit and figures as
/// that gateway process sees them (what the dashboard's Suppliers panel
/// shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuppliersReport {
    /// In the gateway's `QUOTE_SUPPLIERS` order.
    pub suppliers: Vec<crate::scatter::DestinationStatus>,
    /// Quote requests waiting for replies now.
    pub pending_requests: u64,
    /// Replies that arrived after their request had finished, so far.
    pub late_replies: u64,
    /// `up` or `down`: whether the gateway's reply consumer runs.
    pub reply_consumer: String,
}

/// What a quote-backed order keeps of its quote: who supplies it and at
/// what price (in its record, its placed event and its views).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteTerms {
    pub quote_id: QuoteId,
    pub supplier: SupplierId,
    pub unit_price_minor: u64,
    pub total_minor: u64,
    pub currency: Currency,
    pub delivery_days: u32,
}

impl QuoteTerms {
    /// Reads the terms from their string fields (an order record, a script
    /// reply), in the order of the struct.
    pub fn from_fields(fields: [&str; 6]) -> Result<Self, String> {
        let [quote_id, supplier, unit, total, currency, days] = fields;
        let number = |name: &str, raw: &str| {
            raw.parse::<u64>()
                .map_err(|_| format!("{name} {raw:?} is not a whole number"))
        };
        Ok(Self {
            quote_id: QuoteId::parse(quote_id).map_err(|e| e.reason)?,
            supplier: SupplierId::parse(supplier).map_err(|e| e.reason)?,
            unit_price_minor: number("unit_price_minor", unit)?,
            total_minor: number("total_minor", total)?,
            currency: Currency::parse(currency)?,
            delivery_days: u32::try_from(number("delivery_days", days)?)
                .map_err(|_| "delivery_days out of range".to_owned())?,
        })
    }
}

/// One SKU of a supplier's catalog: the JSON value of a field of the Redis
/// hash `catalog:<supplier>`, e.g.
/// `{"unit_price_minor":1250,"currency":"EUR","stock":40,"delivery_days":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub unit_price_minor: u64,
    pub currency: Currency,
    pub stock: u64,
    pub delivery_days: u32,
}

/// What the gateway asks every supplier. Unknown fields are ignored, so a
/// newer gateway can add one without older suppliers failing every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub request_id: String,
    pub sku: Sku,
    pub qty: Quantity,
    /// No answer is wanted after this (ms since the Unix epoch).
    pub deadline_ms: u64,
}

/// Why a supplier cannot quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// The SKU is not in its catalog.
    NotCarried,
    /// It carries the SKU but has fewer units than asked for.
    InsufficientStock,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotCarried => "not_carried",
            Self::InsufficientStock => "insufficient_stock",
        }
    }
}

/// A supplier's answer (unknown fields ignored, as for [`QuoteRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum QuoteReply {
    Quoted {
        supplier: SupplierId,
        sku: Sku,
        qty: Quantity,
        unit_price_minor: u64,
        currency: Currency,
        stock: u64,
        delivery_days: u32,
    },
    Unavailable {
        supplier: SupplierId,
        sku: Sku,
        qty: Quantity,
        reason: Unavailable,
        stock: u64,
    },
    Failed {
        supplier: SupplierId,
        error: String,
    },
}

impl GatherReply for QuoteReply {
    fn failure(&self) -> Option<String> {
        match self {
            Self::Failed { error, .. } => Some(format!("supplier error: {error}")),
            _ => None,
        }
    }
}

/// Whether `reply`, from `destination`, answers `request`: another SKU or
/// quantity, another supplier than the one asked, another currency than
/// the gateway's, or a total that overflows is an error, never merged
/// silently. Applied to every reply as it arrives, so the supplier's
/// circuit counts it as the failure it is.
pub fn check_reply(
    destination: &str,
    reply: &QuoteReply,
    request: &QuoteRequest,
    currency: &Currency,
) -> Result<(), String> {
    let (supplier, sku, qty) = match reply {
        QuoteReply::Quoted {
            supplier, sku, qty, ..
        }
        | QuoteReply::Unavailable {
            supplier, sku, qty, ..
        } => (supplier, sku, qty),
        QuoteReply::Failed { .. } => return Ok(()),
    };
    if supplier.as_str() != destination {
        return Err(format!(
            "reply signed by {supplier}, not the supplier asked"
        ));
    }
    if sku != &request.sku || *qty != request.qty {
        return Err(format!(
            "reply for {} x {}, not the request's {} x {}",
            qty.get(),
            sku.as_str(),
            request.qty.get(),
            request.sku.as_str()
        ));
    }
    if let QuoteReply::Quoted {
        unit_price_minor,
        currency: quoted,
        ..
    } = reply
    {
        if quoted != currency {
            return Err(format!(
                "quoted in {}; this gateway compares prices in {}",
                quoted.as_str(),
                currency.as_str()
            ));
        }
        if unit_price_minor.checked_mul(u64::from(qty.get())).is_none() {
            return Err("the quote's total overflows".into());
        }
    }
    Ok(())
}

/// An in-stock quote among the slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub supplier: SupplierId,
    pub unit_price_minor: u64,
    pub total_minor: u64,
    pub currency: Currency,
    pub delivery_days: u32,
    pub stock: u64,
    /// 1 = the first supplier that answered.
    pub arrival: usize,
}

/// Every in-stock quote, cheapest total first (then fewer delivery days,
/// then supplier id: a stable order).
pub fn offers(slots: &[Slot<QuoteReply>]) -> Vec<Offer> {
    let mut offers: Vec<Offer> = slots
        .iter()
        .filter_map(|slot| match &slot.outcome {
            Outcome::Reply(QuoteReply::Quoted {
                supplier,
                qty,
                unit_price_minor,
                currency,
                stock,
                delivery_days,
                ..
            }) => Some(Offer {
                supplier: supplier.clone(),
                unit_price_minor: *unit_price_minor,
                total_minor: unit_price_minor.checked_mul(u64::from(qty.get()))?,
                currency: currency.clone(),
                delivery_days: *delivery_days,
                stock: *stock,
                arrival: slot.arrival.unwrap_or(usize::MAX),
            }),
            _ => None,
        })
        .collect();
    offers.sort_by(|a, b| {
        (a.total_minor, a.delivery_days, &a.supplier).cmp(&(
            b.total_minor,
            b.delivery_days,
            &b.supplier,
        ))
    });
    offers
}

/// Suppliers that answered (a quote or "unavailable"; errors do not count).
pub fn responses(slots: &[Slot<QuoteReply>]) -> usize {
    slots
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Reply(_)))
        .count()
}

/// The lowest total price.
pub fn cheapest(offers: &[Offer]) -> Option<&Offer> {
    offers.first()
}

/// The fewest delivery days, then the lowest price.
pub fn fastest_delivery(offers: &[Offer]) -> Option<&Offer> {
    offers
        .iter()
        .min_by(|a, b| (a.delivery_days, a.total_minor).cmp(&(b.delivery_days, b.total_minor)))
}

/// The first in-stock quote to arrive.
pub fn first_in_stock(offers: &[Offer]) -> Option<&Offer> {
    offers.iter().min_by_key(|o| o.arrival)
}

/// A unit price quoted by at least `k` suppliers (the lowest such price if
/// several are), and among its quotes the fewest delivery days.
pub fn quorum(offers: &[Offer], k: usize) -> Option<&Offer> {
    let mut prices: Vec<u64> = offers.iter().map(|o| o.unit_price_minor).collect();
    prices.sort_unstable();
    prices.dedup();
    let agreed = prices
        .into_iter()
        .find(|p| offers.iter().filter(|o| o.unit_price_minor == *p).count() >= k)?;
    offers
        .iter()
        .filter(|o| o.unit_price_minor == agreed)
        .min_by(|a, b| (a.delivery_days, &a.supplier).cmp(&(b.delivery_days, &b.supplier)))
}

/// How a quote request aggregates the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    All,
    Fastest,
    Cheapest,
    Quorum,
}

impl Strategy {
    pub const NAMES: &'static str = "all, fastest, cheapest, quorum";

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "all" => Some(Self::All),
            "fastest" => Some(Self::Fastest),
            "cheapest" => Some(Self::Cheapest),
            "quorum" => Some(Self::Quorum),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Fastest => "fastest",
            Self::Cheapest => "cheapest",
            Self::Quorum => "quorum",
        }
    }

    /// `min_responses` when the client gives none, with `n` suppliers.
    pub fn default_min_responses(self, n: usize) -> usize {
        match self {
            Self::All | Self::Fastest | Self::Cheapest => 1,
            Self::Quorum => n / 2 + 1,
        }
    }

    /// The completion rule of a gather with this strategy (see the table in
    /// the module docs); `None` = keep waiting. `cheapest` stops early at
    /// `k` answers only when the client asked for that (`explicit`);
    /// otherwise it hears every supplier asked.
    pub fn completion(
        self,
        k: usize,
        explicit: bool,
        slots: &[Slot<QuoteReply>],
    ) -> Option<CompletedBy> {
        match self {
            Self::All => None,
            Self::Cheapest => {
                (explicit && offers(slots).len() >= k).then_some(CompletedBy::MinResponses)
            }
            Self::Fastest => (offers(slots).len() >= k).then_some(CompletedBy::MinResponses),
            Self::Quorum => quorum(&offers(slots), k).map(|_| CompletedBy::Quorum),
        }
    }
}

/// What a finished gather amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The strategy's answer, and every in-stock quote received.
    Found { chosen: Offer, offers: Vec<Offer> },
    /// Every supplier's circuit is open.
    AllCircuitsOpen,
    /// Fewer than `min_responses` answers by the deadline.
    TooFewByDeadline { have: usize },
    /// Every supplier asked has settled, but errors left fewer than
    /// `min_responses` answers.
    TooFewAnswers { have: usize },
    /// `min_responses` answered, but not as many agreed on a price.
    QuorumNotReached,
    /// Enough answers, none in stock.
    NoneInStock,
}

/// Judges the slots of a gather that stopped for `completed_by`.
pub fn verdict(
    strategy: Strategy,
    k: usize,
    slots: &[Slot<QuoteReply>],
    completed_by: CompletedBy,
) -> Verdict {
    if completed_by == CompletedBy::AllCircuitsOpen {
        return Verdict::AllCircuitsOpen;
    }
    let offers = offers(slots);
    // For `fastest` and `cheapest`, min_responses counts in-stock quotes;
    // for the others, answers.
    let counts_offers = matches!(strategy, Strategy::Fastest | Strategy::Cheapest);
    let have = if counts_offers {
        offers.len()
    } else {
        responses(slots)
    };
    if have < k {
        if completed_by == CompletedBy::Timeout {
            return Verdict::TooFewByDeadline { have };
        }
        if !counts_offers || offers.is_empty() && responses(slots) == 0 {
            return Verdict::TooFewAnswers { have };
        }
    }
    let chosen = match strategy {
        Strategy::All | Strategy::Cheapest => cheapest(&offers),
        Strategy::Fastest => first_in_stock(&offers),
        Strategy::Quorum => match quorum(&offers, k) {
            Some(o) => Some(o),
            None if offers.is_empty() => None,
            None => return Verdict::QuorumNotReached,
        },
    };
    match chosen.cloned() {
        Some(chosen) => Verdict::Found { chosen, offers },
        None => Verdict::NoneInStock,
    }
}

/// How long a quote's record outlives its `valid_until`, so that an order
/// naming it is told "expired" rather than "unknown".
pub const EXPIRED_QUOTE_KEPT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// `ms` since the Unix epoch as an RFC 3339 UTC timestamp with milliseconds
/// (`2026-11-29T06:00:00.000Z`).
pub fn utc_timestamp(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The demo suppliers `make up` and docker-compose run.
pub const DEMO_SUPPLIERS: [&str; 3] = ["acme", "globex", "initech"];

/// The demo catalog of one supplier (seeded only where its hash is absent):
/// the seed's `mag-safe-phone-case` at three prices and speeds, and a few
/// more SKUs that not every supplier carries.
pub fn demo_catalog(supplier: &str) -> Vec<(&'static str, CatalogEntry)> {
    let entry = |unit_price_minor, stock, delivery_days| CatalogEntry {
        unit_price_minor,
        currency: Currency("EUR".into()),
        stock,
        delivery_days,
    };
    match supplier {
        "acme" => vec![
            ("mag-safe-phone-case", entry(1250, 40, 3)),
            ("usb-c-cable-2m", entry(899, 200, 2)),
            ("wireless-charger-15w", entry(2490, 15, 4)),
        ],
        "globex" => vec![
            ("mag-safe-phone-case", entry(1190, 12, 5)),
            ("usb-c-cable-2m", entry(899, 80, 3)),
            ("screen-protector-tempered-glass", entry(650, 500, 1)),
        ],
        "initech" => vec![
            ("mag-safe-phone-case", entry(1390, 300, 1)),
            ("wireless-charger-15w", entry(2290, 0, 2)),
            ("usb-c-cable-2m", entry(949, 60, 1)),
        ],
        _ => vec![("mag-safe-phone-case", entry(1300, 50, 3))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scatter::CircuitState;
    use std::time::Duration;

    fn req(qty: u32) -> QuoteRequest {
        QuoteRequest {
            request_id: "r".into(),
            sku: Sku::parse("case").unwrap(),
            qty: Quantity::parse(i64::from(qty), 1000).unwrap(),
            deadline_ms: 0,
        }
    }

    fn quoted(supplier: &str, price: u64, days: u32, arrival: usize) -> Slot<QuoteReply> {
        Slot {
            destination: supplier.into(),
            outcome: Outcome::Reply(QuoteReply::Quoted {
                supplier: SupplierId::parse(supplier).unwrap(),
                sku: Sku::parse("case").unwrap(),
                qty: Quantity::parse(2, 1000).unwrap(),
                unit_price_minor: price,
                currency: Currency::parse("EUR").unwrap(),
                stock: 10,
                delivery_days: days,
            }),
            latency: Some(Duration::from_millis(arrival as u64)),
            arrival: Some(arrival),
            circuit: CircuitState::Closed,
        }
    }

    fn unavailable(supplier: &str, arrival: usize) -> Slot<QuoteReply> {
        Slot {
            destination: supplier.into(),
            outcome: Outcome::Reply(QuoteReply::Unavailable {
                supplier: SupplierId::parse(supplier).unwrap(),
                sku: Sku::parse("case").unwrap(),
                qty: Quantity::parse(2, 1000).unwrap(),
                reason: Unavailable::InsufficientStock,
                stock: 1,
            }),
            latency: None,
            arrival: Some(arrival),
            circuit: CircuitState::Closed,
        }
    }

    fn other(supplier: &str, outcome: Outcome<QuoteReply>) -> Slot<QuoteReply> {
        Slot {
            destination: supplier.into(),
            outcome,
            latency: None,
            arrival: None,
            circuit: CircuitState::Closed,
        }
    }

    fn found(v: Verdict) -> String {
        match v {
            Verdict::Found { chosen, .. } => chosen.supplier.to_string(),
            other => panic!("expected a quote, got {other:?}"),
        }
    }

    #[test]
    fn cheapest_fastest_and_first_pick_different_suppliers() {
        let slots = vec![
            quoted("acme", 1250, 3, 2),
            quoted("globex", 1190, 5, 3),
            quoted("initech", 1390, 1, 1),
        ];
        let o = offers(&slots);
        assert_eq!(o[0].supplier.as_str(), "globex");
        assert_eq!(o[0].total_minor, 2380);
        assert_eq!(cheapest(&o).unwrap().supplier.as_str(), "globex");
        assert_eq!(fastest_delivery(&o).unwrap().supplier.as_str(), "initech");
        assert_eq!(first_in_stock(&o).unwrap().supplier.as_str(), "initech");
        let all = CompletedBy::All;
        assert_eq!(found(verdict(Strategy::All, 1, &slots, all)), "globex");
        assert_eq!(found(verdict(Strategy::Cheapest, 3, &slots, all)), "globex");
        assert_eq!(found(verdict(Strategy::Fastest, 1, &slots, all)), "initech");
    }

    #[test]
    fn completion_rules() {
        let mut slots = vec![
            unavailable("acme", 1),
            other("globex", Outcome::Waiting),
            other("initech", Outcome::Waiting),
        ];
        assert_eq!(Strategy::All.completion(1, false, &slots), None);
        assert_eq!(Strategy::Fastest.completion(1, false, &slots), None);
        assert_eq!(
            Strategy::Cheapest.completion(1, true, &slots),
            None,
            "an answer without stock is no quote"
        );
        slots[1] = quoted("globex", 1190, 5, 2);
        assert_eq!(
            Strategy::Cheapest.completion(1, true, &slots),
            Some(CompletedBy::MinResponses)
        );
        assert_eq!(
            Strategy::Cheapest.completion(1, false, &slots),
            None,
            "waits for all"
        );
        assert_eq!(Strategy::Cheapest.completion(2, true, &slots), None);
        assert_eq!(
            Strategy::Fastest.completion(1, false, &slots),
            Some(CompletedBy::MinResponses)
        );
        assert_eq!(Strategy::Quorum.completion(2, false, &slots), None);
        slots[2] = quoted("initech", 1190, 1, 3);
        assert_eq!(
            Strategy::Quorum.completion(2, false, &slots),
            Some(CompletedBy::Quorum)
        );
    }

    #[test]
    fn quorum_agrees_on_a_unit_price() {
        let slots = vec![
            quoted("acme", 1250, 3, 1),
            quoted("globex", 1250, 5, 2),
            quoted("initech", 999, 1, 3),
        ];
        let v = verdict(Strategy::Quorum, 2, &slots, CompletedBy::Quorum);
        assert_eq!(found(v), "acme", "the agreed price, fewest days among them");
        assert_eq!(
            verdict(Strategy::Quorum, 3, &slots, CompletedBy::All),
            Verdict::QuorumNotReached
        );
        let few = vec![
            quoted("acme", 1250, 3, 1),
            other("globex", Outcome::Timeout),
            other("initech", Outcome::Timeout),
        ];
        assert_eq!(
            verdict(Strategy::Quorum, 2, &few, CompletedBy::Timeout),
            Verdict::TooFewByDeadline { have: 1 }
        );
    }

    #[test]
    fn partial_results_none_in_stock_and_open_circuits() {
        let slots = vec![
            quoted("acme", 1250, 3, 1),
            other("globex", Outcome::Timeout),
            other("initech", Outcome::Skipped),
        ];
        assert_eq!(
            found(verdict(Strategy::All, 1, &slots, CompletedBy::Timeout)),
            "acme"
        );
        assert_eq!(
            verdict(Strategy::All, 2, &slots, CompletedBy::Timeout),
            Verdict::TooFewByDeadline { have: 1 }
        );
        let errors = vec![
            quoted("acme", 1250, 3, 1),
            other("globex", Outcome::Error("boom".into())),
        ];
        assert_eq!(
            verdict(Strategy::All, 2, &errors, CompletedBy::All),
            Verdict::TooFewAnswers { have: 1 }
        );
        assert_eq!(
            found(verdict(Strategy::Cheapest, 2, &errors, CompletedBy::All)),
            "acme",
            "every supplier asked has settled: the best there is"
        );
        let none = vec![unavailable("acme", 1), unavailable("globex", 2)];
        assert_eq!(
            verdict(Strategy::All, 1, &none, CompletedBy::All),
            Verdict::NoneInStock
        );
        assert_eq!(
            verdict(Strategy::Fastest, 1, &none, CompletedBy::All),
            Verdict::NoneInStock
        );
        assert_eq!(
            verdict(Strategy::Fastest, 1, &none, CompletedBy::Timeout),
            Verdict::TooFewByDeadline { have: 0 }
        );
        let open = vec![other("acme", Outcome::Skipped)];
        assert_eq!(
            verdict(Strategy::All, 1, &open, CompletedBy::AllCircuitsOpen),
            Verdict::AllCircuitsOpen
        );
    }

    #[test]
    fn replies_for_another_request_supplier_or_currency_become_errors() {
        let eur = Currency::parse("EUR").unwrap();
        let check = |slot: &Slot<QuoteReply>, request: &QuoteRequest, currency: &Currency| {
            let Outcome::Reply(reply) = &slot.outcome else {
                panic!("a reply")
            };
            check_reply(&slot.destination, reply, request, currency)
        };
        let acme = quoted("acme", 1250, 3, 1);
        assert_eq!(check(&acme, &req(2), &eur), Ok(()));
        assert!(
            check(&acme, &req(3), &eur)
                .unwrap_err()
                .contains("not the request's")
        );
        let mut misdirected = quoted("globex", 1, 1, 2);
        misdirected.destination = "initech".into();
        assert!(
            check(&misdirected, &req(2), &eur)
                .unwrap_err()
                .contains("signed by globex")
        );
        let usd = Currency::parse("USD").unwrap();
        assert!(
            check(&acme, &req(2), &usd)
                .unwrap_err()
                .contains("quoted in EUR")
        );
        let huge = quoted("acme", u64::MAX, 3, 1);
        assert!(
            check(&huge, &req(2), &eur)
                .unwrap_err()
                .contains("overflows")
        );
    }

    #[test]
    fn ids_and_codes_are_checked() {
        assert!(SupplierId::parse("acme-2").is_ok());
        assert!(SupplierId::parse("Acme").is_err());
        assert!(SupplierId::parse("").is_err());
        assert!(SupplierId::parse("a.b").is_err());
        assert_eq!(parse_suppliers(" acme, globex ,,").unwrap().len(), 2);
        assert!(parse_suppliers("acme,acme").is_err());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        let q = QuoteId::generate();
        assert_eq!(QuoteId::parse(q.as_str()).unwrap(), q);
        assert!(QuoteId::parse("q-xyz").is_err());
        let entry: Result<CatalogEntry, _> = serde_json::from_str(
            r#"{"unit_price_minor":12.5,"currency":"EUR","stock":1,"delivery_days":1}"#,
        );
        assert!(entry.is_err(), "money is never a float");
        for s in DEMO_SUPPLIERS {
            assert!(
                demo_catalog(s)
                    .iter()
                    .any(|(sku, _)| *sku == "mag-safe-phone-case")
            );
        }
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_timestamp(1_795_932_245_007), "2026-11-29T06:04:05.007Z");
    }

    #[test]
    fn replies_round_trip_with_a_status_tag() {
        let reply = QuoteReply::Failed {
            supplier: SupplierId::parse("acme").unwrap(),
            error: "injected".into(),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.contains(r#""status":"failed""#), "{json}");
        assert_eq!(serde_json::from_str::<QuoteReply>(&json).unwrap(), reply);
        assert!(reply.failure().is_some());
    }
}
