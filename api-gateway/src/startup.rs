//! Wiring: connect the broker and Redis, build the router, serve until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use pipeline::amqp::Broker;
use pipeline::keys::Keys;
use pipeline::service::Base;
use pipeline::shutdown::CancellationToken;
use pipeline::store::Redis;

use crate::config::GatewayConfig;
use crate::idempotency::Store;
use crate::routes;

/// Cheap clonable handles every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub broker: Broker,
    pub pool: Redis,
    pub keys: Keys,
    pub store: Store,
    pub request_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_MS`: the whole `POST /orders` body must arrive within it.
    pub body_timeout: Duration,
    pub max_qty: u32,
    pub history: Option<pipeline::history::HistoryClient>,
    pub quotes: crate::quotes::Quotes,
}

/// A gateway that is connected and bound, ready to serve.
pub struct Application {
    base: Base,
    router: Router,
}

impl Application {
    /// Connects to the broker first (retrying until a node answers or `shutdown`
    /// fires), so the listener only opens once orders can be published.
    pub async fn build(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // The quote queues of the configured suppliers are part of the
        // topology this gateway declares.
        let mut broker = config.service.broker.clone();
        broker.suppliers = config.quotes.suppliers.0.clone();
        let base = Base::start_with("api-gateway", &config.service, broker, shutdown).await?;
        crate::describe_metrics();
        let state = AppState {
            store: Store::new(base.pool.clone(), base.keys.clone(), config.lifetimes),
            broker: base.broker.clone(),
            pool: base.pool.clone(),
            keys: base.keys.clone(),
            request_timeout: config.request_timeout,
            body_timeout: config.service.http.body_timeout,
            max_qty: config.max_qty,
            history: config.history.client(),
            quotes: crate::quotes::Quotes::start(
                config.quotes.clone(),
                &base.broker,
                base.pool.clone(),
                base.keys.clone(),
                base.shutdown.clone(),
            ),
        };
        // Client keys: checked from a cache, never waiting on PostgreSQL
        // per request. `/health` is open; everything else needs a key.
        let keys = clients::Keys::start(&config.keys, base.shutdown.clone())?;
        let access = crate::access::Access {
            limiter: clients::Limiter::new(base.pool.clone(), base.keys.clone(), config.rates),
            keys: keys.clone(),
        };
        let router = Router::new()
            .merge(routes::orders::router(&access))
            .merge(routes::quotes::router(&access))
            .merge(
                base.info_router()
                    .route_layer(axum::middleware::from_fn_with_state(
                        (keys, clients::Scope::Admin),
                        clients::require,
                    )),
            )
            .merge(base.health_router())
            .layer(DefaultBodyLimit::max(routes::orders::MAX_BODY_BYTES))
            .with_state(state);
        Ok(Self { base, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.base.local_addr()
    }

    /// Serves until shutdown, lets in-flight requests finish, then closes the
    /// broker link cleanly.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.base.serve(self.router).await
    }
}
