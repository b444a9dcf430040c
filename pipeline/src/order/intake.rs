//! Idempotent intake of one order request, as a small state machine over the
//! request's idempotency record (`idemp:<key>`, header keys only) and its
//! order record (`order:<id>`).
//!
//! ```text
//!            claim (intake.lua)          publish confirmed: accept
//!   (none) ---------------------> claimed -------------------------> accepted (answer stored for the key)
//!                                   |
//!                                   +-- publish not confirmed: release --> unclaimed, id kept:
//!                                   |                                      the retry republishes it
//!                                   +-- lease expires -------------------> the same, for a crashed gateway
//! ```
//!
//! A request that cannot go ahead gets an [`Intake`] saying why: replay the
//! stored answer, wait (409) while another request holds the key or the id,
//! 422 when its key was used for another payload, 409 when its id names
//! another order.

use std::time::Duration;

use crate::domain::{ClientId, IdempotencyKey, OrderId, Quantity, Sku};
use crate::domain::{QuoteId, QuoteTerms};
use crate::keys::Keys;
use crate::store::Redis;

use super::{ACCEPT, INTAKE, RECENT_ORDERS, RELEASE};

/// How long claims and finished records live.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Lifetimes {
    /// In-flight lease, in seconds: a crashed request frees its key and id
    /// after this. Must outlast REQUEST_TIMEOUT_MS.
    #[arg(id = "IDEMPOTENCY_LEASE_SECS", long = "idempotency-lease-secs", env = "IDEMPOTENCY_LEASE_SECS", default_value = "30", value_parser = crate::config::secs)]
    pub lease: Duration,
    /// How long, in seconds, a key remembers its order id and answer.
    #[arg(id = "IDEMPOTENCY_TTL_SECS", long = "idempotency-ttl-secs", env = "IDEMPOTENCY_TTL_SECS", default_value = "86400", value_parser = crate::config::secs)]
    pub done: Duration,
}

/// A valid order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeRequest {
    /// Whose order it is: its idempotency key and id are this client's.
    pub client: ClientId,
    /// The id the client chose (its own, unqualified), if any.
    pub id: Option<OrderId>,
    pub sku: Sku,
    pub qty: Quantity,
    /// The quote the order is placed against, if any (part of its payload).
    pub quote: Option<QuoteId>,
}

impl IntakeRequest {
    /// The canonical form two requests under one key must share to be "the
    /// same request".
    pub fn fingerprint(&self) -> String {
        let mut canonical = serde_json::json!({
            "id": self.id.as_ref().map(OrderId::as_str),
            "sku": self.sku.as_str(),
            "qty": self.qty.get(),
        });
        // Only when present: a key stored before quotes existed keeps its
        // fingerprint.
        if let Some(quote) = &self.quote {
            canonical["quote_id"] = quote.as_str().into();
        }
        canonical.to_string()
    }
}

/// What a request must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// The key and the id are ours: publish the order `claim.id`, then
    /// [`accept`] or [`release`].
    Process(Claim),
    /// The key's first request finished: answer with its stored response.
    Replay(StoredResponse),
    /// The order was accepted before (under another key, or none): the same
    /// order; answer as its acceptance did.
    Accepted(OrderId),
    /// The key or the id is held by a request in flight; retry after this.
    Conflict { retry_after: Duration },
    /// The key was used for a different payload.
    Mismatch,
    /// The id names an order with another payload.
    IdConflict(OrderId),
    /// The id may name an order whose records expired (retention): ask the
    /// history, then answer as for that order, or claim again with
    /// [`Store::claim_unretired`] if it never saw the id.
    Retired(OrderId),
    /// The request's quote cannot back a new order (unknown, expired, for
    /// another sku or qty, or backing another order); why.
    InvalidQuote(String),
}

/// Proof of holding a request's key and id: only the holder can accept or
/// release them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: OrderId,
    /// A quote-backed order's terms, from its record.
    pub quote: Option<QuoteTerms>,
    /// The idempotency record's Redis key, if the request had a header key.
    key: Option<String>,
    token: String,
}

/// A finished request's answer, replayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

