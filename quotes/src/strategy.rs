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

use serde::{Deserialize, Serialize};

use pipeline::domain::{Currency, Quantity, Sku, SupplierId};

use crate::scatter::{CompletedBy, Fate, GatherReply, Slot};

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
            Fate::Reply(QuoteReply::Quoted {
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
        .filter(|s| matches!(s.outcome, Fate::Reply(_)))
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
pub enum Judgement {
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
pub fn judge(
    strategy: Strategy,
    k: usize,
    slots: &[Slot<QuoteReply>],
    completed_by: CompletedBy,
) -> Judgement {
    if completed_by == CompletedBy::AllCircuitsOpen {
        return Judgement::AllCircuitsOpen;
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
            return Judgement::TooFewByDeadline { have };
        }
        if !counts_offers || offers.is_empty() && responses(slots) == 0 {
            return Judgement::TooFewAnswers { have };
        }
    }
    let chosen = match strategy {
        Strategy::All | Strategy::Cheapest => cheapest(&offers),
        Strategy::Fastest => first_in_stock(&offers),
        Strategy::Quorum => match quorum(&offers, k) {
            Some(o) => Some(o),
            None if offers.is_empty() => None,
            None => return Judgement::QuorumNotReached,
        },
    };
    match chosen.cloned() {
        Some(chosen) => Judgement::Found { chosen, offers },
        None => Judgement::NoneInStock,
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

/// The demo suppliers `make up` and docker-compose run (the supplier owns
/// their catalogs; the gateway asks them unless told otherwise).
pub const DEMO_SUPPLIERS: [&str; 3] = ["acme", "globex", "initech"];
#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::api::CircuitState;
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
            outcome: Fate::Reply(QuoteReply::Quoted {
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
            outcome: Fate::Reply(QuoteReply::Unavailable {
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

    fn other(supplier: &str, outcome: Fate<QuoteReply>) -> Slot<QuoteReply> {
        Slot {
            destination: supplier.into(),
            outcome,
            latency: None,
            arrival: None,
            circuit: CircuitState::Closed,
        }
    }

    fn found(v: Judgement) -> String {
        match v {
            Judgement::Found { chosen, .. } => chosen.supplier.to_string(),
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
        assert_eq!(found(judge(Strategy::All, 1, &slots, all)), "globex");
        assert_eq!(found(judge(Strategy::Cheapest, 3, &slots, all)), "globex");
        assert_eq!(found(judge(Strategy::Fastest, 1, &slots, all)), "initech");
    }

    #[test]
    fn completion_rules() {
        let mut slots = vec![
            unavailable("acme", 1),
            other("globex", Fate::Waiting),
            other("initech", Fate::Waiting),
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
        let v = judge(Strategy::Quorum, 2, &slots, CompletedBy::Quorum);
        assert_eq!(found(v), "acme", "the agreed price, fewest days among them");
        assert_eq!(
            judge(Strategy::Quorum, 3, &slots, CompletedBy::All),
            Judgement::QuorumNotReached
        );
        let few = vec![
            quoted("acme", 1250, 3, 1),
            other("globex", Fate::Timeout),
            other("initech", Fate::Timeout),
        ];
        assert_eq!(
            judge(Strategy::Quorum, 2, &few, CompletedBy::Timeout),
            Judgement::TooFewByDeadline { have: 1 }
        );
    }

    #[test]
    fn partial_results_none_in_stock_and_open_circuits() {
        let slots = vec![
            quoted("acme", 1250, 3, 1),
            other("globex", Fate::Timeout),
            other("initech", Fate::Skipped),
        ];
        assert_eq!(
            found(judge(Strategy::All, 1, &slots, CompletedBy::Timeout)),
            "acme"
        );
        assert_eq!(
            judge(Strategy::All, 2, &slots, CompletedBy::Timeout),
            Judgement::TooFewByDeadline { have: 1 }
        );
        let errors = vec![
            quoted("acme", 1250, 3, 1),
            other("globex", Fate::Error("boom".into())),
        ];
        assert_eq!(
            judge(Strategy::All, 2, &errors, CompletedBy::All),
            Judgement::TooFewAnswers { have: 1 }
        );
        assert_eq!(
            found(judge(Strategy::Cheapest, 2, &errors, CompletedBy::All)),
            "acme",
            "every supplier asked has settled: the best there is"
        );
        let none = vec![unavailable("acme", 1), unavailable("globex", 2)];
        assert_eq!(
            judge(Strategy::All, 1, &none, CompletedBy::All),
            Judgement::NoneInStock
        );
        assert_eq!(
            judge(Strategy::Fastest, 1, &none, CompletedBy::All),
            Judgement::NoneInStock
        );
        assert_eq!(
            judge(Strategy::Fastest, 1, &none, CompletedBy::Timeout),
            Judgement::TooFewByDeadline { have: 0 }
        );
        let open = vec![other("acme", Fate::Skipped)];
        assert_eq!(
            judge(Strategy::All, 1, &open, CompletedBy::AllCircuitsOpen),
            Judgement::AllCircuitsOpen
        );
    }

    #[test]
    fn replies_for_another_request_supplier_or_currency_become_errors() {
        let eur = Currency::parse("EUR").unwrap();
        let check = |slot: &Slot<QuoteReply>, request: &QuoteRequest, currency: &Currency| {
            let Fate::Reply(reply) = &slot.outcome else {
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
