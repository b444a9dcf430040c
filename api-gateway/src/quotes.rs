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
use pipeline::config::{ConfigError, parse_or, var_or};
use pipeline::domain::{Quantity, Sku};
use pipeline::keys::Keys;
use pipeline::messages::now_ms;
use pipeline::api::DestinationStatus;
use pipeline::domain::{Currency, QuoteId, SupplierId};
use quotes::scatter::{
    BreakerConfig, CompletedBy, Destination, GatherError, ScatterGather, Settings, Slot,
};
use quotes::{EXPIRED_QUOTE_KEPT, Judgement, Offer, QuoteReply, QuoteRequest, Strategy};
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis;
use tokio::time::Instant;

/// `QUOTE_*`: who is asked and how long quotes live.
#[derive(Debug, Clone)]
pub struct QuotesConfig {
    /// `QUOTE_SUPPLIERS` (default `acme,globex,initech`); empty = no quotes.
    pub suppliers: Vec<SupplierId>,
    /// `QUOTE_TIMEOUT_MS` (1000): the deadline when the client names none.
    pub default_timeout: Duration,
    /// `QUOTE_MAX_TIMEOUT_MS` (10000): the longest `timeout_ms` accepted.
    pub max_timeout: Duration,
    /// `QUOTE_VALIDITY_SECS` (300): how long a quote can be ordered against.
    pub validity: Duration,
    /// `QUOTE_CURRENCY` (EUR): the currency prices are compared in; a quote
    /// in another is an error of its supplier, never mixed in.
    pub currency: Currency,
    /// `QUOTE_MAX_PENDING` (10000): quote requests waiting for replies at
    /// once; beyond, 503.
    pub max_pending: usize,
    /// `QUOTE_BREAKER_*`: every supplier's circuit breaker.
    pub breaker: BreakerConfig,
}

impl QuotesConfig {
    /// The defaults with these suppliers (tests, other services' harnesses).
    pub fn with_suppliers(suppliers: Vec<SupplierId>) -> Self {
        Self {
            suppliers,
            default_timeout: Duration::from_millis(1000),
            max_timeout: Duration::from_millis(10_000),
            validity: Duration::from_secs(300),
            currency: Currency::parse("EUR").expect("a valid code"),
            max_pending: 10_000,
            breaker: BreakerConfig::default(),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let raw = var_or(
            "QUOTE_SUPPLIERS",
            &quotes::DEMO_SUPPLIERS.join(","),
        );
        let suppliers = pipeline::domain::parse_suppliers(&raw)
            .map_err(|e| ConfigError::new("QUOTE_SUPPLIERS", &raw, e))?;
        let positive = |name: &str, default: u64| -> Result<u64, ConfigError> {
            let v: u64 = parse_or(name, default)?;
            if v == 0 {
                return Err(ConfigError::new(name, "0", "must be at least 1"));
            }
            Ok(v)
        };
        let at_most = |name: &str, v: u64, max: u64| -> Result<u64, ConfigError> {
            if v > max {
                return Err(ConfigError::new(
                    name,
                    &v.to_string(),
                    format!("must be at most {max}"),
                ));
            }
            Ok(v)
        };
        let default_timeout = Duration::from_millis(positive("QUOTE_TIMEOUT_MS", 1000)?);
        let max_timeout = Duration::from_millis(at_most(
            "QUOTE_MAX_TIMEOUT_MS",
            positive("QUOTE_MAX_TIMEOUT_MS", 10_000)?,
            600_000,
        )?);
        if default_timeout > max_timeout {
            return Err(ConfigError::new(
                "QUOTE_TIMEOUT_MS",
                &default_timeout.as_millis().to_string(),
                "must not exceed QUOTE_MAX_TIMEOUT_MS",
            ));
        }
        let currency_raw = var_or("QUOTE_CURRENCY", "EUR");
        let currency = Currency::parse(&currency_raw)
            .map_err(|e| ConfigError::new("QUOTE_CURRENCY", &currency_raw, e))?;
        let window = positive("QUOTE_BREAKER_WINDOW", 20)? as usize;
        let min_calls = positive("QUOTE_BREAKER_MIN_CALLS", 5)? as usize;
        if min_calls > window {
            return Err(ConfigError::new(
                "QUOTE_BREAKER_MIN_CALLS",
                &min_calls.to_string(),
                format!(
                    "must not exceed QUOTE_BREAKER_WINDOW ({window}): the circuit could never open"
                ),
            ));
        }
        let rate: u8 = parse_or("QUOTE_BREAKER_FAILURE_RATE", 50)?;
        if !(1..=100).contains(&rate) {
            return Err(ConfigError::new(
                "QUOTE_BREAKER_FAILURE_RATE",
                &rate.to_string(),
                "a percentage from 1 to 100",
            ));
        }
        Ok(Self {
            suppliers,
            default_timeout,
            max_timeout,
            validity: Duration::from_secs(at_most(
                "QUOTE_VALIDITY_SECS",
                positive("QUOTE_VALIDITY_SECS", 300)?,
                7 * 86_400,
            )?),
            currency,
            max_pending: positive("QUOTE_MAX_PENDING", 10_000)? as usize,
            breaker: BreakerConfig {
                window,
                min_calls,
                failure_rate_percent: rate,
                open_for: Duration::from_millis(at_most(
                    "QUOTE_BREAKER_OPEN_MS",
                    positive("QUOTE_BREAKER_OPEN_MS", 5_000)?,
                    86_400_000,
                )?),
                half_open_probes: positive("QUOTE_BREAKER_HALF_OPEN_PROBES", 1)? as usize,
            },
        })
    }
}

/// One validated quote request.
#[derive(Debug, Clone)]
pub struct Ask {
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
                |supplier, reply| {
                    quotes::check_reply(supplier, reply, &request, currency)
                },
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
            Judgement::Found { offers, .. } => {
                self.issue(&ask, offers).await.map_err(QuoteError::Store)?
            }
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

    /// Gives every offer an id and keeps it in Redis until `valid_until`
    /// (and [`EXPIRED_QUOTE_KEPT`] beyond, to tell "expired" from "unknown").
    async fn issue(&self, ask: &Ask, offers: &[Offer]) -> anyhow::Result<Vec<IssuedQuote>> {
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
        // Atomic: a hash is never left without its expiry.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for q in &issued {
            let key = self.keys.quote(&q.id);
            pipe.hset_multiple(
                &key,
                &[
                    ("supplier", q.offer.supplier.as_str().to_owned()),
                    ("sku", ask.sku.as_str().to_owned()),
                    ("qty", ask.qty.get().to_string()),
                    ("unit_price_minor", q.offer.unit_price_minor.to_string()),
                    ("total_minor", q.offer.total_minor.to_string()),
                    ("currency", q.offer.currency.as_str().to_owned()),
                    ("delivery_days", q.offer.delivery_days.to_string()),
                    ("valid_until_ms", valid_until_ms.to_string()),
                ],
            )
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(keep_until_ms)
            .ignore();
        }
        let mut conn = self.pool.connection();
        let () = pipe.query_async(&mut conn).await?;
        Ok(issued)
    }
}