impl Intake {
    /// Interprets the reply of `intake.lua`.
    fn from_reply(key: Option<&String>, token: String, reply: &[String]) -> anyhow::Result<Self> {
        let id = |raw: &str| {
            OrderId::parse_qualified(raw)
                .map_err(|e| anyhow::anyhow!("intake.lua returned a bad id: {e}"))
        };
        match reply {
            [tag, raw] if tag == "process" => Ok(Self::Process(Claim {
                id: id(raw)?,
                quote: None,
                key: key.cloned(),
                token,
            })),
            [tag, raw, q, s, u, t, c, d] if tag == "process" => Ok(Self::Process(Claim {
                id: id(raw)?,
                quote: Some(
                    QuoteTerms::from_fields([q, s, u, t, c, d])
                        .map_err(|e| anyhow::anyhow!("intake.lua returned bad quote terms: {e}"))?,
                ),
                key: key.cloned(),
                token,
            })),
            [tag, reason] if tag == "invalid_quote" => Ok(Self::InvalidQuote(reason.clone())),
            [tag, raw] if tag == "accepted" => Ok(Self::Accepted(id(raw)?)),
            [tag, raw] if tag == "id_conflict" => Ok(Self::IdConflict(id(raw)?)),
            [tag, raw] if tag == "retired" => Ok(Self::Retired(id(raw)?)),
            [tag] if tag == "mismatch" => Ok(Self::Mismatch),
            [tag, pttl] if tag == "conflict" => {
                let ms: i64 = pttl.parse().unwrap_or(1000);
                Ok(Self::Conflict {
                    retry_after: Duration::from_millis(ms.max(1000) as u64),
                })
            }
            [tag, status, body] if tag == "replay" => Ok(Self::Replay(StoredResponse {
                status: status.parse()?,
                body: body.clone(),
            })),
            other => anyhow::bail!("unexpected intake.lua reply {other:?}"),
        }
    }
}

/// The intake records in Redis.
#[derive(Clone)]
pub struct Store {
    pool: Redis,
    keys: Keys,
    lifetimes: Lifetimes,
}

impl Store {
    pub fn new(pool: Redis, keys: Keys, lifetimes: Lifetimes) -> Self {
        Self {
            pool,
            keys,
            lifetimes,
        }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Claims `key` (if any) and the request's order id. Without a body id,
    /// the id is minted here, once per key: a key seen before brings back the
    /// id it was first used with. A call whose reply is lost is retried once
    /// with the same token, which finds its own claim.
    pub async fn claim(
        &self,
        request: &IntakeRequest,
        key: Option<&IdempotencyKey>,
    ) -> anyhow::Result<Intake> {
        self.claim_checked(request, key, true).await
    }

    /// [`Store::claim`] once the history said it never saw the request's id
    /// (after [`Intake::Retired`]).
    pub async fn claim_unretired(
        &self,
        request: &IntakeRequest,
        key: Option<&IdempotencyKey>,
    ) -> anyhow::Result<Intake> {
        self.claim_checked(request, key, false).await
    }

    async fn claim_checked(
        &self,
        request: &IntakeRequest,
        key: Option<&IdempotencyKey>,
        check_retired: bool,
    ) -> anyhow::Result<Intake> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        // A freshly minted id is new by construction; a client's id, or one
        // the key minted long ago, may have retired.
        let check_retired = match (check_retired, request.id.is_some()) {
            (false, _) => "0",
            (true, true) => "1",
            (true, false) => "key",
        };
        let candidate = request
            .id
            .clone()
            .unwrap_or_else(OrderId::generate)
            .scoped(&request.client);
        let record = key.map(|k| self.keys.idempotency(&request.client, k.as_str()));
        let key = record.as_ref();
        let claim = || self.claim_once(request, key, &candidate, &token, check_retired);
        match claim().await {
            Ok(reply) => Intake::from_reply(key, token.clone(), &reply),
            Err(first) => {
                tracing::warn!(
                    error = format!("{first:#}"),
                    "intake claim failed, retrying once"
                );
                let reply = claim().await?;
                Intake::from_reply(key, token.clone(), &reply)
            }
        }
    }

