//! Supplier quotes: the gateway's side of scatter-gather.
//!
//! [`Quotes::ask`] fans a [`QuoteRequest`] out to every configured supplier
//! whose circuit is not open (over `quotes::scatter`), gathers the answers
//! by the strategy's completion rule, checks that every answer answers this
//! request, judges them ([`quotes::judge`]) and keeps each
//! in-stock quote it hands out in Redis (`quote:<id>`) until it expires, so
//! an order can name it.

use std::time::Duration;

use pipeline::amqp::Broker;
use pipeline::api::DestinationStatus;
use pipeline::config::{ConfigError, at_least, between, millis};
use pipeline::domain::{ClientId, Currency, QuoteId, SupplierId};
use pipeline::domain::{Quantity, Sku};
use pipeline::keys::Keys;
use pipeline::messages::now_ms;
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis;
use quotes::scatter::breaker::bounded_millis;
use quotes::scatter::{
    BreakerConfig, CompletedBy, Destination, GatherError, ScatterGather, Settings, Slot,
};
use quotes::{EXPIRED_QUOTE_KEPT, Judgement, Offer, QuoteReply, QuoteRequest, Strategy};
use tokio::time::Instant;

/// `QUOTE_*`: who is asked and how long quotes live.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotesConfig {
    /// The suppliers asked for quotes, comma-separated ids; empty: no
    /// quotes.
    #[arg(id = "QUOTE_SUPPLIERS", long = "quote-suppliers", env = "QUOTE_SUPPLIERS", default_value_t = SupplierList::demo(), value_parser = supplier_list)]
    pub suppliers: SupplierList,
    /// The quote deadline when the client names none (at most
    /// QUOTE_MAX_TIMEOUT_MS).
    #[arg(id = "QUOTE_TIMEOUT_MS", long = "quote-timeout-ms", env = "QUOTE_TIMEOUT_MS", default_value = "1000", value_parser = millis)]
    pub default_timeout: Duration,
    /// The longest `timeout_ms` a client may ask for (at most 600000).
    #[arg(id = "QUOTE_MAX_TIMEOUT_MS", long = "quote-max-timeout-ms", env = "QUOTE_MAX_TIMEOUT_MS", default_value = "10000", value_parser = bounded_millis(600_000))]
    pub max_timeout: Duration,
    /// How long, in seconds, a quote can be ordered against (at most a week).
    #[arg(id = "QUOTE_VALIDITY_SECS", long = "quote-validity-secs", env = "QUOTE_VALIDITY_SECS", default_value = "300", value_parser = validity)]
    pub validity: Duration,
    /// The currency prices are compared in; a quote in another is an error
    /// of its supplier, never mixed in.
    #[arg(id = "QUOTE_CURRENCY", long = "quote-currency", env = "QUOTE_CURRENCY", default_value = "EUR", value_parser = |s: &str| Currency::parse(s.trim()))]
    pub currency: Currency,
    /// Quote requests waiting for replies at once; beyond, 503.
    #[arg(id = "QUOTE_MAX_PENDING", long = "quote-max-pending", env = "QUOTE_MAX_PENDING", default_value = "10000", value_parser = at_least::<usize>(1))]
    pub max_pending: usize,
    /// Unexpired quotes one client may hold at once; past it, 429 until
    /// the oldest expires.
    #[arg(id = "QUOTE_MAX_OUTSTANDING", long = "quote-max-outstanding", env = "QUOTE_MAX_OUTSTANDING", default_value = "10000", value_parser = at_least::<u64>(1))]
    pub max_outstanding: u64,
    /// Every supplier's circuit breaker.
    #[command(flatten)]
    pub breaker: BreakerConfig,
}

/// `issue_quotes.lua`: a client's quotes kept within its budget.
static ISSUE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("issue_quotes.lua")));

/// `QUOTE_SUPPLIERS`: ids in order, no duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupplierList(pub Vec<SupplierId>);

impl SupplierList {
    /// The demo suppliers, asked unless `QUOTE_SUPPLIERS` says otherwise.
    pub fn demo() -> Self {
        Self(
            quotes::DEMO_SUPPLIERS
                .iter()
                .map(|s| SupplierId::parse(s).expect("the demo ids are valid"))
                .collect(),
        )
    }
}

impl std::fmt::Display for SupplierList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(SupplierId::as_str).collect();
        f.write_str(&ids.join(","))
    }
}

