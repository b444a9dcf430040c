//! Wiring: connect the broker and Redis, build the router, serve until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use deadpool_redis::Pool;
use pipeline::amqp::Broker;
use pipeline::keys::Keys;
use pipeline::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::config::GatewayConfig;
use crate::idempotency::Store;
use crate::routes;

/// Cheap clonable handles every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub broker: Broker,
    pub pool: Pool,
    pub keys: Keys,
    pub store: Store,
    pub request_timeout: Duration,
    pub max_qty: u32,
}

/// A gateway that is connected and bound, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    broker: Broker,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects to the broker first (retrying until a node answers or `shutdown`
    /// fires), so the listener only opens once orders can be published.
    pub async fn build(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // Install the recorder before the first metric is recorded.
        pipeline::telemetry::prometheus();
        let broker = Broker::connect(config.broker.clone(), shutdown.clone())
            .await
            .context("connecting to the broker")?;
        let pool = pipeline::store::create_pool(&config.redis).context("creating the Redis pool")?;
        let keys = Keys::new(config.redis.key_prefix.clone());
        let state = AppState {
            store: Store::new(pool.clone(), keys.clone(), config.lifetimes),
            broker: broker.clone(),
            pool,
            keys,
            request_timeout: config.request_timeout,
            max_qty: config.max_qty,
        };
        let router = router(state);
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding GATEWAY_ADDR {}", config.addr))?;
        tracing::info!(addr = %listener.local_addr()?, "api-gateway listening");
        Ok(Self {
            listener,
            router,
            broker,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until shutdown, lets in-flight requests finish, then closes the
    /// broker link cleanly.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        pipeline::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        self.broker.close().await;
        tracing::info!("api-gateway stopped");
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::orders::router())
        .merge(routes::health::router())
        .route_layer(axum::middleware::from_fn(pipeline::http::track_requests))
        .layer(DefaultBodyLimit::max(routes::orders::MAX_BODY_BYTES))
        .with_state(state)
}