    async fn claim_once(
        &self,
        request: &IntakeRequest,
        key: Option<&String>,
        candidate: &OrderId,
        token: &str,
        check_retired: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut invocation = INTAKE.prepare_invoke();
        invocation.key(self.keys.order(candidate));
        if let Some(key) = key {
            invocation.key(key);
        }
        invocation
            .arg(candidate.as_str())
            .arg(request.sku.as_str())
            .arg(request.qty.get())
            .arg(request.fingerprint())
            .arg(token)
            .arg(self.lifetimes.lease.as_millis() as u64)
            .arg(self.keys.order_prefix())
            .arg(self.lifetimes.done.as_millis() as u64)
            .arg(self.keys.retired_ids())
            .arg(check_retired)
            .arg(super::RETIRED_FILTER_BITS)
            .arg(
                request
                    .quote
                    .as_ref()
                    .map(|q| self.keys.quote(q))
                    .unwrap_or_default(),
            )
            .arg(request.quote.as_ref().map(QuoteId::as_str).unwrap_or(""))
            .arg(request.client.as_str());
        let mut conn = self.pool.connection();
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    /// Gives the claim back after a publish that was not confirmed; the key
    /// keeps its id and the id its payload (the broker may hold the message).
    pub async fn release(&self, claim: &Claim) -> anyhow::Result<()> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(self.keys.order(&claim.id));
        if let Some(key) = &claim.key {
            invocation.key(key);
        }
        invocation.arg(&claim.token);
        let mut conn = self.pool.connection();
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Records a confirmed order and, for the key's holder, its answer.
    pub async fn accept(&self, claim: &Claim, response: &StoredResponse) -> anyhow::Result<()> {
        let mut invocation = ACCEPT.prepare_invoke();
        invocation
            .key(self.keys.order(&claim.id))
            .key(self.keys.counters())
            .key(self.keys.recent_orders());
        if let Some(key) = &claim.key {
            invocation.key(key);
        }
        invocation
            .arg(&claim.token)
            .arg(response.status)
            .arg(&response.body)
            .arg(self.lifetimes.done.as_millis() as u64)
            .arg(claim.id.as_str())
            .arg(RECENT_ORDERS);
        let mut conn = self.pool.connection();
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        "idemp:k".into()
    }

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_claim_carries_the_id_key_and_token() {
        let action =
            Intake::from_reply(Some(&key()), "t1".into(), &reply(&["process", "o-1"])).unwrap();
        assert_eq!(
            action,
            Intake::Process(Claim {
                id: OrderId::parse("o-1").unwrap(),
                quote: None,
                key: Some(key()),
                token: "t1".into()
            })
        );
    }

    #[test]
    fn finished_requests_replay_and_accepted_ids_are_the_same_order() {
        assert_eq!(
            Intake::from_reply(
                None,
                "t".into(),
                &reply(&["replay", "202", "{\"id\":\"o\"}"])
            )
            .unwrap(),
            Intake::Replay(StoredResponse {
                status: 202,
                body: "{\"id\":\"o\"}".into()
            })
        );
        assert_eq!(
            Intake::from_reply(None, "t".into(), &reply(&["accepted", "o"])).unwrap(),
            Intake::Accepted(OrderId::parse("o").unwrap())
        );
    }

    #[test]
    fn conflicts_wait_at_least_a_second() {
        assert_eq!(
            Intake::from_reply(None, "t".into(), &reply(&["conflict", "250"])).unwrap(),
            Intake::Conflict {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(
            Intake::from_reply(None, "t".into(), &reply(&["conflict", "29500"])).unwrap(),
            Intake::Conflict {
                retry_after: Duration::from_millis(29_500)
            }
        );
    }

    #[test]
    fn mismatches_id_conflicts_and_garbage() {
        assert_eq!(
            Intake::from_reply(None, "t".into(), &reply(&["mismatch"])).unwrap(),
            Intake::Mismatch
        );
        assert_eq!(
            Intake::from_reply(None, "t".into(), &reply(&["id_conflict", "o3"])).unwrap(),
            Intake::IdConflict(OrderId::parse("o3").unwrap())
        );
        assert!(Intake::from_reply(None, "t".into(), &reply(&["what"])).is_err());
        assert!(Intake::from_reply(None, "t".into(), &reply(&["replay", "x", "b"])).is_err());
        assert!(Intake::from_reply(None, "t".into(), &reply(&["process", "bad id"])).is_err());
        // Another client's order comes back qualified.
        assert_eq!(
            Intake::from_reply(None, "t".into(), &reply(&["accepted", "demo/o"])).unwrap(),
            Intake::Accepted(OrderId::parse_qualified("demo/o").unwrap())
        );
    }

    #[test]
    fn fingerprint_sees_every_value() {
        let req = |id: Option<&str>, qty| IntakeRequest {
            client: ClientId::default_client(),
            id: id.map(|i| OrderId::parse(i).unwrap()),
            sku: Sku::parse("s").unwrap(),
            qty: Quantity::parse(qty, 10).unwrap(),
            quote: None,
        };
        assert_eq!(
            req(Some("o"), 1).fingerprint(),
            req(Some("o"), 1).fingerprint()
        );
        assert_ne!(
            req(Some("o"), 1).fingerprint(),
            req(Some("o"), 2).fingerprint()
        );
        assert_ne!(req(Some("o"), 1).fingerprint(), req(None, 1).fingerprint());
        let mut quoted = req(Some("o"), 1);
        quoted.quote = Some(QuoteId::generate());
        assert_ne!(quoted.fingerprint(), req(Some("o"), 1).fingerprint());
        assert!(!req(Some("o"), 1).fingerprint().contains("quote"));
    }
}