impl std::ops::Deref for SupplierList {
    type Target = Vec<SupplierId>;
    fn deref(&self) -> &Vec<SupplierId> {
        &self.0
    }
}

fn supplier_list(raw: &str) -> Result<SupplierList, String> {
    pipeline::domain::parse_suppliers(raw).map(SupplierList)
}

fn validity(raw: &str) -> Result<Duration, String> {
    between::<u64>(1, 7 * 86_400)(raw).map(Duration::from_secs)
}

impl QuotesConfig {
    /// The defaults with these suppliers (tests, other services' harnesses).
    pub fn with_suppliers(suppliers: Vec<SupplierId>) -> Self {
        Self {
            suppliers: SupplierList(suppliers),
            ..pipeline::config::defaults()
        }
    }

    /// What no single value can say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.default_timeout > self.max_timeout {
            return Err(ConfigError::new(
                "QUOTE_TIMEOUT_MS",
                &self.default_timeout.as_millis().to_string(),
                "must not exceed QUOTE_MAX_TIMEOUT_MS",
            ));
        }
        let (window, min_calls) = (self.breaker.window, self.breaker.min_calls);
        if min_calls > window {
            return Err(ConfigError::new(
                "QUOTE_BREAKER_MIN_CALLS",
                &min_calls.to_string(),
                format!(
                    "must not exceed QUOTE_BREAKER_WINDOW ({window}): the circuit could never open"
                ),
            ));
        }
        Ok(())
    }
}

/// One validated quote request.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Whose quotes these are: only this client can order against them.
    pub client: ClientId,
    pub sku: Sku,
    pub qty: Quantity,
    pub strategy: Strategy,
    pub min_responses: usize,
    /// The client named `min_responses` (else it is the strategy's default).
    pub explicit_min: bool,
    pub timeout: Duration,
}

/// A quote handed out: an offer with its id and validity.
#[derive(Debug, Clone)]
pub struct IssuedQuote {
    pub id: QuoteId,
    pub offer: Offer,
    pub valid_until_ms: u64,
}

