//! Idempotent order intake, as a small state machine over one Redis hash per key.
//!
//! ```text
//!            begin                publish confirmed: accept
//!   (none) ---------> in_flight ---------------------------> done (response stored, TTL)
//!                        |
//!                        +-- publish failed: release --> (none)      a retry can succeed
//!                        +-- lease expires ------------> (none)      a crashed gateway frees it
//! ```
//!
//! A second request with the same key gets a [`NextAction`]: replay the stored
//! response, 409 while the first is in flight, or 422 if its payload differs.

use std::time::Duration;

use deadpool_redis::Pool;
use pipeline::domain::{IdempotencyKey, OrderId};
use pipeline::keys::Keys;
use redis::Script;

static BEGIN: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("begin.lua")));
static RELEASE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("release.lua")));
static ACCEPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("accept.lua")));

/// What a request holding an idempotency key must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// The key is ours: process the request, then [`Store::accept`] or
    /// [`Store::release`] it.
    Process(Claim),
    /// A request with this key and payload finished: answer with its response.
    Replay(StoredResponse),
    /// A request with this key is still in flight; retry after the lease.
    Conflict { retry_after: Duration },
    /// The key was used for a different payload.
    Mismatch,
}

/// Proof of holding a key: only the holder can complete or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    key: IdempotencyKey,
    token: String,
}

/// A finished request's answer, replayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

impl NextAction {
    /// Interprets the reply of `begin.lua`.
    fn from_reply(key: &IdempotencyKey, token: String, reply: &[String]) -> anyhow::Result<Self> {
        match reply {
            [tag] if tag == "process" => Ok(Self::Process(Claim {
                key: key.clone(),
                token,
            })),
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
            other => anyhow::bail!("unexpected idempotency script reply {other:?}"),
        }
    }
}

/// How long claims and finished records live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// In-flight lease: a crashed request frees its key after this.
    pub lease: Duration,
    /// How long a finished request's response is replayed.
    pub done: Duration,
}

/// The idempotency records and order records in Redis.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: Keys,
    lifetimes: Lifetimes,
}

/// What [`Store::accept`] records about an order the broker confirmed.
#[derive(Debug)]
pub struct Accepted<'a> {
    pub id: &'a OrderId,
    pub sku: &'a str,
    pub qty: u32,
    pub accepted_at_ms: u64,
    pub response: &'a StoredResponse,
}

impl Store {
    pub fn new(pool: Pool, keys: Keys, lifetimes: Lifetimes) -> Self {
        Self {
            pool,
            keys,
            lifetimes,
        }
    }

    /// Claims `key` for a request whose canonical payload is `fingerprint`.
    pub async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> anyhow::Result<NextAction> {
        let token = uuid_token();
        let mut conn = self.pool.get().await?;
        let reply: Vec<String> = BEGIN
            .key(self.keys.idempotency(key.as_str()))
            .arg(fingerprint)
            .arg(&token)
            .arg(self.lifetimes.lease.as_millis() as u64)
            .invoke_async(&mut *conn)
            .await?;
        NextAction::from_reply(key, token, &reply)
    }

    /// Frees a claim after a failed publish.
    pub async fn release(&self, claim: &Claim) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await?;
        let _: i64 = RELEASE
            .key(self.keys.idempotency(claim.key.as_str()))
            .arg(&claim.token)
            .invoke_async(&mut *conn)
            .await?;
        Ok(())
    }

    /// Records a confirmed order and, with a claim, its response for replays.
    pub async fn accept(&self, order: &Accepted<'_>, claim: Option<&Claim>) -> anyhow::Result<()> {
        let mut invocation = ACCEPT.prepare_invoke();
        invocation
            .key(self.keys.order(order.id))
            .key(self.keys.counters())
            .key(self.keys.recent_orders());
        if let Some(claim) = claim {
            invocation.key(self.keys.idempotency(claim.key.as_str()));
        }
        invocation
            .arg(order.sku)
            .arg(order.qty)
            .arg(order.accepted_at_ms)
            .arg(claim.map(|c| c.token.as_str()).unwrap_or(""))
            .arg(order.response.status)
            .arg(&order.response.body)
            .arg(self.lifetimes.done.as_millis() as u64)
            .arg(order.id.as_str());
        let mut conn = self.pool.get().await?;
        let _: i64 = invocation.invoke_async(&mut *conn).await?;
        Ok(())
    }
}

fn uuid_token() -> String {
    // A v7 UUID is unique per claim; its randomness is all the token needs.
    OrderId::generate().as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> IdempotencyKey {
        IdempotencyKey::parse_header("k").unwrap()
    }

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_request_processes_with_its_token() {
        let action = NextAction::from_reply(&key(), "t1".into(), &reply(&["process"])).unwrap();
        assert_eq!(
            action,
            NextAction::Process(Claim {
                key: key(),
                token: "t1".into()
            })
        );
    }

    #[test]
    fn finished_request_is_replayed_verbatim() {
        let action = NextAction::from_reply(
            &key(),
            "t".into(),
            &reply(&["replay", "202", "{\"id\":\"o\"}"]),
        )
        .unwrap();
        assert_eq!(
            action,
            NextAction::Replay(StoredResponse {
                status: 202,
                body: "{\"id\":\"o\"}".into()
            })
        );
    }

    #[test]
    fn in_flight_request_conflicts_with_at_least_a_second_to_wait() {
        let action =
            NextAction::from_reply(&key(), "t".into(), &reply(&["conflict", "250"])).unwrap();
        assert_eq!(
            action,
            NextAction::Conflict {
                retry_after: Duration::from_secs(1)
            }
        );
        let action =
            NextAction::from_reply(&key(), "t".into(), &reply(&["conflict", "29500"])).unwrap();
        assert_eq!(
            action,
            NextAction::Conflict {
                retry_after: Duration::from_millis(29_500)
            }
        );
    }

    #[test]
    fn different_payload_is_a_mismatch_and_garbage_is_an_error() {
        assert_eq!(
            NextAction::from_reply(&key(), "t".into(), &reply(&["mismatch"])).unwrap(),
            NextAction::Mismatch
        );
        assert!(NextAction::from_reply(&key(), "t".into(), &reply(&["what"])).is_err());
        assert!(NextAction::from_reply(&key(), "t".into(), &reply(&["replay", "x", "b"])).is_err());
    }
}
