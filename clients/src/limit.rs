//! Rate limits per key, shared by every gateway: one GCRA script run in
//! Redis per request (`gcra.lua`), and the answer's `RateLimit-Policy` and
//! `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers).

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pipeline::http::Problem;
use pipeline::keys::Keys;
use pipeline::store::Redis;

use crate::scope::Principal;

static GCRA: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra.lua")));

/// A limited route, and its name in the headers and the Redis key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /orders` (and cancels, later).
    Orders,
    /// `GET /quotes/{sku}`.
    Quotes,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Quotes => "quotes",
        }
    }
}

/// The rates of a key that names none.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct DefaultRates {
    /// `POST /orders` per second per key, for keys created without
    /// --orders-per-sec; the burst is one second's worth.
    #[arg(id = "RATE_ORDERS_PER_SEC", long = "rate-orders-per-sec", env = "RATE_ORDERS_PER_SEC", default_value = "100", value_parser = pipeline::config::between::<u32>(1, 1_000_000))]
    pub orders_per_sec: u32,
    /// `GET /quotes` per second per key, for keys created without
    /// --quotes-per-sec; the burst is one second's worth.
    #[arg(id = "RATE_QUOTES_PER_SEC", long = "rate-quotes-per-sec", env = "RATE_QUOTES_PER_SEC", default_value = "20", value_parser = pipeline::config::between::<u32>(1, 1_000_000))]
    pub quotes_per_sec: u32,
}

/// What the limiter said about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub route: Route,
    pub allowed: bool,
    /// Requests per second, and the burst (= the policy's quota per 1 s).
    pub rate: u32,
    pub remaining: u64,
    /// Until the burst is whole again.
    pub reset: Duration,
    /// Until a refused request may be retried.
    pub retry_after: Duration,
}

impl Verdict {
    /// `RateLimit-Policy: "orders";q=100;w=1`.
    pub fn policy(&self) -> String {
        format!("\"{}\";q={};w=1", self.route.as_str(), self.rate)
    }

    /// `RateLimit: "orders";r=97;t=1`.
    pub fn state(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.route.as_str(),
            self.remaining,
            self.reset.as_secs_f64().ceil() as u64
        )
    }

    fn add_headers(&self, res: &mut Response) {
        for (name, value) in [
            ("ratelimit-policy", self.policy()),
            ("ratelimit", self.state()),
        ] {
            if let Ok(value) = HeaderValue::try_from(value) {
                res.headers_mut().insert(name, value);
            }
        }
    }
}

/// The limiter every gateway process holds. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    pool: Redis,
    keys: Keys,
    defaults: DefaultRates,
}

impl Limiter {
    pub fn new(pool: Redis, keys: Keys, defaults: DefaultRates) -> Self {
        Self {
            pool,
            keys,
            defaults,
        }
    }

    /// The rate of `who` on `route`.
    pub fn rate(&self, who: &Principal, route: Route) -> u32 {
        match route {
            Route::Orders => who.orders_per_sec.unwrap_or(self.defaults.orders_per_sec),
            Route::Quotes => who.quotes_per_sec.unwrap_or(self.defaults.quotes_per_sec),
        }
        .max(1)
    }

    /// Counts one request of `who` on `route`.
    pub async fn check(&self, who: &Principal, route: Route) -> anyhow::Result<Verdict> {
        let rate = self.rate(who, route);
        let interval_us = 1_000_000 / u64::from(rate);
        let mut invocation = GCRA.prepare_invoke();
        invocation
            .key(self.keys.rate(&who.key_id, route.as_str()))
            .arg(interval_us.max(1))
            .arg(rate);
        let mut conn = self.pool.connection();
        let reply: Vec<u64> = invocation.invoke_async(&mut conn).await?;
        let [allowed, remaining, reset_us, retry_us] = reply[..] else {
            anyhow::bail!("unexpected gcra.lua reply {reply:?}");
        };
        Ok(Verdict {
            route,
            allowed: allowed == 1,
            rate,
            remaining,
            reset: Duration::from_micros(reset_us),
            retry_after: Duration::from_micros(retry_us),
        })
    }
}

/// Middleware (after [`crate::require`]): counts the request against its
/// key's rate on `route`; over it, 429 with `Retry-After` before the handler
/// runs, so nothing is claimed, created or moved. Every answer carries the
/// `RateLimit-Policy` and `RateLimit` headers.
pub async fn limit(
    State((limiter, route)): State<(Limiter, Route)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(who) = req.extensions().get::<Principal>().cloned() else {
        tracing::error!("a limited route without its key check");
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .into_response();
    };
    let verdict = match limiter.check(&who, route).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "the rate limit could not be checked"
            );
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Store unavailable",
            )
            .detail("the rate limit could not be checked; retry shortly")
            .retry_after(Duration::from_secs(1))
            .into_response();
        }
    };
    let mut res = if verdict.allowed {
        next.run(req).await
    } else {
        metrics::counter!("rate_limited_total", "route" => route.as_str()).increment(1);
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
        )
        .detail(format!(
            "this key may make {} {} requests per second; retry after the Retry-After seconds",
            verdict.rate,
            route.as_str()
        ))
        .retry_after(verdict.retry_after)
        .into_response()
    };
    verdict.add_headers(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_follow_the_draft() {
        let v = Verdict {
            route: Route::Orders,
            allowed: true,
            rate: 200,
            remaining: 117,
            reset: Duration::from_millis(415),
            retry_after: Duration::ZERO,
        };
        assert_eq!(v.policy(), "\"orders\";q=200;w=1");
        assert_eq!(v.state(), "\"orders\";r=117;t=1");
    }
}