/// The outcome of one quote request.
#[derive(Debug)]
pub struct Answer {
    pub ask: Ask,
    pub slots: Vec<Slot<QuoteReply>>,
    pub completed_by: CompletedBy,
    pub judgement: Judgement,
    /// Every in-stock quote, cheapest first, with ids (empty unless found).
    pub quotes: Vec<IssuedQuote>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    #[error("{0}")]
    Gather(#[from] GatherError),
    #[error("could not keep the quotes: {0}")]
    Store(#[source] anyhow::Error),
    /// The client holds QUOTE_MAX_OUTSTANDING unexpired quotes.
    #[error("{held} unexpired quotes held, the most one client may hold is {max}")]
    Budget {
        held: u64,
        max: u64,
        retry_after: Duration,
    },
}

#[derive(Clone)]
pub struct Quotes {
    config: QuotesConfig,
    destinations: Vec<Destination>,
    names: Vec<String>,
    sg: ScatterGather,
    pool: Redis,
    keys: Keys,
}

impl Quotes {
    pub fn start(
        config: QuotesConfig,
        broker: &Broker,
        pool: Redis,
        keys: Keys,
        shutdown: CancellationToken,
    ) -> Self {
        let topology = broker.topology();
        let destinations = config
            .suppliers
            .iter()
            .map(|s| Destination::supplier(topology, s))
            .collect();
        let sg = ScatterGather::start(
            broker.clone(),
            Settings {
                metric_prefix: "quote",
                destination_label: "supplier",
                max_pending: config.max_pending,
                blame_timeouts_from: config.default_timeout,
                breaker: config.breaker,
            },
            shutdown,
        );
        Self {
            names: config
                .suppliers
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            config,
            destinations,
            sg,
            pool,
            keys,
        }
    }

    pub fn config(&self) -> &QuotesConfig {
        &self.config
    }

    /// Every supplier's circuit and figures.
    pub fn status(&self) -> Vec<DestinationStatus> {
        self.sg.status(&self.names)
    }

    pub fn pending(&self) -> usize {
        self.sg.pending()
    }

    pub fn late_replies(&self) -> u64 {
        self.sg.late_replies()
    }

    pub fn ready(&self) -> bool {
        self.sg.ready()
    }

    /// Asks every supplier, judges the answers, keeps the quotes handed out.
    pub async fn ask(&self, ask: Ask) -> Result<Answer, QuoteError> {
        // A client at its budget is told before any supplier is asked.
        self.within_budget(&ask.client).await?;
        let started = Instant::now();
        let request = QuoteRequest {
            request_id: uuid::Uuid::now_v7().simple().to_string(),
            sku: ask.sku.clone(),
            qty: ask.qty,
            deadline_ms: now_ms() + ask.timeout.as_millis() as u64,
        };
        let payload = serde_json::to_vec(&request).expect("a quote request serialises");
        let (strategy, k, explicit) = (ask.strategy, ask.min_responses, ask.explicit_min);
        let currency = &self.config.currency;
        let gathered = self
            .sg
            .gather::<QuoteReply, _, _>(
                &payload,
                &self.destinations,
                ask.timeout,
                |supplier, reply| quotes::check_reply(supplier, reply, &request, currency),
                |slots| strategy.completion(k, explicit, slots),
            )
            .await?;
        let slots = gathered.slots;
        let judgement = quotes::judge(strategy, k, &slots, gathered.completed_by);
        metrics::counter!(
            "quote_requests_total",
            "strategy" => strategy.as_str(),
            "completed_by" => gathered.completed_by.as_str()
        )
        .increment(1);
        metrics::histogram!("quote_request_duration_seconds", "strategy" => strategy.as_str())
            .record(started.elapsed().as_secs_f64());
        let quotes = match &judgement {
            Judgement::Found { offers, .. } => self.issue(&ask, offers).await?,
            _ => Vec::new(),
        };
        Ok(Answer {
            ask,
            slots,
            completed_by: gathered.completed_by,
            judgement,
            quotes,
        })
    }

    /// 429 when `client` already holds its budget of unexpired quotes.
    async fn within_budget(&self, client: &ClientId) -> Result<(), QuoteError> {
        let key = self.keys.quotes_out(client);
        let now = now_ms();
        let mut conn = self.pool.connection();
        let (held, oldest): (u64, Vec<(String, u64)>) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(&key)
            .arg(format!("({now}"))
            .arg("+inf")
            .cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| QuoteError::Store(e.into()))?;
        if held < self.config.max_outstanding {
            return Ok(());
        }
        let wait = oldest
            .first()
            .map_or(1000, |(_, until)| until.saturating_sub(now));
        Err(self.over_budget(held, wait))
    }

    fn over_budget(&self, held: u64, wait_ms: u64) -> QuoteError {
        metrics::counter!("quote_budget_refusals_total").increment(1);
        QuoteError::Budget {
            held,
            max: self.config.max_outstanding,
            retry_after: Duration::from_millis(wait_ms.max(1000)),
        }
    }

    /// Gives every offer an id and keeps it in Redis until `valid_until`
    /// (and [`EXPIRED_QUOTE_KEPT`] beyond, to tell "expired" from "unknown"),
    /// as the asking client's, within its budget (`issue_quotes.lua`).
    async fn issue(&self, ask: &Ask, offers: &[Offer]) -> Result<Vec<IssuedQuote>, QuoteError> {
        let valid_until_ms = now_ms() + self.config.validity.as_millis() as u64;
        let keep_until_ms = valid_until_ms + EXPIRED_QUOTE_KEPT.as_millis() as u64;
        let issued: Vec<IssuedQuote> = offers
            .iter()
            .map(|offer| IssuedQuote {
                id: QuoteId::generate(),
                offer: offer.clone(),
                valid_until_ms,
            })
            .collect();
        let mut invocation = ISSUE.prepare_invoke();
        invocation
            .key(self.keys.quotes_out(&ask.client))
            .arg(self.config.max_outstanding)
            .arg(valid_until_ms)
            .arg(keep_until_ms)
            .arg(ask.client.as_str())
            .arg(ask.sku.as_str())
            .arg(ask.qty.get());
        for q in &issued {
            invocation
                .key(self.keys.quote(&q.id))
                .arg(q.id.as_str())
                .arg(q.offer.supplier.as_str())
                .arg(q.offer.unit_price_minor)
                .arg(q.offer.total_minor)
                .arg(q.offer.currency.as_str())
                .arg(q.offer.delivery_days);
        }
        let mut conn = self.pool.connection();
        let reply: Vec<u64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| QuoteError::Store(e.into()))?;
        match reply.as_slice() {
            [1, _] => Ok(issued),
            [0, held, wait] => Err(self.over_budget(*held, *wait)),
            other => Err(QuoteError::Store(anyhow::anyhow!(
                "unexpected issue_quotes.lua reply {other:?}"
            ))),
        }
    }
}
